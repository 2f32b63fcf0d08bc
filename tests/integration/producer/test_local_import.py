"""Local mailbox import (mbox, Maildir, .eml) into a real Redis: once, and only once."""

from __future__ import annotations

import mailbox
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import redis

from mailpipe.entry import parse_entry
from mailpipe.errors import ConfigError
from mailpipe.keys import Keys
from mailpipe.producer.identity import email_key
from mailpipe.producer.local_source import import_source
from tests.mail_samples import make_mail, nasty_corpus

ROOT = Path(__file__).resolve().parents[3]


def write_mbox(path: Path, messages: list[bytes]) -> None:
    box = mailbox.mbox(str(path))
    for raw in messages:
        box.add(raw)
    box.flush()
    box.close()


def test_mbox_import_is_idempotent_and_keeps_from_lines(tmp_path: Path, r: redis.Redis, keys: Keys) -> None:
    tricky = make_mail(2, body="line one\nFrom here on, a body line that looks like a separator\n")
    messages = [make_mail(1), tricky, *nasty_corpus().values()]
    write_mbox(tmp_path / "box.mbox", messages)
    first = import_source(r, keys, f"mbox:{tmp_path / 'box.mbox'}", progress=True)
    assert (first.published, first.skipped_already_published, first.failed) == (len(messages), 0, 0)
    again = import_source(r, keys, f"mbox:{tmp_path / 'box.mbox'}")
    assert (again.published, again.skipped_already_published) == (0, len(messages))
    entries = [parse_entry(i, f) for i, f in r.xrange(keys.stream)]  # type: ignore[misc]
    assert len(entries) == len(messages)
    assert "From here on" in (entries[1].email.text or "")  # mboxo quoting undone
    assert entries[1].idempotency_key == email_key("local", tricky)  # same key as the bytes themselves
    assert entries[0].source.kind == "mbox" and entries[0].email.raw_ref is None  # small: raw inline
    assert entries[0].email.raw is not None


def test_maildir_and_eml_imports_share_keys_with_the_same_mail(tmp_path: Path, r: redis.Redis, keys: Keys) -> None:
    md = mailbox.Maildir(str(tmp_path / "Maildir"))
    for i in range(3):
        md.add(make_mail(i))
    (tmp_path / "eml").mkdir()
    for i in range(4):  # the first three are the same mail as in the Maildir
        (tmp_path / "eml" / f"{i}.eml").write_bytes(make_mail(i))
    maildir = import_source(r, keys, f"maildir:{tmp_path / 'Maildir'}")
    eml = import_source(r, keys, f"eml:{tmp_path / 'eml'}")
    assert (maildir.published, eml.published, eml.skipped_already_published) == (3, 1, 3)
    assert r.xlen(keys.stream) == 4


def test_large_message_is_referenced_not_inlined(tmp_path: Path, r: redis.Redis, keys: Keys) -> None:
    (tmp_path / "eml").mkdir()
    (tmp_path / "eml" / "big.eml").write_bytes(make_mail(1, body="x" * 200_000))
    import_source(r, keys, f"eml:{tmp_path / 'eml'}")
    (entry,) = [parse_entry(i, f) for i, f in r.xrange(keys.stream)]  # type: ignore[misc]
    assert entry.email.raw is None and entry.email.raw_ref is not None
    assert entry.email.raw_ref.startswith("file://") and entry.email.raw_ref.endswith("big.eml")


def test_bundled_samples_publish_seven_and_skip_the_duplicate(r: redis.Redis, keys: Keys) -> None:
    samples = resources.files("mailpipe").joinpath("samples")
    result = import_source(r, keys, f"eml:{samples}")
    assert (result.published, result.skipped_already_published, result.failed) == (7, 1, 0)


def test_bad_specs_are_config_errors(tmp_path: Path, r: redis.Redis, keys: Keys) -> None:
    for spec in ("mbox", "zip:/x", f"mbox:{tmp_path}", f"maildir:{tmp_path}", f"eml:{tmp_path / 'none'}"):
        with pytest.raises(ConfigError, match="--source"):
            import_source(r, keys, spec)


def test_cli_import_and_dry_run(tmp_path: Path, redis_url: str, r: redis.Redis, keys: Keys) -> None:
    write_mbox(tmp_path / "box.mbox", [make_mail(i) for i in range(3)])
    base = [sys.executable, str(ROOT / "producer.py"), "--source", f"mbox:{tmp_path / 'box.mbox'}",
            "--redis-url", redis_url, "--stream", keys.stream_name, "--log-level", "WARNING"]
    dry = subprocess.run([*base, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("subject=") == 3 and r.xlen(keys.stream) == 0
    run = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "3 published, 0 already published" in run.stderr
    rerun = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert "0 published, 3 already published" in rerun.stderr and r.xlen(keys.stream) == 3
