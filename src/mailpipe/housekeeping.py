"""Housekeeping beside the worker loop: heartbeats, due retries, orphan reclaim, trimming, pruning.

Every step is one atomic Lua script, so any number of workers may run them concurrently; a short TTL'd
lock only keeps the fleet from doing the same trim/prune work at once (a SIGKILLed holder's lock
expires by itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from mailpipe.breaker import CLOSED

if TYPE_CHECKING:
    from mailpipe.worker import Worker

log = logging.getLogger("mailpipe.housekeeping")

MOVE_RETRIES_PER_TICK = 1000
TRIM_EVERY_S = 1.0
PRUNE_EVERY_S = 60.0


class Housekeeping:
    def __init__(self, worker: Worker) -> None:
        self.w = worker
        s = worker.settings
        self.heartbeat_every_s = min(s.claim_ttl_ms, s.reclaim_idle_ms) / 3000
        self.reclaim_every_s = max(s.reclaim_idle_ms / 4000, s.housekeeping_interval_s)
        self._last: dict[str, float] = {}

    def _due(self, name: str, every_s: float) -> bool:
        now = time.monotonic()
        if now - self._last.get(name, 0.0) >= every_s:
            self._last[name] = now
            return True
        return False

    async def run(self) -> None:
        interval = self.w.settings.housekeeping_interval_s
        while not self.w._closed:
            await asyncio.sleep(min(interval, self.heartbeat_every_s))
            try:
                await self.tick()
            except RedisError as exc:
                log.warning("housekeeping failed (%s: %s); retrying next tick", type(exc).__name__, exc,
                            extra=self.w._log_extra)

    async def tick(self) -> None:
        if self._due("heartbeat", self.heartbeat_every_s):
            await self.heartbeat()
        if self.w._stopping:
            return  # stopping: keep the running handlers' entries alive, take on nothing new
        if self.w.breaker.state != CLOSED:
            return  # a failing downstream: spend no retry attempts, take on no orphans
        await self.move_due_retries()
        if self._due("reclaim", self.reclaim_every_s):
            await self.reclaim_orphans()
        if self.w.settings.stream_max_len and self._due("trim", TRIM_EVERY_S) and await self._lock("trim", 5000):
            await self.trim()
        if self._due("prune", PRUNE_EVERY_S) and await self._lock("prune", 30_000):
            await self.prune()

    async def heartbeat(self) -> None:
        items = [(f.message.stream_id, f.message.idempotency_key) for f in self.w._inflight.values()]
        items += [(m.stream_id, "") for m in self.w._deferred.values()]  # not our claim: keep the entry only
        if items:
            await self.w.recovery.heartbeat(items)

    async def move_due_retries(self) -> int:
        keys = self.w.keys
        moved = int(await self.w.scripts.move_due_retries(
            keys=[keys.stream, keys.retry_schedule(self.w.group), keys.retry_data(self.w.group)],
            args=[int(time.time() * 1000), MOVE_RETRIES_PER_TICK]))
        if moved:
            self.w.metrics.retries_moved(moved)
        return moved

    async def reclaim_orphans(self) -> None:
        async with self.w._reclaim_lock:
            free = self.w._prefetch - self.w.inflight
            if free <= 0 or self.w._stopping:
                return
            found = await self.w.recovery.orphans(min(free, self.w.settings.batch_size))
            self.w.note_recovered(found.poison, found.gone)
            if found.entries:
                self.w.summary.reclaimed += len(found.entries)
                self.w.metrics.reclaimed(len(found.entries))
                log.info("reclaimed %d orphaned entries", len(found.entries), extra=self.w._log_extra)
                await self.w.dispatch(found.entries)

    async def trim(self) -> int:
        removed = int(await self.w.scripts.trim(keys=[self.w.keys.stream], args=[self.w.settings.stream_max_len]))
        if removed:
            self.w.metrics.trimmed(removed)
        retention = self.w.settings.dead_letter_retention_s
        if retention:
            min_id = f"{int((time.time() - retention) * 1000)}-0"
            await self.w.client.xtrim(self.w.keys.dead_letters, minid=min_id, approximate=False)
        return removed

    async def prune(self) -> list[str]:
        idle = self.w.settings.consumer_prune_idle_ms
        if not idle:
            return []
        removed = await self.w.recovery.prune_consumers(idle)
        if removed:
            log.info("removed idle consumers with no pending entries: %s", ", ".join(removed),
                     extra=self.w._log_extra)
        return removed

    async def _lock(self, name: str, ttl_ms: int) -> bool:
        key = self.w.keys.lock(self.w.group, name)
        return bool(await self.w.client.set(key, self.w.consumer, nx=True, px=ttl_ms))
