"""Recovery of pending entries: this consumer's own after a restart, orphans of dead workers
(XAUTOCLAIM after an idle time), poison entries, deleted payloads, and heartbeats that keep running
entries from being reclaimed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mailpipe.keys import Keys


@dataclass
class Recovered:
    cursor: str = "0-0"
    entries: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    poison: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


class Recovery:
    def __init__(self, keys: Keys, group: str, consumer: str, scripts: Any, *, min_idle_ms: int,
                 max_deliveries: int, claim_ttl_ms: int) -> None:
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.scripts = scripts
        self.min_idle_ms = min_idle_ms
        self.max_deliveries = max_deliveries
        self.claim_ttl_ms = claim_ttl_ms
        self._cursor = "0-0"

    async def _recover(self, mode: str, count: int, start: str) -> Recovered:
        cursor, entries, poison, gone = await self.scripts.recover(
            keys=[self.keys.stream, self.keys.dead_letters],
            args=[self.group, self.consumer, mode, self.min_idle_ms, count, self.max_deliveries, start,
                  int(time.time() * 1000)],
        )
        return Recovered(
            cursor=str(cursor),
            entries=[(str(e[0]), _pairs(e[1])) for e in entries],
            poison=[str(i) for i in poison],
            gone=[str(i) for i in gone],
        )

    async def own(self, count: int, start: str = "-") -> Recovered:
        """This consumer's pending entries (delivered before a crash or restart), from ``start`` on."""
        return await self._recover("own", count, start)

    async def orphans(self, count: int) -> Recovered:
        """Entries idle longer than min_idle on any consumer, walking the pending list with a cursor."""
        found = await self._recover("auto", count, self._cursor)
        self._cursor = found.cursor
        return found

    async def heartbeat(self, items: Sequence[tuple[str, str]]) -> int:
        """Renew claims and reset the idle time of in-flight (stream id, idempotency key) items; an empty
        key renews nothing but still keeps the entry ours."""
        if not items:
            return 0
        args: list[Any] = [self.group, self.consumer, self.claim_ttl_ms, self.keys.claim_prefix(self.group)]
        for stream_id, idem in items:
            args += [stream_id, idem]
        return int(await self.scripts.heartbeat(keys=[self.keys.stream], args=args))

    async def prune_consumers(self, idle_ms: int) -> list[str]:
        removed = await self.scripts.prune_consumers(
            keys=[self.keys.stream], args=[self.group, idle_ms, self.consumer]
        )
        return [str(n) for n in removed]
