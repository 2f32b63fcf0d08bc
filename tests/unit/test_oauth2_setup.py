"""--auth-setup (browser, headless paste, headless SSH tunnel), --auth-info and --auth-revoke.

The authorization server is the local test server; "the browser" is urllib following its redirect.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailpipe.embedded import free_port
from mailpipe.producer.oauth2 import OAuth2Authenticator, OAuth2Settings, auth_info, auth_revoke, auth_setup
from mailpipe.producer.token_store import load_token
from tests.oauth_server import OAuthTestServer
from tests.util import wait_until

CLIENT_SECRET = "client-SECRET-value"
JOIN_S = 30


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OAuthTestServer]:
    # oauthlib refuses http:// token endpoints unless told this is a test; auth_setup sets the scope flag.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    with OAuthTestServer() as srv:
        srv.add_client("test-client", CLIENT_SECRET)
        yield srv


def google_settings(tmp_path: Path, server: OAuthTestServer, **overrides: Any) -> OAuth2Settings:
    secrets_file = tmp_path / "client_secret.json"
    secrets_file.write_text(json.dumps({"installed": {
        "client_id": "test-client", "client_secret": CLIENT_SECRET, "auth_uri": server.auth_uri,
        "token_uri": server.token_uri, "redirect_uris": ["http://localhost"]}}))
    values: dict[str, Any] = {"token_file": str(tmp_path / "state" / "token.json"),
                              "client_secrets_file": str(secrets_file), "oauth_revoke_uri": server.revoke_uri}
    values.update(overrides)
    return OAuth2Settings(_env_file=None, **values)  # type: ignore[call-arg]


def redirect_of(auth_url: str) -> str:
    """What the browser is sent to after consent (the 302 Location), without following it."""
    class Stop(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        urllib.request.build_opener(Stop).open(auth_url, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 302
        return str(exc.headers["Location"])
    raise AssertionError("the authorization endpoint did not redirect")


class Setup:
    """auth_setup --no-browser in a thread, with a pipe as its stdin."""

    def __init__(self, settings: OAuth2Settings) -> None:
        self.out = io.StringIO()
        read_fd, write_fd = os.pipe()
        self.stdin = os.fdopen(read_fd, "r")
        self.paste_end = os.fdopen(write_fd, "w")
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(
            auth_setup(settings, True, stdin=self.stdin, out=self.out, timeout_s=JOIN_S)), daemon=True)
        self.thread.start()

    def auth_url(self) -> str:
        match = wait_until(lambda: re.search(r"(http://127\.0\.0\.1:\d+/auth\?\S+)", self.out.getvalue()),
                           timeout=JOIN_S, what="the authorization URL to be printed")
        return match.group(1)

    def paste(self, text: str) -> None:
        self.paste_end.write(text + "\n")
        self.paste_end.flush()

    def finish(self) -> int:
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive(), "auth_setup did not return"
        self.paste_end.close()
        self.stdin.close()
        return self.result[0]


def secrets_of(server: OAuthTestServer) -> list[str]:
    with server.lock:
        refresh = [t for g in server._grants.values() for t in g.refresh_tokens]
        return [*server.issued_access_tokens, *refresh, CLIENT_SECRET]


def test_headless_paste_then_info_then_revoke(
        tmp_path: Path, server: OAuthTestServer, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    settings = google_settings(tmp_path, server)
    with caplog.at_level(logging.DEBUG):
        setup = Setup(settings)
        url = setup.auth_url()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
        assert query["scope"] == ["https://mail.google.com/ openid https://www.googleapis.com/auth/userinfo.email"]
        assert query["code_challenge_method"] == ["S256"]
        redirect = redirect_of(url)
        assert redirect.startswith(query["redirect_uri"][0])  # http://127.0.0.1:PORT/
        setup.paste(redirect)
        assert setup.finish() == 0

    token_file = Path(settings.token_file)
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.parent.stat().st_mode & 0o777 == 0o700
    token = load_token(token_file)
    assert token.account == "user@example.com" and token.provider == "google"
    assert token.refresh_token.get_secret_value() in secrets_of(server)
    assert server.code_exchanges == 1

    info, revoked, again = io.StringIO(), io.StringIO(), io.StringIO()
    assert auth_info(settings, out=info) == 0
    text = info.getvalue()
    assert "user@example.com" in text and "https://mail.google.com/" in text
    assert re.search(r"refresh token:\s+present", text) and "valid until" in text and "mode 0600" in text

    assert auth_revoke(settings, out=revoked) == 0
    assert server.revocations == [token.refresh_token.get_secret_value()]
    assert "revoked" in revoked.getvalue() and not token_file.exists()
    assert auth_info(settings, out=io.StringIO()) == 1
    assert auth_revoke(settings, out=again) == 0 and "nothing to revoke" in again.getvalue()

    shown = "\n".join([setup.out.getvalue(), text, revoked.getvalue(), capsys.readouterr().err, caplog.text])
    for secret in secrets_of(server):
        assert secret not in shown
    assert "code-" not in caplog.text  # the authorization code is not logged either


def test_headless_through_an_ssh_tunnel_completes_by_itself(tmp_path: Path, server: OAuthTestServer) -> None:
    settings = google_settings(tmp_path, server)
    setup = Setup(settings)
    with urllib.request.urlopen(setup.auth_url(), timeout=10) as page:  # follows the redirect to the listener
        assert b"You can close this tab" in page.read()
    assert setup.finish() == 0
    assert load_token(settings.token_file).account == "user@example.com"


def test_browser_flow_uses_run_local_server(
        tmp_path: Path, server: OAuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    class Browser:
        def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
            opened.append(url)
            threading.Thread(target=lambda: urllib.request.urlopen(url, timeout=10).read(), daemon=True).start()
            return True

    monkeypatch.setattr("webbrowser.get", lambda using=None: Browser())
    settings = google_settings(tmp_path, server, username="user@example.com")
    assert auth_setup(settings, False, out=io.StringIO(), timeout_s=JOIN_S) == 0
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(opened[0]).query)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", query["redirect_uri"][0])
    assert query["login_hint"] == ["user@example.com"] and query["prompt"] == ["consent"]
    assert load_token(settings.token_file).refresh_token.get_secret_value() in secrets_of(server)


def test_refused_consent_is_one_line_and_no_file(
        tmp_path: Path, server: OAuthTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.deny_consent = True
    settings = google_settings(tmp_path, server)
    setup = Setup(settings)
    setup.paste(redirect_of(setup.auth_url()))
    assert setup.finish() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "access_denied" in err and "Traceback" not in err
    assert not Path(settings.token_file).exists()


def test_an_address_from_another_attempt_is_refused(
        tmp_path: Path, server: OAuthTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    setup = Setup(google_settings(tmp_path, server))
    redirect = redirect_of(setup.auth_url())
    setup.paste(re.sub(r"state=[^&]+", "state=forged", redirect))
    assert setup.finish() == 2
    assert "state mismatch" in capsys.readouterr().err


def test_mail_scope_not_granted_is_explained(
        tmp_path: Path, server: OAuthTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.grant_scopes = "openid https://www.googleapis.com/auth/userinfo.email"  # Gmail box left unticked
    settings = google_settings(tmp_path, server)
    setup = Setup(settings)
    setup.paste(redirect_of(setup.auth_url()))
    assert setup.finish() == 2
    assert "mail permission (https://mail.google.com/) was not granted" in capsys.readouterr().err
    assert not Path(settings.token_file).exists()


def test_missing_client_file_points_to_the_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = OAuth2Settings(_env_file=None, client_secrets_file=str(tmp_path / "nope.json"),  # type: ignore[call-arg]
                              token_file=str(tmp_path / "t.json"))
    assert auth_setup(settings, True, stdin=io.StringIO(), out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "no OAuth2 client file" in err and "Desktop app" in err and err.count("\n") == 1


def test_microsoft_public_client_round_trip(tmp_path: Path, server: OAuthTestServer) -> None:
    server.add_client("public-app", None)
    settings = OAuth2Settings(  # type: ignore[call-arg]
        _env_file=None, oauth_provider="microsoft", oauth_client_id="public-app",
        oauth_auth_uri=server.auth_uri, oauth_token_uri=server.token_uri, token_file=str(tmp_path / "ms.json"))
    setup = Setup(settings)
    url = setup.auth_url()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert re.fullmatch(r"http://localhost:\d+/", query["redirect_uri"][0])  # what Entra ID lets you register
    assert query["scope"][0].split()[:2] == ["https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"]
    setup.paste(redirect_of(url))
    assert setup.finish() == 0
    exchange = server.token_forms[-1]
    assert exchange["grant_type"] == "authorization_code" and exchange["client_id"] == "public-app"
    assert "client_secret" not in exchange
    token = load_token(settings.token_file)
    assert token.provider == "microsoft" and token.client_secret is None and token.revoke_uri is None

    class Imap:
        def oauth2_login(self, user: str, access: str) -> None:
            assert user == "user@example.com"

    auth = OAuth2Authenticator(settings)
    auth.login(Imap())
    auth.login(Imap())  # reconnect: refresh with the scopes, no secret
    refresh = server.token_forms[-1]
    assert refresh["grant_type"] == "refresh_token" and "client_secret" not in refresh
    assert refresh["scope"].startswith("https://outlook.office.com/IMAP.AccessAsUser.All offline_access")

    out = io.StringIO()
    assert auth_revoke(settings, out=out) == 0
    assert "myapps.microsoft.com" in out.getvalue() and not Path(settings.token_file).exists()
    assert server.revocations == []


def test_revoke_failure_keeps_the_file(tmp_path: Path, server: OAuthTestServer,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    settings = google_settings(tmp_path, server)
    setup = Setup(settings)
    setup.paste(redirect_of(setup.auth_url()))
    assert setup.finish() == 0
    down = google_settings(tmp_path, server, oauth_revoke_uri=f"http://127.0.0.1:{free_port()}/revoke")
    assert auth_revoke(down, out=io.StringIO()) == 1
    assert "was kept so you can try again" in capsys.readouterr().err
    assert Path(settings.token_file).exists()


def test_no_browser_available_suggests_no_browser(
        tmp_path: Path, server: OAuthTestServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import webbrowser

    def none_here(using: str | None = None) -> Any:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr("webbrowser.get", none_here)
    assert auth_setup(google_settings(tmp_path, server), False, out=io.StringIO(), timeout_s=JOIN_S) == 2
    err = capsys.readouterr().err
    assert err.startswith("producer: no web browser") and "--no-browser" in err and err.count("\n") == 1
