"""Publishing onto the stream: each email with its checkpoint advance, atomically (``lua/publish.lua``).

A batch is sent as one pipeline of script calls (one round trip); each call is atomic on its own and
they run in order, so a crash between two of them leaves a consistent prefix published.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from mailpipe.keys import Keys, bucket_expire_at, bucket_of, live_buckets
from mailpipe.producer.errors import CheckpointMoved, LeaseLost
from mailpipe.producer.lease import Lease, lua_source

PUBLISHED = "published"
DUPLICATE = "duplicate"  # the producer published this email before (another UID, folder or run)
SKIPPED = "skipped"  # deliberately not published (before the start point); checkpoint advanced
BEHIND = "behind"  # the checkpoint is already past this UID (another pass got there first)


@dataclass(frozen=True)
class Publication:
    """One step: publish ``fields`` under ``key`` (or only skip past ``uid`` when ``fields`` is None)."""

    key: str
    fields: dict[str, str] | None
    uid: int | None = None


@dataclass(frozen=True)
class Target:
    """The checkpoint a batch advances (IMAP) and the lease that fences it; None for local imports."""

    account: str
    mailbox: str
    uidvalidity: int
    lease: Lease | None


@dataclass
class Outcome:
    status: str
    stream_id: str = ""


@dataclass
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


class Publisher:
    def __init__(self, client: redis.Redis, keys: Keys, *, retention_s: int, bucket_s: int) -> None:
        self.client = client
        self.keys = keys
        self.retention_s = retention_s
        self.bucket_s = bucket_s
        self._script: Any = client.register_script(lua_source("publish"))

    def publish(self, batch: Sequence[Publication], target: Target | None = None) -> BatchResult:
        """Publish ``batch`` in order; raises LeaseLost / CheckpointMoved after the consistent prefix."""
        if not batch:
            return BatchResult()
        now = time.time()
        buckets = live_buckets(now, self.bucket_s, self.retention_s)
        bucket_keys = [self.keys.published_bucket(b) for b in buckets]
        expire_at = bucket_expire_at(bucket_of(now, self.bucket_s), self.bucket_s, self.retention_s)
        if target is not None:
            checkpoint = self.keys.checkpoint(target.account, target.mailbox)
            lease_key = target.lease.key if target.lease else self.keys.lease(target.account, target.mailbox)
            token, ttl = (target.lease.token, target.lease.ttl_ms) if target.lease else ("", 0)
            uidvalidity = str(target.uidvalidity)
        else:
            # Never read or written with an empty UIDVALIDITY; declared so the script names every key.
            checkpoint, lease_key = self.keys.checkpoint("", "-"), self.keys.lease("", "-")
            token, ttl, uidvalidity = "", 0, ""
        keys = [self.keys.stream, checkpoint, lease_key, *bucket_keys]
        pipe = self.client.pipeline(transaction=False)
        for item in batch:
            flat = [x for pair in (item.fields or {}).items() for x in pair]
            mode = "publish" if item.fields is not None else "skip"
            uid = "" if item.uid is None else str(item.uid)
            self._script(keys=keys, args=[mode, token, ttl, uidvalidity, uid, item.key, expire_at,
                                          int(now * 1000), *flat], client=pipe)
        replies = pipe.execute()
        result = BatchResult()
        failure: Exception | None = None
        for reply in replies:
            status, detail = (_text(x) for x in reply)
            if status == "lease_lost":
                failure = failure or LeaseLost(f"lease of {_where(target)} was lost while publishing")
            elif status in ("uidvalidity", "no_checkpoint"):
                failure = failure or CheckpointMoved(
                    f"checkpoint of {_where(target)} changed while publishing ({status} {detail})")
            else:
                result.outcomes.append(Outcome(status, detail if status == PUBLISHED else ""))
        if target is not None and target.lease is not None and failure is None:
            target.lease.touched()
        if failure is not None:
            raise failure
        return result

    def was_published(self, key: str) -> bool:
        """True if ``key`` is in a live published bucket (dry runs, status)."""
        buckets = live_buckets(time.time(), self.bucket_s, self.retention_s)
        pipe = self.client.pipeline(transaction=False)
        for b in buckets:
            pipe.sismember(self.keys.published_bucket(b), key)
        return any(pipe.execute())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _where(target: Target | None) -> str:
    return f"{target.account}/{target.mailbox}" if target else "local import"
