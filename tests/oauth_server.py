"""A local OAuth2 authorization server for tests: plays Google's endpoints and Dovecot's introspection.

One threaded HTTP server on 127.0.0.1 and a free port:

- ``GET  /auth``        authorization endpoint: approves at once, redirecting to ``redirect_uri`` with a
                         code (or with ``error=access_denied`` when ``deny_consent`` is set);
- ``POST /token``       ``authorization_code`` (PKCE S256 checked) and ``refresh_token`` grants; access
                         tokens live ``access_lifetime_s``; a revoked refresh token gets Google's
                         ``400 {"error": "invalid_grant"}``; ``fail_next()`` injects 5xx answers;
- ``POST /revoke``      RFC 7009 revocation (Google's semantics: revoking a token ends the whole grant);
- ``GET  /introspect``  Dovecot's oauth2 passdb (``introspection_mode = get``): ``{"active": "true",
                         "email": USER}`` for a live access token, 401 otherwise.

Counters and recorded requests let tests assert what happened; nothing is ever slept on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOOGLE_SCOPES = "https://mail.google.com/ openid https://www.googleapis.com/auth/userinfo.email"


@dataclass
class Grant:
    account: str
    client_id: str
    scopes: str
    revoked: bool = False
    refresh_tokens: set[str] = field(default_factory=set)


@dataclass
class PendingCode:
    grant_account: str
    client_id: str
    redirect_uri: str
    challenge: str
    scopes: str


class OAuthTestServer:
    def __init__(self, *, access_lifetime_s: float = 3600.0, rotate_refresh_tokens: bool = False) -> None:
        self.access_lifetime_s = access_lifetime_s
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.clients: dict[str, str | None] = {}
        self.consent_account = "user@example.com"
        self.deny_consent = False
        self.grant_scopes: str | None = None  # what the consent grants; None = what was asked
        self.lock = threading.Lock()
        self._grants: dict[str, Grant] = {}  # refresh token -> grant
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (account, expires at)
        self._codes: dict[str, PendingCode] = {}
        self._failures: list[int] = []
        # What tests assert on.
        self.refreshes = 0
        self.refresh_failures = 0
        self.code_exchanges = 0
        self.revocations: list[str] = []
        self.introspections: list[tuple[str, bool]] = []  # (access token, accepted)
        self.token_forms: list[dict[str, str]] = []
        self.issued_access_tokens: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        # A short poll interval keeps shutdown() (each test's teardown) quick.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True,
                                        name="oauth-test-server")

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def auth_uri(self) -> str:
        return f"{self.url}/auth"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def revoke_uri(self) -> str:
        return f"{self.url}/revoke"

    @property
    def introspection_url(self) -> str:
        """Dovecot appends the token to this URL."""
        return f"{self.url}/introspect?access_token="

    def start(self) -> OAuthTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OAuthTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls -------------------------------------------------------------------------

    def add_client(self, client_id: str = "test-client", secret: str | None = "test-secret") -> None:
        self.clients[client_id] = secret

    def issue(self, account: str, *, client_id: str = "test-client", scopes: str = GOOGLE_SCOPES,
              lifetime_s: float | None = None) -> tuple[str, str, float]:
        """A grant as if consent had happened: (refresh token, access token, access expiry epoch)."""
        with self.lock:
            refresh = self._new_refresh(Grant(account, client_id, scopes))
            access, expires_at = self._new_access(account, lifetime_s)
            return refresh, access, expires_at

    def revoke(self, refresh_token: str) -> None:
        with self.lock:
            self._grants[refresh_token].revoked = True
            self._drop_access_of(self._grants[refresh_token].account)

    def expire_access_tokens(self) -> None:
        with self.lock:
            self._access = {t: (a, 0.0) for t, (a, _) in self._access.items()}

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        with self.lock:
            self._failures.extend([status] * n)

    def accepted_introspections(self) -> list[str]:
        with self.lock:
            return [token for token, ok in self.introspections if ok]

    def grant_is_revoked(self, refresh_token: str) -> bool:
        with self.lock:
            return self._grants[refresh_token].revoked

    # --- token bookkeeping (lock held) ---------------------------------------------------------

    def _new_refresh(self, grant: Grant) -> str:
        token = "1//rt-" + secrets.token_urlsafe(24)
        grant.refresh_tokens.add(token)
        self._grants[token] = grant
        return token

    def _new_access(self, account: str, lifetime_s: float | None = None) -> tuple[str, float]:
        token = "ya29.at-" + secrets.token_urlsafe(24)
        expires_at = time.time() + (self.access_lifetime_s if lifetime_s is None else lifetime_s)
        self._access[token] = (account, expires_at)
        self.issued_access_tokens.append(token)
        return token, expires_at

    def _drop_access_of(self, account: str) -> None:
        self._access = {t: v for t, v in self._access.items() if v[0] != account}

    def _access_response(self, grant: Grant, refresh: str | None, with_id_token: bool) -> dict[str, Any]:
        access, expires_at = self._new_access(grant.account)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": int(expires_at - time.time()), "scope": grant.scopes}
        if refresh:
            body["refresh_token"] = refresh
        if with_id_token:
            body["id_token"] = _unsigned_jwt({"email": grant.account, "email_verified": True})
        return body

    # --- HTTP ----------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
                if path == "/introspect":
                    self._send(*server._introspect(params.get("access_token", "")))
                elif path == "/auth":
                    self._send(302, None, {"Location": server._authorize(params)})
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    form.setdefault("client_id", urllib.parse.unquote(user))
                    form.setdefault("client_secret", urllib.parse.unquote(password))
                if self.path == "/token":
                    self._send(*server._token(form))
                elif self.path == "/revoke":
                    self._send(*server._revoke(form))
                else:
                    self._send(404, {"error": "not_found"})

        return Handler

    def _introspect(self, token: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            account, expires_at = self._access.get(token, ("", 0.0))
            ok = bool(account) and expires_at > time.time()
            self.introspections.append((token, ok))
        if ok:
            return 200, {"active": "true", "email": account}
        return 401, {"active": "false", "error": "invalid_token"}

    def _authorize(self, params: dict[str, str]) -> str:
        redirect = params.get("redirect_uri", "")
        answer: dict[str, str] = {"state": params.get("state", "")}
        with self.lock:
            if self.deny_consent:
                answer["error"] = "access_denied"
            else:
                code = "4/code-" + secrets.token_urlsafe(16)
                self._codes[code] = PendingCode(self.consent_account, params.get("client_id", ""), redirect,
                                                params.get("code_challenge", ""),
                                                self.grant_scopes or params.get("scope", ""))
                answer["code"] = code
        return f"{redirect}?{urllib.parse.urlencode(answer)}"

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.token_forms.append(dict(form))
            if self._failures:
                return self._failures.pop(0), {"error": "internal_failure"}
            client = form.get("client_id", "")
            if client not in self.clients or self.clients[client] not in (None, form.get("client_secret")):
                return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                return self._refresh_grant(form)
            if grant_type == "authorization_code":
                return self._code_grant(form)
            return 400, {"error": "unsupported_grant_type"}

    def _refresh_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = self._grants.get(form.get("refresh_token", ""))
        if grant is None or grant.revoked or grant.client_id != form["client_id"]:
            self.refresh_failures += 1
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        self.refreshes += 1
        rotated = self._new_refresh(grant) if self.rotate_refresh_tokens else None
        return 200, self._access_response(grant, rotated, with_id_token=False)

    def _code_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        pending = self._codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if (pending is None or pending.client_id != form["client_id"]
                or pending.redirect_uri != form.get("redirect_uri") or pending.challenge != challenge):
            return 400, {"error": "invalid_grant", "error_description": "Bad code, redirect_uri or verifier."}
        self.code_exchanges += 1
        grant = Grant(pending.grant_account, pending.client_id, pending.scopes)
        return 200, self._access_response(grant, self._new_refresh(grant), with_id_token=True)

    def _revoke(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = form.get("token", "")
        with self.lock:
            self.revocations.append(token)
            grant = self._grants.get(token)
            if grant is None or grant.revoked:
                return 400, {"error": "invalid_token"}
            grant.revoked = True
            self._drop_access_of(grant.account)
        return 200, {}


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"
