"""Refresh decisions, the token endpoint's error mapping and the XOAUTH2 authenticator.

The token endpoint is the local test server (tests/oauth_server.py); the IMAP side is a recording stub,
the real Dovecot login is in tests/integration/producer/test_xoauth2.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from imapclient.exceptions import LoginError
from pydantic import SecretStr

from mailpipe.embedded import free_port
from mailpipe.errors import ConfigError
from mailpipe.producer.errors import ImapAuthError, ImapUnavailable
from mailpipe.producer.oauth2 import AuthRevoked, OAuth2Authenticator, OAuth2Settings, TokenEndpointError
from mailpipe.producer.oauth2_client import needs_refresh, refresh_access_token, resolve_provider
from mailpipe.producer.token_store import StoredToken, load_token, save_token
from tests.oauth_server import OAuthTestServer

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
ACCOUNT = "user@example.com"
CLIENT_SECRET = "client-SECRET-value"


class FakeImap:
    """Records XOAUTH2 logins; refuses the tokens in ``refuse`` like a server would."""

    def __init__(self, refuse: set[str] | None = None, message: str = "[AUTHENTICATIONFAILED] Invalid credentials"):
        self.logins: list[tuple[str, str]] = []
        self.refuse = refuse if refuse is not None else set()
        self.message = message

    def oauth2_login(self, user: str, access_token: str) -> None:
        self.logins.append((user, access_token))
        if access_token in self.refuse or "*" in self.refuse:
            raise LoginError(f"authenticate failed: {self.message}")


class RecordingMetrics:
    def __init__(self) -> None:
        self.expiry: list[tuple[str, float]] = []
        self.failures: list[str] = []

    def token_expiry(self, account: str, seconds_left: float) -> None:
        self.expiry.append((account, seconds_left))

    def oauth_refresh_failure(self, account: str) -> None:
        self.failures.append(account)


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        srv.add_client("test-client", CLIENT_SECRET)
        yield srv


def settings_for(tmp_path: Path, **overrides: Any) -> OAuth2Settings:
    return OAuth2Settings(_env_file=None, token_file=str(tmp_path / "token.json"), **overrides)  # type: ignore[call-arg]


def stored(server: OAuthTestServer, *, lifetime_s: float = 3600.0, **changes: Any) -> tuple[StoredToken, str]:
    refresh, access, expires_at = server.issue(ACCOUNT, lifetime_s=lifetime_s)
    token = StoredToken(
        provider="google", client_id="test-client", client_secret=SecretStr(CLIENT_SECRET),
        token_uri=server.token_uri, revoke_uri=server.revoke_uri, refresh_token=SecretStr(refresh),
        access_token=SecretStr(access), expiry=datetime.fromtimestamp(expires_at, UTC), account=ACCOUNT,
        scopes=("https://mail.google.com/",))
    return token.replace(**changes), refresh


def all_secrets(server: OAuthTestServer, *extra: str) -> list[str]:
    with server.lock:
        refresh_tokens = [t for g in server._grants.values() for t in g.refresh_tokens]
        return [*server.issued_access_tokens, *refresh_tokens, CLIENT_SECRET, *extra]


# --- the refresh decision --------------------------------------------------------------------------


@pytest.mark.parametrize(("left_s", "has_token", "expected"), [
    (3600, True, False),
    (301, True, False),
    (300, True, True),  # inside the margin: refreshed before use
    (10, True, True),
    (-5, True, True),  # already expired
    (3600, False, True),  # no access token stored
])
def test_needs_refresh(left_s: float, has_token: bool, expected: bool) -> None:
    token = StoredToken(provider="google", client_id="c", token_uri="https://t", refresh_token=SecretStr("r"),
                        access_token=SecretStr("a") if has_token else None, expiry=NOW + timedelta(seconds=left_s))
    assert needs_refresh(token, NOW, 300) is expected


def test_unknown_expiry_always_refreshes() -> None:
    token = StoredToken(provider="google", client_id="c", token_uri="https://t", refresh_token=SecretStr("r"),
                        access_token=SecretStr("a"), expiry=None)
    assert needs_refresh(token, NOW, 0) is True


# --- providers -------------------------------------------------------------------------------------


def test_provider_defaults_and_overrides(tmp_path: Path) -> None:
    google = resolve_provider(settings_for(tmp_path))
    assert google.token_uri == "https://oauth2.googleapis.com/token"
    assert google.revoke_uri == "https://oauth2.googleapis.com/revoke"
    assert google.scopes[0] == "https://mail.google.com/" and not google.scope_on_refresh

    ms = resolve_provider(settings_for(tmp_path, oauth_provider="microsoft", oauth_tenant="contoso.onmicrosoft.com"))
    assert ms.auth_uri == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    assert ms.token_uri == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert ms.scopes[:2] == ("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access")
    assert ms.revoke_uri is None and ms.redirect_host == "localhost" and ms.scope_on_refresh

    custom = resolve_provider(settings_for(tmp_path, oauth_provider="custom", oauth_token_uri="https://idp/token",
                                           oauth_scopes="imap offline_access"))
    assert custom.token_uri == "https://idp/token" and custom.scopes == ("imap", "offline_access")


# --- the token endpoint ----------------------------------------------------------------------------


def test_refresh_updates_access_token_and_expiry(server: OAuthTestServer) -> None:
    token, refresh = stored(server)
    fresh = refresh_access_token(token, now=NOW, timeout_s=5)
    assert fresh.access_token is not None and fresh.access_token != token.access_token
    assert fresh.access_token.get_secret_value() == server.issued_access_tokens[-1]
    assert fresh.expiry is not None and abs((fresh.expiry - NOW).total_seconds() - 3600) <= 2
    assert fresh.refresh_token.get_secret_value() == refresh
    assert server.token_forms[-1] == {"grant_type": "refresh_token", "refresh_token": refresh,
                                      "client_id": "test-client", "client_secret": CLIENT_SECRET}


def test_public_client_sends_no_secret_and_rotated_refresh_token_is_kept() -> None:
    with OAuthTestServer(rotate_refresh_tokens=True) as srv:
        srv.add_client("public-app", None)
        refresh, _, _ = srv.issue(ACCOUNT, client_id="public-app")
        token = StoredToken(provider="microsoft", client_id="public-app", token_uri=srv.token_uri,
                            refresh_token=SecretStr(refresh), scopes=("imap-scope", "offline_access"))
        fresh = refresh_access_token(token, now=NOW, timeout_s=5, scopes=token.scopes)
        form = srv.token_forms[-1]
        assert "client_secret" not in form and form["scope"] == "imap-scope offline_access"
        assert fresh.refresh_token.get_secret_value() not in ("", refresh)


def test_invalid_grant_is_auth_revoked_with_one_actionable_line(server: OAuthTestServer) -> None:
    token, refresh = stored(server)
    server.revoke(refresh)
    with pytest.raises(AuthRevoked) as info:
        refresh_access_token(token, now=NOW, timeout_s=5)
    message = str(info.value)
    assert message.endswith("run `python producer.py --auth-setup` again")
    assert ACCOUNT in message and "invalid_grant" in message and "\n" not in message
    assert isinstance(info.value, ImapAuthError)  # the producer's "fatal, never retried" family
    assert not any(secret in message for secret in all_secrets(server))


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_trouble_is_transient(server: OAuthTestServer, status: int) -> None:
    token, _ = stored(server)
    server.fail_next(1, status)
    with pytest.raises(TokenEndpointError, match=f"HTTP {status}") as info:
        refresh_access_token(token, now=NOW, timeout_s=5)
    assert isinstance(info.value, ImapUnavailable)  # retried with the producer's reconnect backoff


def test_unreachable_endpoint_is_transient() -> None:
    token = StoredToken(provider="google", client_id="c", token_uri=f"http://127.0.0.1:{free_port()}/token",
                        refresh_token=SecretStr("1//refresh-SECRET"))
    with pytest.raises(TokenEndpointError, match="cannot reach") as info:
        refresh_access_token(token, now=NOW, timeout_s=5)
    assert "SECRET" not in str(info.value)


def test_rejected_client_is_a_config_error(server: OAuthTestServer) -> None:
    token, _ = stored(server, client_secret=SecretStr("wrong-SECRET"))
    with pytest.raises(ConfigError, match=r"rejected the OAuth client test-client \(invalid_client\)") as info:
        refresh_access_token(token, now=NOW, timeout_s=5)
    assert "wrong-SECRET" not in str(info.value)


# --- the authenticator -----------------------------------------------------------------------------


def test_first_login_uses_the_stored_token_when_it_has_time_left(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server)
    save_token(tmp_path / "token.json", token)
    imap, metrics = FakeImap(), RecordingMetrics()
    OAuth2Authenticator(settings_for(tmp_path), metrics=metrics).login(imap)
    assert imap.logins == [(ACCOUNT, token.access_token.get_secret_value())]  # type: ignore[union-attr]
    assert server.refreshes == 0
    assert metrics.expiry and metrics.expiry[-1][0] == ACCOUNT and 3500 < metrics.expiry[-1][1] <= 3600


def test_token_near_expiry_is_refreshed_and_saved_before_login(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server, lifetime_s=60)
    save_token(tmp_path / "token.json", token)
    imap = FakeImap()
    OAuth2Authenticator(settings_for(tmp_path)).login(imap)
    assert server.refreshes == 1
    new_access = server.issued_access_tokens[-1]
    assert imap.logins == [(ACCOUNT, new_access)]
    on_disk = load_token(tmp_path / "token.json")
    assert on_disk.access_token is not None and on_disk.access_token.get_secret_value() == new_access
    assert (tmp_path / "token.json").stat().st_mode & 0o777 == 0o600


def test_every_reconnect_refreshes(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server)
    save_token(tmp_path / "token.json", token)
    auth, imap = OAuth2Authenticator(settings_for(tmp_path)), FakeImap()
    for _ in range(3):
        auth.login(imap)
    assert server.refreshes == 2
    used = [access for _, access in imap.logins]
    assert len(set(used)) == 3 and used[1:] == server.issued_access_tokens[-2:]


def test_revoked_grant_raises_auth_revoked_once_and_counts_a_failure(
        server: OAuthTestServer, tmp_path: Path) -> None:
    token, refresh = stored(server, lifetime_s=0)
    save_token(tmp_path / "token.json", token)
    server.revoke(refresh)
    metrics, imap = RecordingMetrics(), FakeImap()
    with pytest.raises(AuthRevoked, match=r"run `python producer\.py --auth-setup` again$"):
        OAuth2Authenticator(settings_for(tmp_path), metrics=metrics).login(imap)
    assert server.refresh_failures == 1  # asked once, not retried
    assert imap.logins == [] and metrics.failures == [ACCOUNT]
    assert (tmp_path / "token.json").exists()  # kept for --auth-info; --auth-setup replaces it


def test_a_new_auth_setup_is_picked_up_without_restart(server: OAuthTestServer, tmp_path: Path) -> None:
    old, old_refresh = stored(server)
    save_token(tmp_path / "token.json", old)
    auth, imap = OAuth2Authenticator(settings_for(tmp_path)), FakeImap()
    auth.login(imap)
    server.revoke(old_refresh)
    new, _ = stored(server)
    save_token(tmp_path / "token.json", new)  # what --auth-setup does while the producer runs
    auth.login(imap)  # reconnect: refreshes with the refresh token now on disk
    assert server.refresh_failures == 0 and server.refreshes == 1
    assert imap.logins[-1][1] == server.issued_access_tokens[-1]


def test_stored_token_refused_by_the_server_is_refreshed_once(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server)
    save_token(tmp_path / "token.json", token)
    imap = FakeImap(refuse={token.access_token.get_secret_value()})  # type: ignore[union-attr]
    OAuth2Authenticator(settings_for(tmp_path)).login(imap)
    assert server.refreshes == 1 and len(imap.logins) == 2
    assert imap.logins[-1][1] == server.issued_access_tokens[-1]


def test_fresh_token_refused_is_a_fatal_one_liner(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server, lifetime_s=0)
    save_token(tmp_path / "token.json", token)
    imap = FakeImap(refuse={"*"})
    with pytest.raises(ImapAuthError) as info:
        OAuth2Authenticator(settings_for(tmp_path, username="alias@example.com")).login(imap)
    message = str(info.value)
    assert len(imap.logins) == 1 and server.refreshes == 1  # no second attempt with the same fresh token
    assert "AUTHENTICATIONFAILED" in message and f"issued for {ACCOUNT}" in message and "\n" not in message
    assert not any(secret in message for secret in all_secrets(server))


def test_server_unavailable_is_transient(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server, lifetime_s=0)
    save_token(tmp_path / "token.json", token)
    imap = FakeImap(refuse={"*"}, message="[UNAVAILABLE] Temporary authentication failure")
    with pytest.raises(ImapUnavailable):
        OAuth2Authenticator(settings_for(tmp_path)).login(imap)


def test_missing_token_file_says_run_auth_setup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--auth-setup"):
        OAuth2Authenticator(settings_for(tmp_path)).login(FakeImap())


def test_token_uri_setting_overrides_the_stored_one(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server, lifetime_s=0, token_uri="https://oauth2.googleapis.com/token")
    save_token(tmp_path / "token.json", token)
    OAuth2Authenticator(settings_for(tmp_path, oauth_token_uri=server.token_uri)).login(FakeImap())
    assert server.refreshes == 1


def test_seconds_to_expiry_reports_the_metric(server: OAuthTestServer, tmp_path: Path) -> None:
    token, _ = stored(server)
    save_token(tmp_path / "token.json", token)
    metrics = RecordingMetrics()
    left = OAuth2Authenticator(settings_for(tmp_path), metrics=metrics).seconds_to_expiry()
    assert left is not None and 3500 < left <= 3600
    assert metrics.expiry == [(ACCOUNT, left)]


def test_no_secret_in_logs_errors_repr_or_metrics(
        server: OAuthTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token, refresh = stored(server, lifetime_s=0)
    save_token(tmp_path / "token.json", token)
    metrics = RecordingMetrics()
    auth = OAuth2Authenticator(settings_for(tmp_path), metrics=metrics)
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        auth.login(FakeImap())  # refresh + login
        auth.login(FakeImap())  # reconnect: refresh again
        server.fail_next(1, 503)
        with pytest.raises(TokenEndpointError) as transient:
            auth.login(FakeImap())
        errors.append(str(transient.value))
        server.revoke(refresh)
        with pytest.raises(AuthRevoked) as revoked:
            auth.login(FakeImap())
        errors.append(str(revoked.value))
    assert server.refreshes == 2 and metrics.failures == [ACCOUNT, ACCOUNT]
    on_disk = load_token(tmp_path / "token.json")
    haystack = "\n".join([caplog.text, *errors, repr(auth), repr(metrics.expiry), repr(on_disk)])
    secrets = all_secrets(server)
    assert len(secrets) >= 5
    for secret in secrets:
        assert secret not in haystack
