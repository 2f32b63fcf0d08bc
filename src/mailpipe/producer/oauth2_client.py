"""Talking to the OAuth2 authorization server: providers, settings, token refresh and revocation.

The refresh grant (RFC 6749 section 6) is a single form POST, done here with the standard library
rather than with google-auth's ``Credentials.refresh``: that one insists on a client secret, which
Microsoft's public (desktop) clients do not have, cannot send the ``scope`` Microsoft expects, and
puts the raw server answer into its exception text. Owning these ~40 lines keeps every provider on
one path, with our own timeout and error mapping, and no token in any message.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, SecretStr

from mailpipe.errors import ConfigError, MailpipeError
from mailpipe.logs import redact
from mailpipe.producer.errors import ImapAuthError, ImapUnavailable
from mailpipe.producer.token_store import SETUP_HINT, StoredToken
from mailpipe.settings import CommonSettings

log = logging.getLogger(__name__)

# Where --auth-setup stores the token (".mailpipe/" is git-ignored and created with mode 0700).
DEFAULT_TOKEN_FILE = ".mailpipe/oauth2_token.json"
# The file the Google Cloud console downloads for a "Desktop app" OAuth client (renamed).
DEFAULT_CLIENT_SECRETS_FILE = "client_secret.json"
# An access token this close to expiry is refreshed before it is used (Google's live one hour).
DEFAULT_REFRESH_MARGIN_S = 300.0
# Token and revoke endpoints answer in well under a second; a hung one must not hang the producer.
DEFAULT_HTTP_TIMEOUT_S = 30.0

GOOGLE_MAIL_SCOPE = "https://mail.google.com/"
MICROSOFT_IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
# OpenID scopes add an ID token naming the account; with Google the full URL of "email" must be used,
# as Google answers with that spelling and oauthlib treats a different spelling as a changed scope.
GOOGLE_SCOPES = (GOOGLE_MAIL_SCOPE, "openid", "https://www.googleapis.com/auth/userinfo.email")
MICROSOFT_SCOPES = (MICROSOFT_IMAP_SCOPE, "offline_access", "openid", "email")


class AuthRevoked(ImapAuthError):
    """The refresh token was revoked or expired (``invalid_grant``): only a new --auth-setup helps.

    An ImapAuthError, so the producer stops with this one line and a non-zero exit, never retrying.
    """


class TokenEndpointError(ImapUnavailable):
    """The token endpoint is unreachable or failing (network, 5xx, 429): retried with the producer's
    reconnect backoff, like an unreachable IMAP server."""


class OAuth2Settings(CommonSettings):
    """OAuth2 settings of the producer (``MAILPIPE_*``); ``ProducerSettings`` inherits them."""

    username: str | None = Field(default=None, description="IMAP login; for XOAUTH2 the mailbox address")
    oauth_provider: Literal["google", "microsoft", "custom"] = "google"
    token_file: str = DEFAULT_TOKEN_FILE
    client_secrets_file: str = DEFAULT_CLIENT_SECRETS_FILE
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_tenant: str = Field(default="common", pattern=r"^[A-Za-z0-9.\-]{1,100}$")
    oauth_auth_uri: str | None = None
    oauth_token_uri: str | None = None
    oauth_revoke_uri: str | None = None
    oauth_scopes: str | None = Field(default=None, description="space-separated; default per provider")
    oauth_redirect_port: int = Field(default=0, ge=0, le=65535)
    oauth_refresh_margin_s: float = Field(default=DEFAULT_REFRESH_MARGIN_S, ge=0)
    oauth_http_timeout_s: float = Field(default=DEFAULT_HTTP_TIMEOUT_S, gt=0)


@dataclass(frozen=True)
class Provider:
    """Endpoints and habits of one authorization server."""

    name: str
    auth_uri: str | None
    token_uri: str | None
    revoke_uri: str | None
    scopes: tuple[str, ...]
    required_scope: str | None  # without it XOAUTH2 cannot work, whatever else was granted
    redirect_host: str  # Microsoft's app portal accepts http://localhost but not http://127.0.0.1
    scope_on_refresh: bool  # Microsoft's v2 endpoint wants the scopes again on every refresh


def resolve_provider(settings: OAuth2Settings) -> Provider:
    """The provider's defaults with every endpoint overridable (tests point them at a local server)."""
    if settings.oauth_provider == "google":
        base = Provider("google", "https://accounts.google.com/o/oauth2/auth", "https://oauth2.googleapis.com/token",
                        "https://oauth2.googleapis.com/revoke", GOOGLE_SCOPES, GOOGLE_MAIL_SCOPE, "127.0.0.1", False)
    elif settings.oauth_provider == "microsoft":
        root = f"https://login.microsoftonline.com/{settings.oauth_tenant}/oauth2/v2.0"
        # Microsoft has no endpoint revoking one refresh token; --auth-revoke explains the alternative.
        base = Provider("microsoft", f"{root}/authorize", f"{root}/token", None, MICROSOFT_SCOPES,
                        MICROSOFT_IMAP_SCOPE, "localhost", True)
    else:
        base = Provider("custom", None, None, None, (), None, "127.0.0.1", False)
    scopes = tuple(settings.oauth_scopes.split()) if settings.oauth_scopes else base.scopes
    return Provider(
        name=base.name,
        auth_uri=settings.oauth_auth_uri or base.auth_uri,
        token_uri=settings.oauth_token_uri or base.token_uri,
        revoke_uri=settings.oauth_revoke_uri or base.revoke_uri,
        scopes=scopes,
        required_scope=base.required_scope,
        redirect_host=base.redirect_host,
        scope_on_refresh=base.scope_on_refresh,
    )


