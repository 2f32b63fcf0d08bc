"""Prometheus metrics of the worker and producer processes.

Every series is prefixed ``mailpipe_`` and carries its unit in its name. Labels are bounded: outcomes,
states and error kinds come from fixed sets, accounts and mailboxes from configuration; never a label per
email, stream id or error message. Children of fixed label sets are bound once, so the hot path is a
plain ``.inc()`` / ``.observe()``.

The state of the stream itself (length, lag, pending, oldest pending age, ...) is not here: it is read from
Redis at scrape time by :mod:`mailpipe.stream_state`, exported by ``python -m mailpipe exporter`` only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from mailpipe.health import HealthServer

__all__ = [
    "BREAKER_STATES",
    "FETCH_ERROR_KINDS",
    "OUTCOMES",
    "POLL_KINDS",
    "HealthServer",
    "ProducerMetrics",
    "WorkerMetrics",
    "new_registry",
]

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
    collide on registration.
    """
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry


class _Bounded:
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
        self._outcome = _Bounded("outcome", OUTCOMES)

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
        self._breaker_state = _Bounded("breaker state", BREAKER_STATES)
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


class ProducerMetrics:
    """The metrics one producer process updates while it publishes mail onto ``stream``."""

    def __init__(self, registry: CollectorRegistry | None = None, *, stream: str) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.stream = stream
        reg = self.registry
        s = ("stream",)
        acc = ("stream", "account")
        box = ("stream", "account", "mailbox")

        self._published = Counter("mailpipe_producer_emails_published_total",
                                  "Emails published onto the stream.", box, registry=reg)
        self._polls = Counter("mailpipe_producer_polls_total",
                              "Mailbox checks, by kind: poll (timer), idle_wakeup (IDLE reported a change), "
                              "idle_timeout (IDLE renewed without a change).", (*box, "kind"), registry=reg)
        self._poll_kind = _Bounded("poll kind", POLL_KINDS)
        errors = Counter("mailpipe_producer_fetch_errors_total", "Failed IMAP operations, by kind.",
                         (*s, "kind"), registry=reg)
        self._fetch_errors = {k: errors.labels(stream, k) for k in (*FETCH_ERROR_KINDS, OTHER)}
        self._error_kind = _Bounded("fetch error kind", FETCH_ERROR_KINDS)
        self._reconnects = Counter("mailpipe_producer_reconnects_total",
                                   "IMAP connections re-established after a failure.", acc, registry=reg)
        self._uidvalidity = Counter("mailpipe_producer_uidvalidity_changes_total",
                                    "Mailboxes whose UIDVALIDITY changed (the mailbox is re-synced).",
                                    box, registry=reg)
        self._bytes = Counter("mailpipe_producer_fetched_bytes_total", "RFC 822 bytes fetched from IMAP.",
                              acc, registry=reg)
        self._publish = Histogram("mailpipe_producer_publish_duration_seconds",
                                  "Time to publish one email onto the stream (XADD and its bookkeeping).",
                                  s, buckets=PUBLISH_BUCKETS, registry=reg).labels(stream)
        self._token_expiry = Gauge("mailpipe_producer_oauth_token_expiry_timestamp_seconds",
                                   "Unix time at which the current OAuth2 access token expires.",
                                   acc, registry=reg)
        self._refresh_failures = Counter("mailpipe_producer_oauth_refresh_failures_total",
                                         "Failed OAuth2 token refreshes.", acc, registry=reg)
        self._backpressure = Counter("mailpipe_producer_backpressure_pauses_total",
                                     "Times publishing paused because the consumers were too far behind.",
                                     acc, registry=reg)
        self._last_sync = Gauge("mailpipe_producer_last_sync_timestamp_seconds",
                                "Unix time of the last successful sync of a mailbox.", box, registry=reg)
        self._defects = Counter("mailpipe_producer_parse_defects_total",
                                "MIME defects found while parsing fetched mail (the mail is still "
                                "published).",
                                s, registry=reg).labels(stream)

    def published(self, account: str, mailbox: str, n: int = 1) -> None:
        self._published.labels(self.stream, account, mailbox).inc(n)

    def poll(self, account: str, mailbox: str, kind: str) -> None:
        self._polls.labels(self.stream, account, mailbox, self._poll_kind(kind)).inc()

    def fetch_error(self, kind: str) -> None:
        self._fetch_errors[self._error_kind(kind)].inc()

    def reconnect(self, account: str) -> None:
        self._reconnects.labels(self.stream, account).inc()

    def uidvalidity_change(self, account: str, mailbox: str) -> None:
        self._uidvalidity.labels(self.stream, account, mailbox).inc()

    def bytes_fetched(self, account: str, n: int) -> None:
        self._bytes.labels(self.stream, account).inc(n)

    def publish_seconds(self, seconds: float) -> None:
        self._publish.observe(seconds)

    def token_expiry(self, account: str, seconds_left: float) -> None:
        # Exported as an absolute time so the value stays right between refreshes (and after a stall).
        self._token_expiry.labels(self.stream, account).set(time.time() + seconds_left)

    def oauth_refresh_failure(self, account: str) -> None:
        self._refresh_failures.labels(self.stream, account).inc()

    def backpressure_pause(self, account: str) -> None:
        self._backpressure.labels(self.stream, account).inc()

    def sync_success(self, account: str, mailbox: str) -> None:
        self._last_sync.labels(self.stream, account, mailbox).set(time.time())

    def parse_defect(self, n: int = 1) -> None:
        self._defects.inc(n)


def _counter(reg: CollectorRegistry, ids: tuple[str, str], name: str, doc: str) -> Counter:
    return Counter(name, doc, ("stream", "group"), registry=reg).labels(*ids)
