"""What the worker and producer metrics share: the registry, fixed label sets, histogram buckets."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

OUTCOMES = ("success", "duplicate", "retried", "dead_lettered")
BREAKER_STATES = ("closed", "open", "half_open")
POLL_KINDS = ("poll", "idle_wakeup", "idle_timeout")
FETCH_ERROR_KINDS = ("connection", "auth", "protocol", "parse", "timeout")
# A value outside a fixed set is counted here (and logged once) instead of crashing the caller or
# growing the label set.
OTHER = "other"

# Handler runs: from a cache hit (ms) to a slow downstream call (minutes).
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Enqueue to done includes queueing and retries with backoff (capped at 300 s a step): up to a day.
END_TO_END_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    7200.0, 21600.0, 86400.0,
)
# One XADD (or a small pipeline of them) against a local or LAN Redis.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def new_registry(*, process_metrics: bool = True) -> CollectorRegistry:
    """A private registry, with the standard ``process_*`` and ``python_info`` series when asked.

    Private rather than the global default registry so two pipelines (or tests) in one process never
    collide on registration. Also turns off the client's ``*_created`` series, process-wide: Prometheus
    stores each as one more series per counter/histogram child, doubling the cardinality for a value
    nobody queries (``process_start_time_seconds`` already tells when counters started).
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


class Bounded:
    """Maps a value onto a fixed label set; unknown values become ``other`` and are logged once."""

    def __init__(self, what: str, allowed: Iterable[str]) -> None:
        self._what = what
        self._allowed = frozenset(allowed)
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._allowed:
            return value
        with self._lock:
            if value not in self._warned and len(self._warned) < 20:
                self._warned.add(value)
                log.warning("unknown %s %r counted as %r (expected one of %s)",
                            self._what, value, OTHER, ", ".join(sorted(self._allowed)))
        return OTHER