def needs_refresh(token: StoredToken, now: datetime, margin_s: float) -> bool:
    """True when the stored access token must not be used: absent, of unknown age, or near expiry."""
    left = token.seconds_left(now)
    return left is None or left <= margin_s


def refresh_access_token(token: StoredToken, *, now: datetime, timeout_s: float,
                         scopes: tuple[str, ...] | None = None) -> StoredToken:
    """Exchange the refresh token for a new access token; returns the updated token (not yet saved).

    Raises AuthRevoked (invalid_grant), ConfigError (the server rejects the client or the request:
    retrying cannot help) or TokenEndpointError (transient: network, 5xx, 429).
    """
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token.refresh_token.get_secret_value(),
        "client_id": token.client_id,
    }
    if token.client_secret is not None:
        form["client_secret"] = token.client_secret.get_secret_value()
    if scopes:
        form["scope"] = " ".join(scopes)
    status, body = post_form(token.token_uri, form, timeout_s)
    if status != 200:
        raise _refresh_error(token, status, body)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenEndpointError(f"the token endpoint {token.token_uri} answered without an access_token")
    try:
        lifetime = float(body.get("expires_in", 3600))
    except (TypeError, ValueError):
        lifetime = 3600.0
    rotated = body.get("refresh_token")
    return token.replace(
        access_token=SecretStr(access),
        expiry=now + timedelta(seconds=lifetime),
        # Microsoft hands out a new refresh token on every use; keeping the newest keeps the 90 days rolling.
        refresh_token=SecretStr(rotated) if isinstance(rotated, str) and rotated else token.refresh_token,
    )


def revoke_token(token: StoredToken, revoke_uri: str, *, timeout_s: float) -> bool:
    """Revoke the grant at the provider (RFC 7009). False if the server says it was already invalid."""
    status, body = post_form(revoke_uri, {"token": token.refresh_token.get_secret_value()}, timeout_s)
    if status == 200:
        return True
    if status == 400 and body.get("error") in ("invalid_token", "invalid_grant"):
        return False
    raise TokenEndpointError(f"the revoke endpoint {revoke_uri} answered HTTP {status} {_error_code(body)}".rstrip())


def post_form(url: str, form: dict[str, str], timeout_s: float) -> tuple[int, dict[str, Any]]:
    """POST an urlencoded form, return (status, JSON object). Network failures are TokenEndpointError."""
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, _json_object(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _json_object(exc.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TokenEndpointError(f"cannot reach {_safe_url(url)}: {reason}") from None


def _refresh_error(token: StoredToken, status: int, body: dict[str, Any]) -> MailpipeError:
    code = body.get("error")
    account = token.account or "this account"
    description = body.get("error_description")
    if isinstance(description, str) and description:
        # Logged for the operator, redacted and cut to its first line (Microsoft's carry trace ids).
        log.warning("token endpoint refused the refresh: %s: %s", code, redact(description.splitlines()[0][:300]))
    if code == "invalid_grant":
        hint = "; Google expires it after 7 days while the app is in 'Testing'" if token.provider == "google" else ""
        return AuthRevoked(f"OAuth2 access for {account} was revoked or has expired (invalid_grant{hint}): "
                           f"{SETUP_HINT} again")
    if status in (408, 425, 429) or status >= 500:
        return TokenEndpointError(f"the token endpoint {_safe_url(token.token_uri)} answered HTTP {status}"
                                  f"{' ' + code if isinstance(code, str) else ''}: will retry")
    if code in ("invalid_client", "unauthorized_client"):
        return ConfigError(f"the token endpoint rejected the OAuth client {token.client_id} ({code}): check the "
                           f"client ID/secret (MAILPIPE_CLIENT_SECRETS_FILE) and {SETUP_HINT} again")
    return ConfigError(f"the token endpoint {_safe_url(token.token_uri)} refused the refresh "
                       f"(HTTP {status} {_error_code(body)}): check the OAuth2 settings and {SETUP_HINT} again")


def _error_code(body: dict[str, Any]) -> str:
    code = body.get("error")
    return code if isinstance(code, str) and code.replace("_", "").isalnum() else ""


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _safe_url(url: str) -> str:
    """Scheme, host and path only: a query string could carry a token."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable URL>"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) if parts.scheme else "<no URL>"
