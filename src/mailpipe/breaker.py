"""Circuit breaker shared by every worker of a group, stored in Redis so a fleet pauses together.

closed -> (``threshold`` consecutive downstream failures) -> open -> (cool-down) -> half_open, where one
worker runs one probe entry -> success closes, failure re-opens. While open the workers read no new
entries and move no due retries, so no retry attempts are spent against a dead downstream.

A small Lua-backed module rather than pybreaker: pybreaker's Redis storage is synchronous and updates
the state with separate commands, so two workers can race a transition; here every transition is one
atomic script and the half-open probe is handed to exactly one worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerView:
    state: str
    is_probe: bool


class Breaker:
    def __init__(self, key: str, script: Any, *, threshold: int, cooldown_s: float, token: str,
                 on_change: Callable[[str], None] | None = None, cache_s: float = 0.2) -> None:
        self.key = key
        self._script = script
        self.threshold = threshold
        self.cooldown_ms = int(cooldown_s * 1000)
        self.token = token
        self._on_change = on_change
        self._cache_s = cache_s
        self._cached: BreakerView = BreakerView(CLOSED, False)
        self._cached_at = 0.0

    @property
    def state(self) -> str:
        """The last state seen (no Redis call)."""
        return self._cached.state

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    async def _call(self, op: str) -> BreakerView:
        state, is_probe, changed = await self._script(
            keys=[self.key],
            args=[op, int(time.time() * 1000), self.threshold, self.cooldown_ms, self.token],
        )
        view = BreakerView(str(state), bool(int(is_probe)))
        if int(changed):
            log.warning("circuit breaker %s", view.state, extra={"breaker": view.state, "op": op})
        if self._on_change:
            self._on_change(view.state)
        self._cached, self._cached_at = view, time.monotonic()
        return view

    async def check(self) -> BreakerView:
        """Current state (cached briefly: the read loop asks before every batch)."""
        if not self.enabled:
            return self._cached
        if time.monotonic() - self._cached_at < self._cache_s and self._cached.state == CLOSED:
            return self._cached
        return await self._call("check")

    async def record_success(self) -> None:
        """Called per settled batch that had a success: resets the fleet's consecutive-failure count.

        A round trip only when it can matter: after this worker recorded a failure, while the breaker is
        not closed, or once a second (failures recorded by other workers are reset within that second).
        """
        if not self.enabled:
            return
        now = time.monotonic()
        if self._cached.state == CLOSED and not self._failed_since_success and now - self._success_at < 1.0:
            return
        self._success_at, self._failed_since_success = now, False
        await self._call("success")

    async def record_failure(self) -> None:
        """Called per downstream (transient) failure."""
        if self.enabled:
            self._failed_since_success = True
            await self._call("failure")

    _failed_since_success = False
    _success_at = 0.0
