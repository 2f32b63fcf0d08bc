"""``--auth-setup``, ``--auth-info`` and ``--auth-revoke``: getting, showing and dropping the OAuth2 grant.

The consent itself (browser or ``--no-browser``) is in ``oauth2_consent``.
"""

from __future__ import annotations

import sys
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mailpipe.errors import ConfigError, MailpipeError
from mailpipe.logs import redact
from mailpipe.producer.oauth2_client import OAuth2Settings, TokenEndpointError, resolve_provider, revoke_token
from mailpipe.producer.oauth2_consent import SETUP_TIMEOUT_S, obtain_token
from mailpipe.producer.token_store import TokenMissing, delete_token, load_token, save_token


def auth_setup(settings: OAuth2Settings, no_browser: bool, *, stdin: TextIO | None = None,
               out: TextIO | None = None, timeout_s: float = SETUP_TIMEOUT_S) -> int:
    """Run the consent flow and store the token; returns the process exit code."""
    out = out or sys.stdout
    try:
        provider = resolve_provider(settings)
        token = obtain_token(settings, provider, no_browser=no_browser, stdin=stdin or sys.stdin, out=out,
                             timeout_s=timeout_s)
        save_token(settings.token_file, token)
    except MailpipeError as exc:
        return _fail(exc)
    except webbrowser.Error:
        return _fail(ConfigError("no web browser is available here: run `python producer.py --auth-setup "
                                 "--no-browser` and open the printed URL on any machine"))
    except Exception as exc:  # the flow's libraries raise many types; none may end in a traceback
        return _fail(MailpipeError(f"authorization failed: {_describe(exc)}"))
    print(f"Authorized {token.account or 'the account'} ({provider.name}); token saved to "
          f"{Path(settings.token_file).resolve()} (mode 0600).", file=out)
    return 0


def auth_info(settings: OAuth2Settings, *, out: TextIO | None = None) -> int:
    """Print account, scopes and expiry of the stored token; never a secret."""
    out = out or sys.stdout
    path = Path(settings.token_file)
    try:
        token = load_token(path)
        mode = path.stat().st_mode & 0o777
    except (MailpipeError, OSError) as exc:
        return _fail(exc)
    now = datetime.now(UTC)
    left = token.seconds_left(now)
    if left is None:
        access = "none stored (a new one is fetched at the next login)"
    elif left > 0:
        access = f"valid until {token.expiry:%Y-%m-%d %H:%M:%S} UTC ({_span(left)} left)"
    else:
        access = f"expired at {token.expiry:%Y-%m-%d %H:%M:%S} UTC (refreshed at the next login)"
    rows = [
        ("provider", token.provider),
        ("account", token.account or "(unknown: set MAILPIPE_USERNAME)"),
        ("client id", token.client_id),
        ("scopes", " ".join(token.scopes) or "(not recorded)"),
        ("access token", access),
        ("refresh token", "present"),
        ("token endpoint", token.token_uri),
        ("token file", f"{path.resolve()} (mode {mode:04o}{'' if mode == 0o600 else ', should be 0600'})"),
    ]
    for label, value in rows:
        print(f"{label + ':':<15} {value}", file=out)
    return 0


def auth_revoke(settings: OAuth2Settings, *, out: TextIO | None = None) -> int:
    """Revoke the grant at the provider, then delete the token file."""
    out = out or sys.stdout
    path = Path(settings.token_file)
    try:
        token = load_token(path)
    except TokenMissing:
        print(f"No OAuth2 token at {path}: nothing to revoke.", file=out)
        return 0
    except MailpipeError as exc:
        return _fail(exc)
    revoke_uri = settings.oauth_revoke_uri or token.revoke_uri
    if revoke_uri:
        try:
            revoked = revoke_token(token, revoke_uri, timeout_s=settings.oauth_http_timeout_s)
        except TokenEndpointError as exc:
            return _fail(MailpipeError(f"{exc}; the token file {path} was kept so you can try again"))
        delete_token(path)
        state = "revoked" if revoked else "was already revoked or expired"
        print(f"Access for {token.account or 'the account'} {state}; deleted {path}.", file=out)
        return 0
    delete_token(path)
    print(f"Deleted {path}. {token.provider} has no endpoint to revoke one token: withdraw the app's access at "
          "https://myapps.microsoft.com (work/school) or https://account.live.com/consent/Manage (personal).",
          file=out)
    return 0


def _describe(exc: BaseException) -> str:
    """One line naming what went wrong; oauthlib errors carry the server's error code and description."""
    code = getattr(exc, "error", None)
    description = getattr(exc, "description", None)
    if isinstance(code, str) and code:
        text = f"{code}: {description}" if description else code
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text.splitlines()[0] if text else type(exc).__name__)[:300]


def _fail(exc: BaseException) -> int:
    print(f"producer: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, ConfigError) and not isinstance(exc, TokenMissing) else 1


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {int(seconds % 60):02d}s"
