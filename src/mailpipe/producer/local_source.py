"""Local mailbox import: ``mbox:PATH``, ``maildir:PATH`` or ``eml:DIR`` onto the stream.

Messages are streamed one at a time (an mbox of many GB is never loaded whole), keyed like IMAP mail
(``identity.email_key``), and published in batches through ``publish.lua``: the producer's published set
makes a re-run publish nothing twice (within ``published_retention_s``), and the same email imported
from a Takeout mbox and fetched over IMAP for the same account gets the same key. Source files are
never modified (a Maildir's ``new/`` mail is not moved to ``cur/``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mailpipe import defaults
from mailpipe.entry import SizePolicy, Source, build_entry
from mailpipe.errors import ConfigError
from mailpipe.keys import Keys
from mailpipe.producer.backpressure import Backpressure
from mailpipe.producer.identity import email_key
from mailpipe.producer.mailbox_sync import summary
from mailpipe.producer.mime import parse_email
from mailpipe.producer.publish import DUPLICATE, PUBLISHED, Publication, Publisher

log = logging.getLogger(__name__)

BATCH_MESSAGES = 100
BATCH_BYTES = 16 * 1024 * 1024
# An mbox "From " line: sender, then a date with a time of day (asctime or the Takeout variant).
_FROM_LINE = re.compile(rb"^From \S+.*\d{1,2}:\d{2}")
_QUOTED_FROM = re.compile(rb"^>+From ")


@dataclass
class ImportResult:
    published: int = 0
    skipped_already_published: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.published + self.skipped_already_published + self.failed


@dataclass(frozen=True)
class RawMessage:
    raw: bytes
    ref: str  # where the original lives (file URL, with the byte offset for mbox)


def parse_spec(spec: str) -> tuple[str, Path]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ("mbox", "maildir", "eml") or not path:
        raise ConfigError(f"invalid --source {spec!r}: use mbox:PATH, maildir:PATH or eml:DIR")
    target = Path(path).expanduser()
    if kind == "mbox" and not target.is_file():
        raise ConfigError(f"--source {spec}: {target} is not a file")
    if kind != "mbox" and not target.is_dir():
        raise ConfigError(f"--source {spec}: {target} is not a directory")
    if kind == "maildir" and not any((target / sub).is_dir() for sub in ("cur", "new")):
        raise ConfigError(f"--source {spec}: {target} has no cur/ or new/ (is it a Maildir?)")
    return kind, target


def _file_url(path: Path) -> str:
    return "file://" + quote(str(path.resolve()))


def read_mbox(path: Path, on_bytes: Callable[[int], None] = lambda n: None) -> Iterator[RawMessage]:
    """Messages of an mbox, one at a time. A ``From `` line starts a message at the file start or
    after a blank line; ``>From `` quoting (mboxrd, Google Takeout) is undone."""
    url = _file_url(path)
    with path.open("rb") as fh:
        lines: list[bytes] = []
        start = offset = 0
        previous_blank = True
        for line in fh:
            on_bytes(len(line))
            if line.startswith(b"From ") and previous_blank and (_FROM_LINE.match(line) or offset == 0):
                if lines:
                    yield RawMessage(_mbox_body(lines), f"{url}#byte={start}")
                lines, start = [], offset
            else:
                lines.append(line[1:] if _QUOTED_FROM.match(line) else line)
            previous_blank = line in (b"\n", b"\r\n")
            offset += len(line)
        if lines:
            yield RawMessage(_mbox_body(lines), f"{url}#byte={start}")


def _mbox_body(lines: list[bytes]) -> bytes:
    if lines and lines[-1] in (b"\n", b"\r\n"):  # the blank line that separates messages
        lines = lines[:-1]
    return b"".join(lines)


def maildir_files(path: Path) -> list[Path]:
    files = [f for sub in ("cur", "new") if (path / sub).is_dir() for f in (path / sub).iterdir() if f.is_file()]
    return sorted(files, key=lambda f: f.name)


def eml_files(path: Path) -> list[Path]:
    return sorted((f for f in path.rglob("*.eml") if f.is_file()), key=lambda f: str(f.relative_to(path)))


def import_source(
    client: redis.Redis, keys: Keys, spec: str, *, policy: SizePolicy | None = None, progress: bool = False,
    account: str = "local", dry_run: Callable[[str], None] | None = None,
    backpressure: Backpressure | None = None, stop: threading.Event | None = None,
    retention_s: int = defaults.DEFAULT_PUBLISHED_RETENTION_S, bucket_s: int = defaults.DEFAULT_PUBLISHED_BUCKET_S,
) -> ImportResult:
    """Publish every message of ``spec`` (``mbox:PATH``, ``maildir:PATH``, ``eml:DIR``) once.

    ``dry_run``: print a summary line per message through it and publish nothing.
    """
    kind, path = parse_spec(spec)
    policy = policy or SizePolicy()
    publisher = Publisher(client, keys, retention_s=retention_s, bucket_s=bucket_s)
    stop = stop or threading.Event()
    result = ImportResult()
    batch: list[Publication] = []
    batch_bytes = 0
    mailbox = str(path)

    def flush() -> None:
        nonlocal batch, batch_bytes
        if backpressure is not None:
            backpressure.wait(stop)
        outcome = publisher.publish(batch)
        result.published += outcome.count(PUBLISHED)
        result.skipped_already_published += outcome.count(DUPLICATE)
        batch, batch_bytes = [], 0

    with _progress(progress, by_bytes=kind == "mbox") as bar:
        for n, item in enumerate(_messages(kind, path, bar, result)):
            if stop.is_set():
                break
            email = parse_email(item.raw, policy=policy, raw_ref=item.ref)
            key = email_key(account, item.raw)
            if dry_run is not None:
                dry_run(summary(f"#{n + 1}", key, email) + (" (already published)" if publisher.was_published(key)
                                                             else ""))
                continue
            fields = build_entry(email, idempotency_key=key, policy=policy,
                                 source=Source(kind=kind, account=account, mailbox=mailbox))
            batch.append(Publication(key=key, fields=fields))
            batch_bytes += len(item.raw)
            if len(batch) >= BATCH_MESSAGES or batch_bytes >= BATCH_BYTES:
                flush()
        if batch and not stop.is_set():
            flush()
    log.info("import of %s: %d published, %d already published, %d failed", spec, result.published,
             result.skipped_already_published, result.failed)
    return result


def _messages(kind: str, path: Path, bar: Progress | None, result: ImportResult) -> Iterator[RawMessage]:
    def tracker(total: int) -> Callable[[int], None]:
        if bar is None:
            return lambda n: None
        task = bar.add_task(path.name, total=total)
        return lambda n: bar.advance(task, n)

    if kind == "mbox":
        yield from read_mbox(path, tracker(path.stat().st_size))
        return
    files = maildir_files(path) if kind == "maildir" else eml_files(path)
    advance = tracker(len(files))
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as exc:
            log.warning("cannot read %s: %s; skipped", f, exc.strerror)
            result.failed += 1
            continue
        finally:
            advance(1)
        yield RawMessage(raw, _file_url(f))


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool, *, by_bytes: bool) -> Progress | _NoProgress:
    if not enabled:
        return _NoProgress()
    amount = DownloadColumn() if by_bytes else MofNCompleteColumn()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), amount, TimeRemainingColumn())
