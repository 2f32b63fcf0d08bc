"""The OAuth2 token file: written atomically with mode 0600, read back, locked across processes.

The JSON layout is Google's "authorized_user" format (``token``, ``refresh_token``, ``token_uri``,
``client_id``, ``client_secret``, ``scopes``, ``expiry``, ``account``), so the file also works with
``google.oauth2.credentials.Credentials.from_authorized_user_file``; mailpipe's own fields live under
``"mailpipe"``. Secrets are held as ``SecretStr`` so no repr, log line or exception shows them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mailpipe.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SETUP_HINT = "run `python producer.py --auth-setup`"


class TokenMissing(ConfigError):
    """No token file yet (or it was revoked and deleted): the user has to run --auth-setup."""


@dataclass(frozen=True)
class StoredToken:
    """What ``--auth-setup`` stores and every refresh updates."""

    provider: str
    client_id: str
    token_uri: str
    refresh_token: SecretStr
    client_secret: SecretStr | None = None
    account: str | None = None
    access_token: SecretStr | None = None
    expiry: datetime | None = None  # UTC, aware
    scopes: tuple[str, ...] = ()
    revoke_uri: str | None = None

    def replace(self, **changes: Any) -> StoredToken:
        return dataclasses.replace(self, **changes)

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until the access token expires (negative once expired); None if unknown."""
        if self.access_token is None or self.expiry is None:
            return None
        return (self.expiry - now).total_seconds()

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "type": "authorized_user",
            "client_id": self.client_id,
            "client_secret": _reveal(self.client_secret),
            "refresh_token": self.refresh_token.get_secret_value(),
            "token": _reveal(self.access_token),
            "expiry": format_time(self.expiry) if self.expiry else None,
            "token_uri": self.token_uri,
            "scopes": list(self.scopes),
            "account": self.account or "",
            "mailpipe": {"version": FORMAT_VERSION, "provider": self.provider, "revoke_uri": self.revoke_uri},
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StoredToken:
        """Parse the file content; errors name the missing field, never a value."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        extra = data.get("mailpipe")
        if not isinstance(extra, dict):
            extra = {}
        for name in ("client_id", "refresh_token", "token_uri"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"field {name!r} is missing")
        expiry = data.get("expiry")
        scopes = data.get("scopes") or []
        if isinstance(scopes, str):
            scopes = scopes.split()
        return cls(
            provider=str(extra.get("provider") or "google"),
            client_id=data["client_id"],
            token_uri=data["token_uri"],
            refresh_token=SecretStr(data["refresh_token"]),
            client_secret=SecretStr(data["client_secret"]) if data.get("client_secret") else None,
            account=data.get("account") or None,
            access_token=SecretStr(data["token"]) if data.get("token") else None,
            expiry=parse_time(expiry) if isinstance(expiry, str) and expiry else None,
            scopes=tuple(str(s) for s in scopes),
            revoke_uri=extra.get("revoke_uri") or None,
        )


def _reveal(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without zone is UTC (google-auth writes naive UTC times with a "Z")."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_token(path: str | Path) -> StoredToken:
    """Read the token file; a missing file raises TokenMissing, a damaged one ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise TokenMissing(f"no OAuth2 token at {path}: {SETUP_HINT} first") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the OAuth2 token file {path}: {exc.strerror}") from None
    if mode & 0o077:
        log.warning("OAuth2 token file %s is accessible by other users (mode %o): chmod 600 it", path, mode)
    try:
        return StoredToken.from_json(text)
    except (ValueError, TypeError) as exc:
        # json errors quote the document; only the position is kept so no secret is echoed.
        reason = f"invalid JSON at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ConfigError(f"the OAuth2 token file {path} is damaged ({reason}): {SETUP_HINT} again") from None


def save_token(path: str | Path, token: StoredToken) -> None:
    """Replace the token file atomically; it is never readable by others, not even for an instant.

    The content goes to a temporary file created with mode 0600 in the same directory, is fsynced,
    then renamed over the old file, so a crash leaves either the old or the new token, never half.
    """
    path = Path(path)
    _make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def delete_token(path: str | Path) -> bool:
    """Remove the token file (and its lock file); False if there was none."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        _lock_path(path).unlink()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def token_lock(path: str | Path) -> Iterator[None]:
    """Exclusive lock shared by every process using this token file (several producers, one account).

    Without it two processes refreshing at once could each write, and with providers that rotate
    refresh tokens (Microsoft) the older write could win.
    """
    path = Path(path)
    _make_private_dir(path.parent)
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _make_private_dir(directory: Path) -> None:
    """Create missing directories with mode 0700; existing directories are left as they are."""
    if directory.is_dir():
        return
    _make_private_dir(directory.parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
