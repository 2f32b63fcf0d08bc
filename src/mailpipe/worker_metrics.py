"""Metrics of one worker process: what it alone knows (its outcomes, latencies, in-flight handlers).

Labels: ``stream`` and ``group`` on every series, plus a fixed set (outcome, breaker state). The consumer
name is only on ``mailpipe_worker_info``: it identifies the process, which the scrape's ``instance``
label already does, so repeating it on every series would only double the identity.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mailpipe.metrics_base import (
    BREAKER_STATES,
    END_TO_END_BUCKETS,
    HANDLER_BUCKETS,
    OTHER,
    OUTCOMES,
    Bounded,
    new_registry,
)


class WorkerMetrics:
    """The metrics one worker process updates while it consumes ``stream`` in ``group``."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, stream: str, group: str, consumer: str
    ) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.stream, self.group, self.consumer = stream, group, consumer
        reg = self.registry
        base = ("stream", "group")
        ids = (stream, group)

        info = Gauge("mailpipe_worker_info", "Always 1; maps a worker's instance to its consumer name.",
                     ("stream", "group", "consumer"), registry=reg)
        info.labels(stream, group, consumer).set(1)

        self._processed_family = Counter(
            "mailpipe_worker_entries_processed_total",
            "Entries settled, by outcome (success, duplicate = skipped as already done, retried, "
            "dead_lettered).", (*base, "outcome"), registry=reg)
        self._processed = {o: self._processed_family.labels(*ids, o) for o in OUTCOMES}
        self._outcome = Bounded("outcome", OUTCOMES)

        self._handler = Histogram(
            "mailpipe_worker_handler_duration_seconds", "Wall time of one handler call.", base,
            buckets=HANDLER_BUCKETS, registry=reg).labels(*ids)
        self._e2e = Histogram(
            "mailpipe_worker_end_to_end_duration_seconds",
            "From the entry's enqueue time (its stream id) to its settlement, retries included.", base,
            buckets=END_TO_END_BUCKETS, registry=reg).labels(*ids)
        self._inflight = Gauge(
            "mailpipe_worker_inflight_handlers", "Handlers running right now.", base, registry=reg
        ).labels(*ids)
        self._retry_scheduled = _counter(reg, ids, "mailpipe_worker_retries_scheduled_total",
                                         "Failed entries put on the retry schedule with a backoff delay.")
        self._retries_moved = _counter(reg, ids, "mailpipe_worker_retries_republished_total",
                                       "Due retries moved from the retry schedule back onto the stream.")
        self._reclaimed = _counter(reg, ids, "mailpipe_worker_reclaimed_entries_total",
                                   "Orphaned pending entries taken over from silent consumers (XAUTOCLAIM).")
        self._poison = _counter(reg, ids, "mailpipe_worker_poison_entries_total",
                                "Entries dead-lettered because they were delivered too many times.")
        self._payload_gone = _counter(reg, ids, "mailpipe_worker_reclaimed_deleted_entries_total",
                                      "Pending entries whose payload was already deleted from the stream "
                                      "(reported by XAUTOCLAIM).")
        self._malformed = _counter(reg, ids, "mailpipe_worker_malformed_entries_total",
                                   "Entries that do not follow the entry format (dead-lettered).")
        self._redis_errors = _counter(reg, ids, "mailpipe_worker_redis_errors_total",
                                      "Redis commands that failed (connection lost, timeout, refused).")
        self._trimmed = _counter(reg, ids, "mailpipe_worker_trimmed_entries_total",
                                 "Entries trimmed from the stream after every group had acknowledged them.")

        state = Gauge("mailpipe_worker_breaker_state",
                      "Circuit breaker state as this worker sees it: 1 for the current state, 0 otherwise.",
                      (*base, "state"), registry=reg)
        self._breaker_gauges = {s: state.labels(*ids, s) for s in BREAKER_STATES}
        transitions = Counter("mailpipe_worker_breaker_transitions_total",
                              "Circuit breaker state changes, by the state entered.", (*base, "state"),
                              registry=reg)
        self._breaker_transitions = {s: transitions.labels(*ids, s) for s in BREAKER_STATES}
        self._breaker_state = Bounded("breaker state", BREAKER_STATES)
        self._breaker_lock = threading.Lock()
        self._breaker_current = "closed"
        self._breaker_gauges["closed"].set(1)

    # --- hot path ---------------------------------------------------------------------------------

    def processed(self, outcome: str, n: int = 1) -> None:
        child = self._processed.get(outcome)
        if child is None:
            child = self._processed_family.labels(self.stream, self.group, self._outcome(outcome))
        child.inc(n)

    def handler_seconds(self, seconds: float) -> None:
        self._handler.observe(seconds)

    def end_to_end_seconds(self, seconds: float) -> None:
        # Clocks of producer and worker hosts differ; a negative age is clock skew, not time travel.
        self._e2e.observe(max(0.0, seconds))

    def set_inflight(self, n: int) -> None:
        self._inflight.set(n)

    # --- settlement and housekeeping --------------------------------------------------------------

    def retry_scheduled(self, n: int = 1) -> None:
        self._retry_scheduled.inc(n)

    def retries_moved(self, n: int) -> None:
        if n:
            self._retries_moved.inc(n)

    def reclaimed(self, n: int) -> None:
        if n:
            self._reclaimed.inc(n)

    def poison(self, n: int = 1) -> None:
        self._poison.inc(n)

    def payload_gone(self, n: int) -> None:
        if n:
            self._payload_gone.inc(n)

    def malformed(self, n: int = 1) -> None:
        self._malformed.inc(n)

    def redis_error(self) -> None:
        self._redis_errors.inc()

    def trimmed(self, n: int) -> None:
        if n:
            self._trimmed.inc(n)

    def breaker(self, state: str) -> None:
        """Record the breaker's current state; a change of state also counts one transition."""
        state = self._breaker_state(state)
        if state == OTHER:
            return
        with self._breaker_lock:
            if state == self._breaker_current:
                return
            self._breaker_gauges[self._breaker_current].set(0)
            self._breaker_gauges[state].set(1)
            self._breaker_transitions[state].inc()
            self._breaker_current = state

    @property
    def breaker_state(self) -> str:
        return self._breaker_current


def _counter(reg: CollectorRegistry, ids: tuple[str, str], name: str, doc: str) -> Counter:
    return Counter(name, doc, ("stream", "group"), registry=reg).labels(*ids)
