"""Backing up one pipeline from a live Redis: a consistent snapshot of every key, in one archive file.

How: ``DUMP`` of every key of the pipeline (found by SCAN on ``keys.pattern()``) inside **one**
MULTI/EXEC, with ``PTTL`` and ``TIME``. The transaction is the consistency: every state change of
mailpipe is one Lua script or transaction, and none can run between the dumps, so the stream, its
groups' pending lists, the retry schedule, the dead letters and the done sets are all from one
instant. DUMP of a stream carries its consumer groups, consumers and pending lists (with delivery
counts and times). DUMP works remotely, per pipeline, without file access or a restart, unlike copying
an RDB file after BGSAVE; its payload is in the RDB format of the server that wrote it, so it restores
into the same or a newer Redis, never an older one (restore checks that first).

Cost: Redis serialises the whole pipeline while the transaction runs, so other clients wait for that
long (see docs/OPERATIONS.md for measurements); the archive is built in memory.

Archive: a tar file (gzip-compressed when the name ends in .gz/.tgz) holding ``manifest.json`` (format
version, time, source, per key: name, type, TTL, size, sha256 of its dump) and one member per key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from mailpipe.errors import MailpipeError
from mailpipe.keys import Keys

FORMAT = "mailpipe-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SNAPSHOT_ATTEMPTS = 5
# Keys that describe processes of the source (a claim while a handler runs, housekeeping locks, the
# producer's lease): restored, they would only block the new processes until they expire.
TRANSIENT_KINDS = frozenset({"claim", "lock", "lease"})
SIZE_COMMANDS = {"stream": "XLEN", "set": "SCARD", "zset": "ZCARD", "hash": "HLEN", "string": "STRLEN",
                 "list": "LLEN"}


class BackupError(MailpipeError):
    """A backup or restore that cannot be done; the message says why and what to do."""


def key_kind(keys: Keys, name: str) -> str:
    """What a key of the pipeline is, from its name (see the table in mailpipe.keys)."""
    rest = name[len(keys.prefix) + 1:] if name.startswith(keys.prefix + ":") else ""
    parts = rest.split(":")
    if rest in ("stream", "dead"):
        return "stream" if rest == "stream" else "dead_letters"
    if parts[0] == "g" and len(parts) >= 3:
        tail = parts[2:]
        if tail == ["retry"]:
            return "retry_schedule"
        if tail == ["retry", "data"]:
            return "retry_data"
        return {"done": "done", "claim": "claim", "lock": "lock", "breaker": "breaker"}.get(tail[0], "other")
    return {"checkpoint": "checkpoint", "lease": "lease", "published": "published"}.get(parts[0], "other")


@dataclass
class KeyRecord:
    name: str
    kind: str
    type: str
    pttl_ms: int  # -1: no expiry
    expire_at_ms: int  # 0: no expiry; else Unix ms on the source's clock
    size: int  # entries / members / fields / bytes, by type
    bytes: int
    sha256: str
    member: str
    rdb_version: int
    groups: list[dict[str, Any]] = field(default_factory=list)  # streams: name, pending, last-delivered-id


@dataclass
class Manifest:
    namespace: str
    stream: str
    created_ms: int
    source_redis_version: str
    source: str  # redacted URL
    keys: list[KeyRecord]
    format: str = FORMAT
    version: int = FORMAT_VERSION
    snapshot: str = "one MULTI/EXEC of DUMP + PTTL per key"
    skipped_transient: list[str] = field(default_factory=list)
    snapshot_ms: float = 0.0  # how long the transaction took (other clients of Redis waited that long)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BackupError("not a mailpipe backup (manifest.json has no 'format: mailpipe-backup')")
        if doc.get("version") != FORMAT_VERSION:
            raise BackupError(f"backup format version {doc.get('version')} is not supported by this mailpipe "
                              f"(reads version {FORMAT_VERSION}): use the mailpipe version that wrote it")
        doc["keys"] = [KeyRecord(**k) for k in doc["keys"]]
        return cls(**doc)


@dataclass
class Snapshot:
    manifest: Manifest
    payloads: dict[str, bytes]  # member name -> DUMP payload


def rdb_version(payload: bytes) -> int:
    """The RDB version in a DUMP payload's footer (2 bytes little-endian, then an 8-byte CRC64)."""
    return int.from_bytes(payload[-10:-8], "little") if len(payload) >= 10 else 0


def _scan(client: redis.Redis, keys: Keys) -> set[str]:
    return {k.decode() if isinstance(k, bytes) else str(k) for k in client.scan_iter(match=keys.pattern(), count=1000)}


def _candidates(client: redis.Redis, keys: Keys) -> set[str]:
    names = _scan(client, keys)
    names.update((keys.stream, keys.dead_letters))
    if client.type(keys.stream) in (b"stream", "stream"):
        for g in client.xinfo_groups(keys.stream):
            group = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
            # created on demand by workers: listed even if absent now, so one appearing in between is caught
            names.update((keys.retry_schedule(group), keys.retry_data(group), keys.breaker(group)))
    return names


