"""How a producer logs in to IMAP: an :class:`Authenticator` per account.

``PasswordAuthenticator`` covers plain IMAP, app passwords and Dovecot. ``OAuth2Authenticator``
(``mailpipe.producer.oauth2``, XOAUTH2 for Gmail) implements the same protocol and is imported lazily,
so the password path works without the Google libraries being importable.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from pydantic import SecretStr

from mailpipe.errors import ConfigError
from mailpipe.producer.errors import ImapAuthError, ImapUnavailable

if TYPE_CHECKING:
    from mailpipe.producer.settings import ImapAccount, ProducerSettings


class Authenticator(Protocol):
    """Logs ``client`` in; raises :class:`ImapAuthError` (fatal) when the credentials are refused."""

    def login(self, client: IMAPClient) -> None: ...


class PasswordAuthenticator:
    def __init__(self, username: str, password: SecretStr) -> None:
        self.username = username
        self._password = password

    def __repr__(self) -> str:
        return f"PasswordAuthenticator({self.username!r})"

    def login(self, client: IMAPClient) -> None:
        try:
            client.login(self.username, self._password.get_secret_value())
        except LoginError as exc:
            # The server's text can be anything; keep it short and never echo what we sent.
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "rejected"
            raise ImapAuthError(
                f"IMAP login as {self.username} refused ({reason}): check MAILPIPE_USERNAME and "
                "MAILPIPE_IMAP_PASSWORD (Gmail/Microsoft 365 need an app password or MAILPIPE_AUTH=xoauth2)"
            ) from None


def oauth2_module() -> Any:
    """``mailpipe.producer.oauth2``, imported on first use; ConfigError if this build lacks it."""
    try:
        return importlib.import_module("mailpipe.producer.oauth2")
    except ModuleNotFoundError as exc:
        if exc.name in ("mailpipe.producer.oauth2", "google_auth_oauthlib", "google"):
            raise ConfigError(
                f"OAuth2 support is unavailable ({exc.name} is missing): reinstall mailpipe with its "
                "requirements, or use MAILPIPE_AUTH=password"
            ) from None
        raise


class _OAuth2Adapter:
    """Maps the OAuth2 module's errors onto the producer's: revoked -> fatal, endpoint down -> retry."""

    def __init__(self, module: Any, inner: Authenticator) -> None:
        self._revoked: type[Exception] = module.AuthRevoked
        self._endpoint: type[Exception] = module.TokenEndpointError
        self.inner = inner

    def __repr__(self) -> str:
        return repr(self.inner)

    def login(self, client: IMAPClient) -> None:
        try:
            self.inner.login(client)
        except (ImapAuthError, ImapUnavailable):
            raise
        except Exception as exc:
            if isinstance(exc, self._revoked):
                raise ImapAuthError(str(exc)) from None
            if isinstance(exc, self._endpoint):
                raise ImapUnavailable(str(exc)) from None
            raise


def build_authenticator(settings: ProducerSettings, account: ImapAccount, metrics: Any = None) -> Authenticator:
    if account.auth == "xoauth2":
        module: Any = oauth2_module()
        inner: Authenticator = module.OAuth2Authenticator(settings.for_account(account), metrics=metrics)
        return _OAuth2Adapter(module, inner)
    if account.password is None:  # settings validation already refuses this; keep the type checker honest
        raise ConfigError(f"no password for {account.username}: set MAILPIPE_IMAP_PASSWORD")
    return PasswordAuthenticator(account.username, account.password)
