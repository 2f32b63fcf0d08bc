"""XOAUTH2 login for IMAP (Gmail, Microsoft 365, any OAuth2 server), with the access token kept fresh.

``OAuth2Authenticator.login`` implements the producer's ``Authenticator`` protocol. Every login uses
a token with at least ``oauth_refresh_margin_s`` left, and every *re*-login (a reconnect) refreshes
first: a connection dropped after an hour must never come back with the token it started with. A
refresh token the provider no longer honours (``invalid_grant``) raises :class:`AuthRevoked`, one line
asking for ``--auth-setup``, and is never retried.

This module is the public face of OAuth2 support; the pieces live in ``oauth2_client`` (settings and
the authorization server), ``oauth2_consent`` (the browser / headless consent), ``oauth2_setup`` (the
``--auth-*`` commands) and ``token_store`` (the token file).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from imapclient.exceptions import LoginError

from mailpipe.errors import MailpipeError
from mailpipe.logs import redact
from mailpipe.producer.errors import ImapAuthError, ImapUnavailable
from mailpipe.producer.oauth2_client import (
    AuthRevoked,
    OAuth2Settings,
    TokenEndpointError,
    needs_refresh,
    refresh_access_token,
)
from mailpipe.producer.oauth2_setup import auth_info, auth_revoke, auth_setup
from mailpipe.producer.token_store import StoredToken, load_token, save_token, token_lock

if TYPE_CHECKING:
    from imapclient import IMAPClient

__all__ = [
    "AuthRevoked",
    "OAuth2Authenticator",
    "OAuth2Metrics",
    "OAuth2Settings",
    "TokenEndpointError",
    "auth_info",
    "auth_revoke",
    "auth_setup",
]

log = logging.getLogger(__name__)


class OAuth2Metrics(Protocol):
    """The part of ``mailpipe.metrics.ProducerMetrics`` this module reports to."""

    def token_expiry(self, account: str, seconds_left: float) -> None: ...

    def oauth_refresh_failure(self, account: str) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OAuth2Authenticator:
    """Logs an IMAPClient in with XOAUTH2 for one account; safe to share between threads."""

    def __init__(self, settings: OAuth2Settings, *, metrics: OAuth2Metrics | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self._path = Path(settings.token_file)
        self._username = settings.username
        self._token_uri = settings.oauth_token_uri
        self._margin_s = settings.oauth_refresh_margin_s
        self._timeout_s = settings.oauth_http_timeout_s
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._token: StoredToken | None = None
        self._logins = 0

    def __repr__(self) -> str:
        return f"OAuth2Authenticator({self._username or '?'}, token_file={str(self._path)!r})"

    @property
    def account(self) -> str:
        """The XOAUTH2 user: MAILPIPE_USERNAME, else the address the token was issued for."""
        with self._lock:
            return self._user(self._current())

    def login(self, client: IMAPClient) -> None:
        """AUTHENTICATE XOAUTH2 on ``client``; refreshes first when needed and on every reconnect."""
        with self._lock:
            reconnect = self._logins > 0
            self._logins += 1
            access, refreshed = self._access_token(force=reconnect)
            user = self._user(self._current())
        try:
            client.oauth2_login(user, access)
            return
        except LoginError as exc:
            if refreshed or _transient(exc):
                raise self._rejected(user, exc) from None
            # A stored token can be dead before its expiry (revoked session, clock skew): one fresh try.
            log.info("IMAP server refused the stored OAuth2 access token for %s; refreshing once", user)
        with self._lock:
            access, _ = self._access_token(force=True)
        try:
            client.oauth2_login(user, access)
        except LoginError as exc:
            raise self._rejected(user, exc) from None

    def seconds_to_expiry(self) -> float | None:
        """Seconds the current access token has left (negative once expired), also reported as a metric."""
        with self._lock:
            token = self._current()
            left = token.seconds_left(self._clock())
            if left is not None and self._metrics is not None:
                self._metrics.token_expiry(self._user(token), left)
            return left

    # --- internals (called with self._lock held) --------------------------------------------------

    def _current(self) -> StoredToken:
        if self._token is None:
            self._token = self._with_overrides(load_token(self._path))
        return self._token

    def _with_overrides(self, token: StoredToken) -> StoredToken:
        return token.replace(token_uri=self._token_uri) if self._token_uri else token

    def _user(self, token: StoredToken) -> str:
        user = self._username or token.account
        if not user:
            raise ImapAuthError(f"the OAuth2 token in {self._path} names no account: set MAILPIPE_USERNAME "
                                "to the mailbox address")
        return user

    def _access_token(self, *, force: bool) -> tuple[str, bool]:
        """A usable access token and whether it was just refreshed."""
        now = self._clock()
        token = self._current()
        if not force and token.access_token is not None and not needs_refresh(token, now, self._margin_s):
            self._report(token, now)
            return token.access_token.get_secret_value(), False
        with token_lock(self._path):
            # Re-read under the lock: another producer may have refreshed, or the user re-ran --auth-setup.
            token = self._with_overrides(load_token(self._path))
            if not force and token.access_token is not None and not needs_refresh(token, now, self._margin_s):
                self._token = token
                self._report(token, now)
                return token.access_token.get_secret_value(), False
            account = token.account or self._username or "?"
            try:
                token = refresh_access_token(
                    token, now=now, timeout_s=self._timeout_s,
                    scopes=token.scopes if token.provider == "microsoft" else None)
            except MailpipeError:
                if self._metrics is not None:
                    self._metrics.oauth_refresh_failure(account)
                raise
            try:
                save_token(self._path, token)
            except OSError as exc:
                # The new token still works from memory; losing it only costs a refresh after a restart.
                log.warning("could not save the refreshed OAuth2 token to %s: %s", self._path, exc.strerror)
        self._token = token
        left = token.seconds_left(now) or 0.0
        log.info("refreshed the OAuth2 access token for %s (valid for %ds)", account, int(left))
        self._report(token, now)
        assert token.access_token is not None  # refresh_access_token always sets it
        return token.access_token.get_secret_value(), True

    def _report(self, token: StoredToken, now: datetime) -> None:
        left = token.seconds_left(now)
        if self._metrics is not None and left is not None:
            self._metrics.token_expiry(self._username or token.account or "?", left)

    def _rejected(self, user: str, exc: LoginError) -> MailpipeError:
        reason = redact(str(exc).strip().splitlines()[0][:200]) if str(exc).strip() else "rejected"
        if _transient(exc):
            return ImapUnavailable(f"IMAP server temporarily refused the XOAUTH2 login of {user} ({reason})")
        account = self._token.account if self._token else None
        hint = f" (the token was issued for {account})" if account and account.lower() != user.lower() else ""
        return ImapAuthError(
            f"IMAP server refused the XOAUTH2 login of {user} with a fresh access token ({reason}): check "
            f"MAILPIPE_USERNAME{hint} and that IMAP is enabled for the mailbox, or run "
            "`python producer.py --auth-setup` again")


def _transient(exc: LoginError) -> bool:
    """RFC 5530 [UNAVAILABLE]: the server cannot check credentials right now (worth a later retry)."""
    return "[UNAVAILABLE]" in str(exc).upper()