def take_snapshot(client: redis.Redis, keys: Keys, *, source: str, include_transient: bool = False) -> Snapshot:
    """A consistent snapshot of the pipeline; ``client`` must not decode responses (DUMP is binary)."""
    for _ in range(SNAPSHOT_ATTEMPTS):
        names = _candidates(client, keys)
        skipped = sorted(n for n in names if key_kind(keys, n) in TRANSIENT_KINDS and not include_transient)
        chosen = sorted(set(names) - set(skipped))
        types = dict(zip(chosen, (t.decode() if isinstance(t, bytes) else str(t)
                                  for t in _pipeline(client, [("TYPE", n) for n in chosen])), strict=True))
        started = time.perf_counter()
        snap = _transaction(client, keys, chosen, types, source)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if snap is None:
            continue  # a key changed type between the look and the snapshot: look again
        appeared = {n for n in _scan(client, keys) - set(names) if key_kind(keys, n) not in TRANSIENT_KINDS}
        if appeared:
            continue  # a key was created while we looked: it may belong to the snapshot's instant
        snap.manifest.skipped_transient = skipped
        snap.manifest.snapshot_ms = round(elapsed_ms, 1)
        return snap
    raise BackupError(f"the pipeline kept changing shape during {SNAPSHOT_ATTEMPTS} snapshot attempts; try again")


def _pipeline(client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    pipe: Any = client.pipeline(transaction=False)
    for cmd in commands:
        pipe.execute_command(*cmd)
    return list(pipe.execute())


def _transaction(client: redis.Redis, keys: Keys, names: list[str], types: dict[str, str],
                 source: str) -> Snapshot | None:
    pipe: Any = client.pipeline(transaction=True)
    pipe.execute_command("TIME")
    for name in names:
        kind = types[name]
        pipe.execute_command("TYPE", name)
        pipe.execute_command("PTTL", name)
        pipe.execute_command("DUMP", name)
        pipe.execute_command(SIZE_COMMANDS.get(kind, "EXISTS"), name)
        if kind == "stream":
            pipe.execute_command("XINFO", "GROUPS", name)
    replies = iter(pipe.execute())
    seconds, micros = next(replies)
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    records: list[KeyRecord] = []
    payloads: dict[str, bytes] = {}
    for name in names:
        kind = types[name]
        actual, pttl, payload, size = next(replies), int(next(replies)), next(replies), next(replies)
        groups = _groups(next(replies)) if kind == "stream" else []
        actual = actual.decode() if isinstance(actual, bytes) else str(actual)
        if payload is None:
            continue  # gone since we looked (e.g. an expired done bucket)
        if actual != kind:
            return None
        member = f"keys/{len(records):06d}.dump"
        payloads[member] = bytes(payload)
        records.append(KeyRecord(
            name=name, kind=key_kind(keys, name), type=kind, pttl_ms=pttl,
            expire_at_ms=now_ms + pttl if pttl >= 0 else 0, size=int(size), bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(), member=member, rdb_version=rdb_version(payload),
            groups=groups))
    info = client.info("server")
    version = str(info.get("redis_version") or info.get("valkey_version") or "")
    manifest = Manifest(namespace=keys.namespace, stream=keys.stream_name, created_ms=now_ms,
                        source_redis_version=version, source=source, keys=records)
    return Snapshot(manifest, payloads)


def _groups(raw: list[Any]) -> list[dict[str, Any]]:
    out = []
    for g in raw:
        d = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in dict(_pairs(g)).items()}
        out.append({"name": _text(d["name"]), "pending": int(d["pending"]), "consumers": int(d["consumers"]),
                    "last_delivered_id": _text(d["last-delivered-id"])})
    return out


def _pairs(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, dict):
        return list(value.items())
    return list(zip(value[::2], value[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- the archive ---------------------------------------------------------------------------------


def write_archive(snapshot: Snapshot, path: Path) -> None:
    """Write atomically (temp file + rename), readable by the owner only: it holds every email."""
    mode = "w:gz" if path.name.endswith((".gz", ".tgz")) else "w"
    directory = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode=mode) as tar:  # type: ignore[call-overload]
            _add(tar, MANIFEST, snapshot.manifest.to_json().encode())
            for record in snapshot.manifest.keys:
                _add(tar, record.member, snapshot.payloads[record.member])
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def read_archive(path: Path) -> Snapshot:
    """Read and verify an archive: every key's dump must be there with its recorded checksum."""
    try:
        with tarfile.open(path, "r:*") as tar:
            manifest = Manifest.from_json(_member(tar, MANIFEST).decode())
            payloads = {}
            for record in manifest.keys:
                data = _member(tar, record.member)
                if len(data) != record.bytes or hashlib.sha256(data).hexdigest() != record.sha256:
                    raise BackupError(f"{path}: checksum mismatch for key {record.name} ({record.member}): the "
                                      "file is damaged; use another backup")
                payloads[record.member] = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"cannot read backup {path}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{path}: manifest.json is damaged ({type(exc).__name__}: {exc})") from None
    return Snapshot(manifest, payloads)


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise BackupError(f"the backup has no member {name}: the file is incomplete")
    return handle.read()
