"""The OAuth2 consent of ``--auth-setup``: google-auth-oauthlib's installed-app flow on a loopback redirect.

Google turned the copy-the-code "out of band" flow off in 2022 and its device flow does not allow the
Gmail scope, so the consent always ends with the browser sent to ``http://127.0.0.1:PORT/`` (RFC 8252).
With a browser, ``run_local_server`` catches it. For a headless server, ``--no-browser`` prints the URL
and takes the redirect either through an SSH port forward (our own listener catches it) or pasted back
from the browser's address bar.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import logging
import os
import queue
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from google_auth_oauthlib.flow import InstalledAppFlow
from pydantic import SecretStr

from mailpipe.errors import ConfigError
from mailpipe.producer.oauth2_client import OAuth2Settings, Provider
from mailpipe.producer.token_store import StoredToken

# How long --auth-setup waits for the user to finish the consent in the browser.
SETUP_TIMEOUT_S = 600
# These libraries log token responses and the redirect URL (with the authorization code) at DEBUG/INFO.
_CHATTY_LOGGERS = ("requests_oauthlib", "oauthlib", "google_auth_oauthlib", "urllib3")


def obtain_token(settings: OAuth2Settings, provider: Provider, *, no_browser: bool, stdin: TextIO,
                 out: TextIO, timeout_s: float = SETUP_TIMEOUT_S) -> StoredToken:
    """Run the consent and return the token to store. Library errors propagate (the caller maps them)."""
    flow = _flow(settings, provider)
    params = {"access_type": "offline", "prompt": "consent"}  # "consent" makes Google re-issue a refresh token
    if settings.username:
        params["login_hint"] = settings.username
    # Microsoft answers with fewer scopes than asked (no offline_access/openid); oauthlib would raise.
    os.environ.setdefault("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    with _quiet_oauth_libraries():
        if no_browser:
            _run_headless(flow, provider, settings.oauth_redirect_port, params, stdin, out, timeout_s)
        else:
            flow.run_local_server(
                host=provider.redirect_host, bind_addr="127.0.0.1", port=settings.oauth_redirect_port,
                authorization_prompt_message="Opening the browser for consent. If it does not open, "
                "visit:\n\n  {url}\n", success_message="mailpipe is authorized. You can close this tab.",
                open_browser=True, timeout_seconds=timeout_s, **params)
    return _stored_token(flow.oauth2session.token, flow.client_config, provider, settings)


class _InstalledAppFlow(InstalledAppFlow):  # type: ignore[misc]
    """The installed-app flow with client_id always in the body, so clients without a secret work too."""

    def fetch_token(self, **kwargs: Any) -> Any:
        # The default is HTTP Basic auth, with an empty password for a public (secret-less) client.
        kwargs.setdefault("include_client_id", True)
        return super().fetch_token(**kwargs)


def _flow(settings: OAuth2Settings, provider: Provider) -> Any:
    if settings.oauth_client_id:
        client: dict[str, Any] = {"client_id": settings.oauth_client_id}
        if settings.oauth_client_secret is not None:
            client["client_secret"] = settings.oauth_client_secret.get_secret_value()
    else:
        client = _read_client_secrets(Path(settings.client_secrets_file))
    client.setdefault("client_secret", None)
    # Explicit settings win over the file, the file over the provider's defaults.
    client["auth_uri"] = settings.oauth_auth_uri or client.get("auth_uri") or provider.auth_uri
    client["token_uri"] = settings.oauth_token_uri or client.get("token_uri") or provider.token_uri
    for key in ("auth_uri", "token_uri"):
        if not client[key]:
            raise ConfigError(f"no OAuth2 {key} for provider {provider.name!r}: set MAILPIPE_OAUTH_{key.upper()}")
    return _InstalledAppFlow.from_client_config({"installed": client}, scopes=list(provider.scopes))


def _read_client_secrets(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no OAuth2 client file at {path}: download the \"Desktop app\" client JSON from the "
                          "Google Cloud console (docs/OAUTH2_SETUP.md) or set MAILPIPE_CLIENT_SECRETS_FILE") from None
    except (OSError, ValueError) as exc:
        reason = f"invalid JSON at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ConfigError(f"cannot read the OAuth2 client file {path}: {reason}") from None
    section = data.get("installed") or data.get("web") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not section.get("client_id"):
        raise ConfigError(f"{path} is not an OAuth2 client file (expected an \"installed\" section with a "
                          "client_id): create a \"Desktop app\" client")
    return dict(section)


def _run_headless(flow: Any, provider: Provider, port: int, params: dict[str, str], stdin: TextIO,
                  out: TextIO, timeout_s: float) -> None:
    answers: queue.Queue[str] = queue.Queue()
    listener = _RedirectListener(port, answers)
    try:
        flow.redirect_uri = f"http://{provider.redirect_host}:{listener.port}/"
        url, state = flow.authorization_url(**params)
        print("Open this URL in a browser on any machine and approve access:\n\n"
              f"  {url}\n\n"
              f"The browser is then sent to {flow.redirect_uri}. With an SSH tunnel to this host "
              f"(ssh -L {listener.port}:127.0.0.1:{listener.port} HOST) that completes by itself. Without one the "
              "page fails to load, which is expected: copy the full address from the browser's address bar, "
              "paste it here and press Enter.\n", file=out, flush=True)
        listener.start()
        threading.Thread(target=_read_answer, args=(stdin, answers), daemon=True, name="auth-paste").start()
        try:
            answer = answers.get(timeout=timeout_s)
        except queue.Empty:
            raise ConfigError(f"no authorization arrived within {timeout_s:g}s: run --auth-setup again") from None
    finally:
        listener.stop()
    flow.fetch_token(code=_code_from_answer(answer, state))


def _read_answer(stdin: TextIO, answers: queue.Queue[str]) -> None:
    for line in stdin:
        if line.strip():
            answers.put(line.strip())
            return


def _code_from_answer(answer: str, state: str) -> str:
    """The authorization code from a pasted redirect URL (state checked) or a pasted bare code."""
    if "://" not in answer and "code=" not in answer:
        return answer
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer).query)
    if "error" in query:
        raise ConfigError(f"the authorization was refused ({query['error'][0]}): run --auth-setup again")
    if query.get("state", [""])[0] != state:
        raise ConfigError("that address belongs to another authorization attempt (state mismatch): "
                          "paste the address this run produced")
    if not query.get("code"):
        raise ConfigError("the pasted address has no authorization code: copy the whole address bar")
    return query["code"][0]


class _RedirectListener:
    """Loopback HTTP listener catching the redirect (for the SSH-tunnel case of --no-browser)."""

    def __init__(self, port: int, answers: queue.Queue[str]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.urlsplit(self.path).query
                if "code=" not in query and "error=" not in query:
                    self.send_error(404)
                    return
                answers.put(f"http://127.0.0.1{self.path}")
                body = b"mailpipe received the authorization. You can close this tab.\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the default prints the request line, which holds the authorization code

        self._server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name="auth-redirect")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _stored_token(response: dict[str, Any], client: dict[str, Any], provider: Provider,
                  settings: OAuth2Settings) -> StoredToken:
    granted = response.get("scope") or []
    granted = granted.split() if isinstance(granted, str) else list(granted)
    if provider.required_scope and granted and provider.required_scope not in granted:
        raise ConfigError(f"the mail permission ({provider.required_scope}) was not granted: run --auth-setup "
                          "again and tick the mail access box on the consent screen")
    refresh = response.get("refresh_token")
    if not refresh:
        raise ConfigError("the provider issued no refresh token: remove the app's access in the account's "
                          "security settings, then run --auth-setup again")
    expires_at = response.get("expires_at")
    installed = client.get("installed", client)
    return StoredToken(
        provider=provider.name,
        client_id=installed["client_id"],
        client_secret=SecretStr(installed["client_secret"]) if installed.get("client_secret") else None,
        token_uri=installed["token_uri"],
        revoke_uri=settings.oauth_revoke_uri or provider.revoke_uri,
        refresh_token=SecretStr(refresh),
        access_token=SecretStr(response["access_token"]) if response.get("access_token") else None,
        expiry=datetime.fromtimestamp(float(expires_at), UTC) if expires_at else None,
        scopes=tuple(provider.scopes),
        account=settings.username or _account_from_id_token(response.get("id_token")),
    )


def _account_from_id_token(id_token: object) -> str | None:
    """The e-mail claim of the ID token. Not signature-checked: it came straight from the token endpoint
    over TLS, which OpenID Connect Core 3.1.3.7 accepts in place of the signature check."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    for claim in ("email", "preferred_username", "upn"):
        if isinstance(claims, dict) and isinstance(claims.get(claim), str) and "@" in claims[claim]:
            return str(claims[claim])
    return None


@contextlib.contextmanager
def _quiet_oauth_libraries() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
