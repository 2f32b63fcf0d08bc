"""Idempotency: which idempotency keys are done, and short-lived claims on the ones being handled.

Done keys live in time-bucketed sets (``keys.done_bucket``) that expire after the retention window, so
memory is bounded: a key is remembered for at least ``retention`` and at most ``retention + bucket``.
The claim (``keys.claim``) makes two entries with one key never run at the same time; it has a TTL,
renewed by the heartbeat while the handler runs, so a dead worker's claim expires by itself. The claim's
value (its owner token) is "<consumer> <stream id>", built inside the Lua scripts.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from typing import Any

from mailpipe.keys import Keys, bucket_expire_at, bucket_of, live_buckets


class ClaimStatus(enum.IntEnum):
    CLAIMED = 0
    DONE = 1
    BUSY = 2  # claimed by another entry/worker right now


class Idempotency:
    def __init__(self, keys: Keys, group: str, *, retention_s: int, bucket_s: int, claim_ttl_ms: int,
                 claim_script: Any) -> None:
        self.keys = keys
        self.group = group
        self.retention_s = retention_s
        self.bucket_s = bucket_s
        self.claim_ttl_ms = claim_ttl_ms
        self._claim = claim_script

    def current_bucket(self, now_s: float | None = None) -> tuple[str, int]:
        """The bucket set new done keys go to, and when it expires (Unix s)."""
        bucket = bucket_of(time.time() if now_s is None else now_s, self.bucket_s)
        return self.keys.done_bucket(self.group, bucket), bucket_expire_at(bucket, self.bucket_s, self.retention_s)

    def live_bucket_keys(self, now_s: float | None = None) -> list[str]:
        now = time.time() if now_s is None else now_s
        return [self.keys.done_bucket(self.group, b) for b in live_buckets(now, self.bucket_s, self.retention_s)]

    async def claim(self, items: Sequence[tuple[str, str, bool]], consumer: str) -> list[ClaimStatus]:
        """Claim (stream id, idempotency key, bypass done-check) items for ``consumer``; a status each."""
        if not items:
            return []
        packed = "".join(f"{stream_id} {idem} {1 if bypass else 0}\n" for stream_id, idem, bypass in items)
        result = await self._claim(keys=self.live_bucket_keys(),
                                   args=[self.claim_ttl_ms, consumer, self.keys.claim_prefix(self.group), packed])
        return [ClaimStatus(int(s)) for s in result]
