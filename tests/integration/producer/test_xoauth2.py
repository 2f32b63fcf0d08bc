"""XOAUTH2 against a real Dovecot whose oauth2 passdb validates tokens at the local test token server.

The token server (tests/oauth_server.py) plays Google: it issues access tokens on refresh and answers
Dovecot's introspection requests, so a login only succeeds with a token the server issued and still
considers alive. Each test uses its own account, so the module shares one Dovecot and one token server.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from pydantic import SecretStr

from mailpipe.producer.errors import ImapAuthError
from mailpipe.producer.oauth2 import AuthRevoked, OAuth2Authenticator, OAuth2Settings
from mailpipe.producer.token_store import StoredToken, load_token, save_token
from tests.dovecot import DovecotServer, running_dovecot
from tests.oauth_server import OAuthTestServer

pytestmark = pytest.mark.imap

CLIENT_SECRET = "client-SECRET-xoauth2"
_accounts = itertools.count(1)


@pytest.fixture(scope="module")
def token_server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        srv.add_client("test-client", CLIENT_SECRET)
        yield srv


def _start_dovecot(token_server: OAuthTestServer) -> Iterator[DovecotServer]:
    with running_dovecot(oauth2_introspection_url=token_server.introspection_url) as server:
        yield server


@pytest.fixture(scope="module")
def oauth_dovecot(token_server: OAuthTestServer) -> Iterator[DovecotServer]:
    """Dovecot whose oauth2 passdb asks the test token server about every XOAUTH2 token."""
    yield from _start_dovecot(token_server)


@pytest.fixture
def own_dovecot(token_server: OAuthTestServer) -> Iterator[DovecotServer]:
    """A Dovecot of the test's own: after a failed login Dovecot slows down every later login from the
    same address for a while (its auth penalty), which must not leak into the other tests."""
    yield from _start_dovecot(token_server)


# --- helpers -----------------------------------------------------------------------------------------


def new_account() -> str:
    return f"user{next(_accounts)}-{os.getpid()}@example.com"


def grant(server: OAuthTestServer, token_file: Path, account: str, *, lifetime_s: float = 3600.0,
          **changes: Any) -> str:
    """Store a token as --auth-setup would; returns the refresh token."""
    refresh, access, expires_at = server.issue(account, lifetime_s=lifetime_s)
    save_token(token_file, StoredToken(
        provider="google", client_id="test-client", client_secret=SecretStr(CLIENT_SECRET),
        token_uri=server.token_uri, revoke_uri=server.revoke_uri, refresh_token=SecretStr(refresh),
        access_token=SecretStr(access), expiry=datetime.fromtimestamp(expires_at, UTC), account=account,
        scopes=("https://mail.google.com/",)).replace(**changes))
    return refresh


def settings(tmp_path: Path, **values: Any) -> OAuth2Settings:
    return OAuth2Settings(_env_file=None, token_file=str(tmp_path / "token.json"), **values)  # type: ignore[call-arg]


def connect(dovecot: DovecotServer) -> IMAPClient:
    return IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=15)


def login_and_select(dovecot: DovecotServer, auth: OAuth2Authenticator) -> int:
    client = connect(dovecot)
    try:
        auth.login(client)
        return int(client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"])
    finally:
        client.logout()


def introspected_since(server: OAuthTestServer, mark: int) -> list[tuple[str, bool]]:
    with server.lock:
        return server.introspections[mark:]


def mark_of(server: OAuthTestServer) -> int:
    with server.lock:
        return len(server.introspections)


# --- tests -----------------------------------------------------------------------------------------


def test_xoauth2_login_with_the_stored_token(oauth_dovecot: DovecotServer, token_server: OAuthTestServer,
                                             tmp_path: Path) -> None:
    account = new_account()
    grant(token_server, tmp_path / "token.json", account)
    stored = load_token(tmp_path / "token.json").access_token
    assert stored is not None
    mark, refreshes = mark_of(token_server), token_server.refreshes
    assert login_and_select(oauth_dovecot, OAuth2Authenticator(settings(tmp_path))) > 0
    assert introspected_since(token_server, mark) == [(stored.get_secret_value(), True)]
    assert token_server.refreshes == refreshes


def test_token_near_expiry_is_refreshed_before_login(oauth_dovecot: DovecotServer, token_server: OAuthTestServer,
                                                     tmp_path: Path) -> None:
    account = new_account()
    grant(token_server, tmp_path / "token.json", account, lifetime_s=120)  # inside the 300 s margin
    old = load_token(tmp_path / "token.json").access_token
    mark, refreshes = mark_of(token_server), token_server.refreshes
    login_and_select(oauth_dovecot, OAuth2Authenticator(settings(tmp_path)))
    assert token_server.refreshes == refreshes + 1
    seen = introspected_since(token_server, mark)
    assert seen == [(token_server.issued_access_tokens[-1], True)]
    assert old is not None and old.get_secret_value() not in [t for t, _ in seen]  # never sent to the server


def test_every_reconnect_logs_in_with_a_fresh_token(oauth_dovecot: DovecotServer, token_server: OAuthTestServer,
                                                    tmp_path: Path) -> None:
    grant(token_server, tmp_path / "token.json", new_account())
    auth = OAuth2Authenticator(settings(tmp_path))
    mark = mark_of(token_server)
    for _ in range(3):
        login_and_select(oauth_dovecot, auth)
    seen = introspected_since(token_server, mark)
    assert [ok for _, ok in seen] == [True, True, True]
    assert len({token for token, _ in seen}) == 3  # a new access token for each reconnect


def test_revoked_refresh_token_is_a_clean_auth_revoked(oauth_dovecot: DovecotServer, token_server: OAuthTestServer,
                                                       tmp_path: Path) -> None:
    account = new_account()
    refresh = grant(token_server, tmp_path / "token.json", account)
    auth = OAuth2Authenticator(settings(tmp_path))
    login_and_select(oauth_dovecot, auth)
    token_server.revoke(refresh)
    mark, failures = mark_of(token_server), token_server.refresh_failures
    client = connect(oauth_dovecot)
    try:
        with pytest.raises(AuthRevoked) as info:
            auth.login(client)  # the reconnect
    finally:
        client.shutdown()
    assert str(info.value) == (f"OAuth2 access for {account} was revoked or has expired (invalid_grant; Google "
                               "expires it after 7 days while the app is in 'Testing'): run `python producer.py "
                               "--auth-setup` again")
    assert token_server.refresh_failures == failures + 1  # one attempt, no retry loop
    assert introspected_since(token_server, mark) == []  # no login attempted with a dead grant


def test_no_token_in_debug_logs(oauth_dovecot: DovecotServer, token_server: OAuthTestServer, tmp_path: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    account = new_account()
    refresh = grant(token_server, tmp_path / "token.json", account, lifetime_s=0)
    auth = OAuth2Authenticator(settings(tmp_path))
    with caplog.at_level(logging.DEBUG):
        client = connect(oauth_dovecot)
        client.debug = 5  # imaplib's own protocol trace, routed to the imapclient logger
        try:
            auth.login(client)
            client.select_folder("INBOX")
        finally:
            client.logout()
    access = load_token(tmp_path / "token.json").access_token
    assert access is not None
    tokens = [access.get_secret_value(), refresh, CLIENT_SECRET]
    sasl = base64.b64encode(f"user={account}\1auth=Bearer {tokens[0]}\1\1".encode()).decode()
    assert caplog.text  # the trace really was captured
    for secret in [*tokens, sasl, sasl[:40]]:
        assert secret not in caplog.text


def test_wrong_username_is_refused_with_a_hint(own_dovecot: DovecotServer, token_server: OAuthTestServer,
                                               tmp_path: Path) -> None:
    account = new_account()
    grant(token_server, tmp_path / "token.json", account, lifetime_s=0)  # refreshed first: refused only once
    client = connect(own_dovecot)
    try:
        with pytest.raises(ImapAuthError) as info:
            OAuth2Authenticator(settings(tmp_path, username="someone-else@example.com")).login(client)
    finally:
        client.shutdown()
    assert f"issued for {account}" in str(info.value) and "\n" not in str(info.value)


def test_token_the_server_no_longer_accepts_is_refreshed_once(
        own_dovecot: DovecotServer, token_server: OAuthTestServer, tmp_path: Path) -> None:
    account = new_account()
    grant(token_server, tmp_path / "token.json", account)
    token_server.expire_access_tokens()  # dead early, although the file says an hour is left
    mark = mark_of(token_server)
    login_and_select(own_dovecot, OAuth2Authenticator(settings(tmp_path)))
    assert [ok for _, ok in introspected_since(token_server, mark)] == [False, True]
