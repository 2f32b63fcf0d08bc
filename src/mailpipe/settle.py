"""Settling entries: every outcome is applied together with its XACK in one Lua call per batch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mailpipe.idempotency import Idempotency
from mailpipe.keys import Keys

OK, DUP, RELEASE, RETRY, DEAD = "ok", "dup", "release", "retry", "dead"
TRACEBACK_LIMIT = 4000
ERROR_MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class Outcome:
    kind: str
    stream_id: str
    idempotency_key: str = ""
    a1: str = ""
    a2: str = ""
    a3: str = ""
    a4: str = ""
    enqueued_ms: int = 0  # for the end-to-end latency of successes
    counted_as: str = ""  # summary bucket: success | duplicate | foreign | retried | dead_lettered | ...

    @classmethod
    def ok(cls, stream_id: str, idem: str, enqueued_ms: int) -> Outcome:
        return cls(OK, stream_id, idem, enqueued_ms=enqueued_ms, counted_as="success")

    @classmethod
    def duplicate(cls, stream_id: str, idem: str = "", *, foreign: bool = False) -> Outcome:
        return cls(DUP, stream_id, idem, counted_as="foreign" if foreign else "duplicate")

    @classmethod
    def release(cls, stream_id: str, idem: str) -> Outcome:
        return cls(RELEASE, stream_id, idem, counted_as="released")

    @classmethod
    def retry(cls, stream_id: str, idem: str, *, due_ms: int, next_attempt: int, error: BaseException) -> Outcome:
        return cls(RETRY, stream_id, idem, str(due_ms), str(next_attempt), type(error).__name__, _message(error),
                   counted_as="retried")

    @classmethod
    def dead(cls, stream_id: str, idem: str, *, error_type: str, message: str, traceback: str,
             reason: str) -> Outcome:
        return cls(DEAD, stream_id, idem, error_type, message[:ERROR_MESSAGE_LIMIT], traceback[-TRACEBACK_LIMIT:],
                   reason, counted_as="dead_lettered")


def _message(error: BaseException) -> str:
    return str(error)[:ERROR_MESSAGE_LIMIT]


class Settler:
    """Runs the settle script for a batch of outcomes."""

    def __init__(self, keys: Keys, group: str, consumer: str, idempotency: Idempotency, script: Any) -> None:
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.idempotency = idempotency
        self._script = script
        self._fixed_keys = [keys.stream, keys.dead_letters, keys.retry_schedule(group), keys.retry_data(group)]
        self._claim_prefix = keys.claim_prefix(group)

    async def settle(self, outcomes: list[Outcome]) -> list[int]:
        """Apply ``outcomes`` atomically; per outcome 1 = settled, 0 = the entry was no longer pending."""
        if not outcomes:
            return []
        bucket_key, expire_at = self.idempotency.current_bucket()
        packed = "".join(f"{o.kind} {o.stream_id} {o.idempotency_key or '-'}\n" for o in outcomes)
        extras: list[str] = []
        for o in outcomes:
            if o.kind in (RETRY, DEAD):
                extras += [o.a1, o.a2, o.a3, o.a4]
        args: list[Any] = [self.group, expire_at, int(time.time() * 1000), self.consumer, self._claim_prefix, packed,
                           *extras]
        result = await self._script(keys=[*self._fixed_keys, bucket_key], args=args)
        return [int(x) for x in result]
