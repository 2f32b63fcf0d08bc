"""``python producer.py`` with XOAUTH2, as a user runs it: real Dovecot (oauth2 passdb), real Redis, the
local token server playing Google. A working grant publishes; a revoked one ends the process with one
line and a non-zero exit, no traceback, no retry loop, no token in the output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from mailpipe.keys import Keys
from mailpipe.producer.token_store import StoredToken, load_token, save_token
from tests.dovecot import DovecotServer, running_dovecot
from tests.mail_samples import make_mail
from tests.oauth_server import OAuthTestServer

pytestmark = pytest.mark.imap

ROOT = Path(__file__).resolve().parents[3]
CLIENT_SECRET = "client-SECRET-producer"
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def token_server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer() as srv:
        srv.add_client("test-client", CLIENT_SECRET)
        yield srv


@pytest.fixture(scope="module")
def oauth_dovecot(token_server: OAuthTestServer) -> Iterator[DovecotServer]:
    with running_dovecot(oauth2_introspection_url=token_server.introspection_url) as server:
        yield server


def grant(server: OAuthTestServer, path: Path, account: str, lifetime_s: float) -> str:
    refresh, access, expires_at = server.issue(account, lifetime_s=lifetime_s)
    save_token(path, StoredToken(
        provider="google", client_id="test-client", client_secret=SecretStr(CLIENT_SECRET),
        token_uri=server.token_uri, revoke_uri=server.revoke_uri, refresh_token=SecretStr(refresh),
        access_token=SecretStr(access), expiry=datetime.fromtimestamp(expires_at, UTC), account=account,
        scopes=("https://mail.google.com/",)))
    return refresh


def run_producer(tmp_path: Path, dovecot: DovecotServer, redis_url: str, keys: Keys,
                 account: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPIPE_")}
    env.update({
        "MAILPIPE_REDIS_URL": redis_url, "MAILPIPE_NAMESPACE": keys.namespace, "MAILPIPE_STREAM": keys.stream_name,
        "MAILPIPE_IMAP_HOST": dovecot.host, "MAILPIPE_IMAP_PORT": str(dovecot.port), "MAILPIPE_IMAP_TLS": "none",
        "MAILPIPE_AUTH": "xoauth2", "MAILPIPE_USERNAME": account,
        "MAILPIPE_TOKEN_FILE": str(tmp_path / "token.json"), "MAILPIPE_START": "all",
        "MAILPIPE_LOG_LEVEL": "DEBUG", "MAILPIPE_RECONNECT_MAX_S": "1",
    })
    # cwd is the test's directory, so no developer .env is picked up.
    return subprocess.run([sys.executable, str(ROOT / "producer.py"), "--once"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def secrets_of(server: OAuthTestServer) -> list[str]:
    with server.lock:
        refresh = [t for g in server._grants.values() for t in g.refresh_tokens]
        return [*server.issued_access_tokens, *refresh, CLIENT_SECRET]


def test_producer_publishes_over_xoauth2_and_keeps_the_token_fresh(
        tmp_path: Path, oauth_dovecot: DovecotServer, token_server: OAuthTestServer, redis_url: str,
        r: redis.Redis, keys: Keys) -> None:
    account = oauth_dovecot.add_user(f"oauth-{os.getpid()}-a@example.com")
    oauth_dovecot.append(account, [make_mail(i) for i in range(3)])
    grant(token_server, tmp_path / "token.json", account, lifetime_s=60)  # inside the refresh margin
    refreshes = token_server.refreshes

    done = run_producer(tmp_path, oauth_dovecot, redis_url, keys, account)

    assert done.returncode == 0, done.stderr[-2000:]
    assert r.xlen(keys.stream) == 3
    assert token_server.refreshes > refreshes
    on_disk = load_token(tmp_path / "token.json")
    assert on_disk.access_token is not None
    assert on_disk.access_token.get_secret_value() == token_server.issued_access_tokens[-1]
    assert (tmp_path / "token.json").stat().st_mode & 0o777 == 0o600
    output = done.stdout + done.stderr
    assert "refreshed the OAuth2 access token" in output  # DEBUG logging was on ...
    for secret in secrets_of(token_server):
        assert secret not in output  # ... and still no token or secret


def test_revoked_grant_stops_the_producer_with_one_line(
        tmp_path: Path, oauth_dovecot: DovecotServer, token_server: OAuthTestServer, redis_url: str,
        r: redis.Redis, keys: Keys) -> None:
    account = oauth_dovecot.add_user(f"oauth-{os.getpid()}-b@example.com")
    oauth_dovecot.append(account, make_mail(0))
    refresh = grant(token_server, tmp_path / "token.json", account, lifetime_s=0)
    token_server.revoke(refresh)
    failures = token_server.refresh_failures

    done = run_producer(tmp_path, oauth_dovecot, redis_url, keys, account)

    assert done.returncode == 4  # credentials refused: a supervisor must not restart it
    expected = (f"producer: OAuth2 access for {account} was revoked or has expired (invalid_grant; Google "
                "expires it after 7 days while the app is in 'Testing'): run `python producer.py "
                "--auth-setup` again")
    assert done.stderr.splitlines()[-1] == expected
    assert done.stderr.count(expected) == 1
    assert "Traceback" not in done.stderr
    assert token_server.refresh_failures == failures + 1  # asked once, never in a loop
    assert r.xlen(keys.stream) == 0
    for secret in secrets_of(token_server):
        assert secret not in done.stdout + done.stderr
