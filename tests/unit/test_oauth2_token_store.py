"""The OAuth2 token file: mode 0600 from the first byte, atomic replacement, locking, no secret shown."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.oauth2.credentials import Credentials
from pydantic import SecretStr

from mailpipe.errors import ConfigError
from mailpipe.producer import token_store
from mailpipe.producer.token_store import (
    StoredToken,
    TokenMissing,
    delete_token,
    load_token,
    save_token,
    token_lock,
)

SECRETS = ("1//refresh-SECRET-r", "ya29.access-SECRET-a", "client-SECRET-c")


def sample_token(**changes: object) -> StoredToken:
    token = StoredToken(
        provider="google",
        client_id="123.apps.googleusercontent.com",
        token_uri="https://oauth2.googleapis.com/token",
        refresh_token=SecretStr(SECRETS[0]),
        access_token=SecretStr(SECRETS[1]),
        client_secret=SecretStr(SECRETS[2]),
        account="me@example.com",
        expiry=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        scopes=("https://mail.google.com/", "openid"),
        revoke_uri="https://oauth2.googleapis.com/revoke",
    )
    return token.replace(**changes) if changes else token


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_file_is_0600_and_new_parents_0700_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "token.json"
    old = os.umask(0)
    try:
        save_token(path, sample_token())
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    assert mode_of(tmp_path / "a") == 0o700
    assert mode_of(tmp_path / "a" / "b") == 0o700
    assert load_token(path) == sample_token()


def test_existing_parent_directory_is_left_alone(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    save_token(tmp_path / "token.json", sample_token())
    assert mode_of(tmp_path) == 0o755


def test_file_is_created_with_0600_not_chmodded_afterwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file must be born 0600 (os.open with a mode), so there is no window where others can read."""
    created: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_CREAT:
            created.append((os.fspath(path), mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(token_store.os, "open", spy)
    save_token(tmp_path / "token.json", sample_token())
    temp = [(p, m) for p, m in created if p.endswith(".tmp")]
    assert temp and all(m == 0o600 for _, m in temp)


def test_replacement_is_atomic_and_a_failed_write_keeps_the_old_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token.json"
    save_token(path, sample_token())
    first_inode = path.stat().st_ino
    save_token(path, sample_token(account="other@example.com"))
    assert path.stat().st_ino != first_inode  # a new file renamed over the old one, not a rewrite in place
    assert load_token(path).account == "other@example.com"

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(token_store.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save_token(path, sample_token(account="third@example.com"))
    assert load_token(path).account == "other@example.com"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.json"]  # no temp file left behind


def test_json_is_google_authorized_user_format(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    save_token(path, sample_token())
    creds = Credentials.from_authorized_user_file(str(path))
    assert creds.refresh_token == SECRETS[0]
    assert creds.token == SECRETS[1]
    assert creds.client_id == "123.apps.googleusercontent.com"
    assert creds.token_uri == "https://oauth2.googleapis.com/token"
    assert creds.expiry == datetime(2030, 1, 2, 3, 4, 5)  # google-auth keeps naive UTC


def test_google_written_expiry_and_missing_optional_fields_load(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text('{"client_id": "c", "refresh_token": "r", "token_uri": "https://t", '
                    '"expiry": "2030-01-02T03:04:05.123456Z", "scopes": "a b"}')
    token = load_token(path)
    assert token.provider == "google" and token.access_token is None and token.client_secret is None
    assert token.expiry == datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert token.scopes == ("a", "b")


def test_repr_and_str_show_no_secret() -> None:
    token = sample_token()
    for text in (repr(token), str(token)):
        for secret in SECRETS:
            assert secret not in text


def test_missing_file_says_to_run_auth_setup(tmp_path: Path) -> None:
    with pytest.raises(TokenMissing, match=r"no OAuth2 token at .*run `python producer.py --auth-setup` first"):
        load_token(tmp_path / "none.json")


@pytest.mark.parametrize("content", [
    '{"refresh_token": "1//refresh-SECRET-r", "client_id": "c"',  # truncated JSON
    '{"refresh_token": "1//refresh-SECRET-r", "client_id": "c"}',  # token_uri missing
    '["1//refresh-SECRET-r"]',
])
def test_damaged_file_is_one_line_without_its_content(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_token(path)
    message = str(info.value)
    assert "damaged" in message and "--auth-setup" in message and "\n" not in message
    assert "SECRET" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_file_others_can_read_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token.json"
    save_token(path, sample_token())
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        load_token(path)
    assert "chmod 600" in caplog.text and str(path) in caplog.text


def test_lock_is_exclusive_across_open_files(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    with token_lock(path):
        lock_file = tmp_path / ".token.json.lock"
        assert mode_of(lock_file) == 0o600
        fd = os.open(lock_file, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(fd)


def test_delete_removes_file_and_lock(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    save_token(path, sample_token())
    with token_lock(path):
        pass
    assert delete_token(path) is True
    assert list(tmp_path.iterdir()) == []
    assert delete_token(path) is False


def test_seconds_left() -> None:
    now = datetime(2030, 1, 2, 3, 0, 0, tzinfo=UTC)
    assert sample_token().seconds_left(now) == 245.0
    assert sample_token(access_token=None).seconds_left(now) is None
    assert sample_token(expiry=None).seconds_left(now) is None
