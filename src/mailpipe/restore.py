"""Restoring a backup (see :mod:`mailpipe.backup`) into an empty or different Redis, then verifying it.

All keys are restored with RESTORE ... ABSTTL in **one** MULTI/EXEC under WATCH, so workers pointed at
the target see the whole pipeline or none of it, and a writer touching those keys meanwhile makes the
restore fail cleanly instead of mixing states. Expiring keys (done sets) keep their absolute expiry
time. Before anything is written, one key is restored under a probe name: a target older than the
source refuses the dump format there, with nothing else changed.

Existing keys of the pipeline are never overwritten unless asked (``replace``); with ``replace`` the
pipeline in the target becomes exactly the backup (keys of the pipeline not in the backup are removed
in the same transaction).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import ResponseError, WatchError

from mailpipe.backup import SIZE_COMMANDS, BackupError, KeyRecord, Snapshot, _groups, _scan, _text
from mailpipe.keys import Keys


@dataclass
class RestoreResult:
    restored: list[KeyRecord] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)  # expired since the backup: not restored
    removed: list[str] = field(default_factory=list)  # replace: pipeline keys that were not in the backup
    mismatches: list[str] = field(default_factory=list)  # verification after the restore

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.restored:
            counts[r.kind] = counts.get(r.kind, 0) + 1
        return counts


def server_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def restore(client: redis.Redis, snapshot: Snapshot, *, replace: bool = False) -> RestoreResult:
    """Restore ``snapshot``; ``client`` must not decode responses. Raises BackupError when refused."""
    m = snapshot.manifest
    keys = Keys(m.namespace, m.stream)
    result = RestoreResult()
    now = server_now_ms(client)
    live = [r for r in m.keys if not (r.expire_at_ms and r.expire_at_ms <= now + 1000)]
    result.expired = [r.name for r in m.keys if r not in live]
    if live:
        _probe(client, keys, snapshot, live, m.source_redis_version)
    names = [r.name for r in live]
    pipe: Any = client.pipeline(transaction=True)
    try:
        if names:
            pipe.watch(*names)
        existing = _scan(client, keys)
        if existing - set(names):
            pipe.watch(*(existing - set(names)))
        clash = sorted(set(names) & existing)
        if clash and not replace:
            shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
            raise BackupError(f"the target already holds {len(clash)} keys of pipeline {keys.prefix} ({shown}): "
                              "restore into an empty Redis or pass --replace to overwrite the pipeline")
        result.removed = sorted(existing - set(names)) if replace else []
        pipe.multi()
        for name in result.removed:
            pipe.delete(name)
        for r in live:
            ttl = r.expire_at_ms if r.expire_at_ms else 0
            args: list[Any] = ["RESTORE", r.name, ttl, snapshot.payloads[r.member]]
            if replace:
                args.append("REPLACE")
            if ttl:
                args.append("ABSTTL")
            pipe.execute_command(*args)
        replies = pipe.execute(raise_on_error=False)
    except WatchError:
        raise BackupError(f"keys of pipeline {keys.prefix} changed in the target while restoring (is something "
                          "running against it?); nothing was restored: stop it and try again") from None
    finally:
        pipe.reset()
    errors = [f"{name}: {reply}" for name, reply in zip([*result.removed, *names], replies, strict=True)
              if isinstance(reply, Exception)]
    if errors:
        raise BackupError(f"the target refused {len(errors)} keys ({errors[0]}); it may now hold part of the "
                          "backup: fix the cause, then restore again with --replace")
    result.restored = live
    result.mismatches = verify(client, live)
    return result


def _probe(client: redis.Redis, keys: Keys, snapshot: Snapshot, live: list[KeyRecord], source_version: str) -> None:
    """Restore the smallest key under a throwaway name of the same slot, to learn if the target can read it."""
    sample = min(live, key=lambda r: r.bytes)
    probe = f"{keys.prefix}:restore-probe:{uuid.uuid4().hex}"
    try:
        client.restore(probe, 60_000, snapshot.payloads[sample.member])
    except ResponseError as exc:
        info = client.info("server")
        target = str(info.get("redis_version") or info.get("valkey_version") or "?")
        if "payload version" in str(exc) or "checksum" in str(exc):
            raise BackupError(
                f"the target Redis {target} cannot read this backup's dump format (RDB version "
                f"{sample.rdb_version}, written by Redis {source_version}): restore into Redis "
                f"{source_version} or newer") from None
        raise BackupError(f"the target refused RESTORE: {exc}") from None
    finally:
        client.delete(probe)


def verify(client: redis.Redis, records: list[KeyRecord]) -> list[str]:
    """Compare type, size and (streams) consumer groups of the restored keys with the manifest."""
    pipe: Any = client.pipeline(transaction=False)
    for r in records:
        pipe.execute_command("TYPE", r.name)
        pipe.execute_command(SIZE_COMMANDS.get(r.type, "EXISTS"), r.name)
        if r.type == "stream":
            pipe.execute_command("XINFO", "GROUPS", r.name)
    replies = iter(pipe.execute(raise_on_error=False))
    problems = []
    for r in records:
        kind, size = _text(next(replies)), next(replies)
        groups = _groups(next(replies)) if r.type == "stream" else []
        if kind != r.type or int(size) != r.size:
            problems.append(f"{r.name}: expected {r.type} of size {r.size}, found {kind} of size {size}")
        elif groups != r.groups:
            problems.append(f"{r.name}: consumer groups differ from the backup ({groups} != {r.groups})")
    return problems
