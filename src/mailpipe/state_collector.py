"""Prometheus collector turning a :class:`~mailpipe.stream_state.PipelineState` into ``mailpipe_*`` series.

Registered only by ``python -m mailpipe exporter``: the state is the same whoever reads it, so one
exporter per pipeline keeps every series single (no duplicates to de-duplicate across N workers).
Redis being unreachable is reported as ``mailpipe_exporter_redis_up 0``, never as a failed scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mailpipe.logs import redact
from mailpipe.stream_state import DELIVERY_BUCKETS, PipelineState, StreamStateReader, id_ms

log = logging.getLogger(__name__)

BREAKER_STATES = ("closed", "open", "half_open")


class StreamStateCollector(Collector):
    """Reads the pipeline's state from Redis on every scrape (a few commands, never one per entry)."""

    def __init__(self, reader: StreamStateReader) -> None:
        self.reader = reader
        self.stream = reader.keys.stream_name
        self._errors = 0
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_success: float | None = None

    def describe(self) -> list[Metric]:
        return []  # dynamic series: do not read Redis at registration time

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            state = self.reader.read()
        except Exception as exc:
            with self._lock:
                self._errors += 1
                first = self.last_error is None
                detail = redact(str(exc)).splitlines()[0] if str(exc) else ""
                self.last_error = f"{type(exc).__name__}: {detail}"
            if first:
                log.warning("cannot read the pipeline state from Redis: %s", self.last_error)
            state = None
        else:
            with self._lock:
                if self.last_error is not None:
                    log.info("reading the pipeline state from Redis again")
                self.last_error = None
                self.last_success = time.time()
        if state is not None:
            yield from _state_metrics(self.stream, state, self.reader.options.live_consumer_idle_s)
        yield from self._self_metrics(state is not None, time.perf_counter() - started)

    def _self_metrics(self, up: bool, seconds: float) -> Iterator[Metric]:
        s = [self.stream]
        yield _gauge("mailpipe_exporter_redis_up", "1 if the last scrape read the pipeline state from Redis.",
                     s, 1 if up else 0)
        yield _gauge("mailpipe_exporter_collect_duration_seconds",
                     "Time the last scrape spent reading the pipeline state.", s, seconds)
        errors = CounterMetricFamily("mailpipe_exporter_collect_errors",
                                     "Scrapes that could not read the pipeline state.", labels=["stream"])
        errors.add_metric(s, self._errors)
        yield errors


def _gauge(name: str, doc: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["stream"])
    family.add_metric(labels, value)
    return family


class _Families:
    """Builds the families of one scrape; declares each once, in a stable order."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def gauge(self, name: str, doc: str, labels: tuple[str, ...]) -> GaugeMetricFamily:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = GaugeMetricFamily(name, doc, labels=list(labels))
        assert isinstance(family, GaugeMetricFamily)
        return family

    def counter(self, name: str, doc: str, labels: tuple[str, ...]) -> CounterMetricFamily:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = CounterMetricFamily(name, doc, labels=list(labels))
        assert isinstance(family, CounterMetricFamily)
        return family

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


S = ("stream",)
G = ("stream", "group")


def _state_metrics(stream: str, st: PipelineState, live_idle_s: float) -> Iterator[Metric]:
    f = _Families()
    now_s = st.now_ms / 1000
    s = [stream]

    f.gauge("mailpipe_stream_entries", "Entries in the stream (XLEN).", S).add_metric(s, st.stream.length)
    f.gauge("mailpipe_dead_letter_entries", "Entries in the dead-letter stream (XLEN).", S).add_metric(
        s, st.dead_letters.length)
    if st.stream.entries_added is not None:
        f.counter("mailpipe_stream_entries_added", "Entries ever added to the stream (XINFO STREAM).",
                  S).add_metric(s, st.stream.entries_added)
    if st.dead_letters.entries_added is not None:
        f.counter("mailpipe_dead_letter_entries_added",
                  "Entries ever added to the dead-letter stream; keeps counting when dead letters are "
                  "replayed or purged.", S).add_metric(s, st.dead_letters.entries_added)
    if st.stream.last_id != "0-0":
        f.gauge("mailpipe_stream_last_entry_timestamp_seconds", "Time of the newest entry id of the stream.",
                S).add_metric(s, id_ms(st.stream.last_id) / 1000)
    if st.stream.first_id and st.stream.length:
        f.gauge("mailpipe_stream_first_entry_timestamp_seconds",
                "Time of the oldest entry still in the stream (how far back a replay can go).",
                S).add_metric(s, id_ms(st.stream.first_id) / 1000)
    if st.dead_letters.last_id != "0-0":
        f.gauge("mailpipe_dead_letter_last_entry_timestamp_seconds", "Time of the newest dead letter.",
                S).add_metric(s, id_ms(st.dead_letters.last_id) / 1000)

    for g in st.groups:
        gl = [stream, g.name]
        f.gauge("mailpipe_group_consumers", "Consumers registered in the group (live or not).", G).add_metric(
            gl, g.consumers)
        live = sum(1 for c in g.consumer_list if c.idle_ms / 1000 <= live_idle_s)
        f.gauge("mailpipe_group_live_consumers",
                "Consumers that talked to Redis within the live-consumer idle limit.", G).add_metric(gl, live)
        f.gauge("mailpipe_group_pending_entries",
                "Entries delivered to a consumer and not yet acknowledged (XPENDING count).", G).add_metric(
            gl, g.pending)
        if g.entries_read is not None:
            f.counter("mailpipe_group_entries_read", "Entries delivered to the group so far (XINFO GROUPS).",
                      G).add_metric(gl, g.entries_read)
        if g.lag_reported is not None:
            f.gauge("mailpipe_group_lag_entries",
                    "Lag as XINFO GROUPS reports it; over-reported after an AOF rewrite + restart, prefer "
                    "mailpipe_group_undelivered_entries.", G).add_metric(gl, g.lag_reported)
        f.gauge("mailpipe_group_undelivered_entries",
                "Entries not yet delivered to the group, from last-delivered-id vs the stream (0 when caught "
                "up).", G).add_metric(gl, g.undelivered)
        undelivered_age = now_s - id_ms(g.first_undelivered_id) / 1000 if g.first_undelivered_id else 0.0
        f.gauge("mailpipe_group_oldest_undelivered_age_seconds",
                "Age of the oldest entry not yet delivered to the group (0 when caught up).", G).add_metric(
            gl, max(0.0, undelivered_age))
        if g.last_delivered_id != "0-0":
            f.gauge("mailpipe_group_last_delivered_timestamp_seconds",
                    "Time of the entry id last delivered to the group.", G).add_metric(
                gl, id_ms(g.last_delivered_id) / 1000)
        pending_age = now_s - id_ms(g.oldest_pending_id) / 1000 if g.oldest_pending_id else 0.0
        f.gauge("mailpipe_group_oldest_pending_age_seconds",
                "Age (since enqueue) of the oldest entry delivered but not acknowledged (0 when none).",
                G).add_metric(gl, max(0.0, pending_age))
        sampled = f.gauge("mailpipe_group_pending_sampled_entries",
                          "Delivery counts of the oldest pending entries (a bounded sample), by bucket.",
                          (*G, "deliveries"))
        for _, _, label in DELIVERY_BUCKETS:
            sampled.add_metric([*gl, label], g.pending_deliveries.get(label, 0))
        f.gauge("mailpipe_group_pending_sample_max_deliveries",
                "Highest delivery count among the sampled pending entries.", G).add_metric(
            gl, g.max_deliveries_seen)
        f.gauge("mailpipe_group_pending_sample_max_idle_seconds",
                "Longest time since last delivery among the sampled pending entries.", G).add_metric(
            gl, g.max_idle_ms_seen / 1000)
        for c in g.consumer_list:
            cl = [*gl, c.name]
            f.gauge("mailpipe_consumer_idle_seconds", "Time since the consumer last read or claimed.",
                    (*G, "consumer")).add_metric(cl, c.idle_ms / 1000)
            f.gauge("mailpipe_consumer_pending_entries", "Entries pending on the consumer.",
                    (*G, "consumer")).add_metric(cl, c.pending)
        f.gauge("mailpipe_retry_scheduled_entries", "Entries waiting on the retry schedule.", G).add_metric(
            gl, g.retry_scheduled)
        f.gauge("mailpipe_retry_due_entries", "Scheduled retries whose time has come (should be ~0).",
                G).add_metric(gl, g.retry_due)
        if g.retry_oldest_due_ms is not None:
            f.gauge("mailpipe_retry_oldest_due_timestamp_seconds",
                    "Due time of the earliest scheduled retry.", G).add_metric(
                gl, g.retry_oldest_due_ms / 1000)
        f.gauge("mailpipe_dedup_keys", "Idempotency keys remembered as done (live dedup buckets).",
                G).add_metric(gl, g.dedup_keys)
        # No breaker hash means the breaker never opened: closed.
        current = g.breaker_state or "closed"
        state = f.gauge("mailpipe_breaker_state",
                        "Circuit breaker state shared by the group's workers: 1 for the current state.",
                        (*G, "state"))
        for name in BREAKER_STATES:
            state.add_metric([*gl, name], 1 if name == current else 0)
        if g.breaker_opened_at_ms:
            f.gauge("mailpipe_breaker_opened_timestamp_seconds", "When the circuit breaker last opened.",
                    G).add_metric(gl, g.breaker_opened_at_ms / 1000)

    memory = f.gauge("mailpipe_redis_key_memory_bytes", "Memory of the pipeline's streams (MEMORY USAGE, "
                     "sampled).", (*S, "key"))
    for role, size in st.memory.items():
        memory.add_metric([stream, role], size)
    f.gauge("mailpipe_redis_memory_used_bytes", "Memory used by the whole Redis server.", S).add_metric(
        s, st.redis.used_memory)
    f.gauge("mailpipe_redis_memory_max_bytes", "maxmemory of the Redis server (0: no limit).", S).add_metric(
        s, st.redis.maxmemory)
    f.gauge("mailpipe_redis_aof_enabled", "1 if the Redis server writes an append-only file.", S).add_metric(
        s, 1 if st.redis.aof_enabled else 0)
    f.gauge("mailpipe_redis_noeviction", "1 if maxmemory-policy is noeviction (anything else can evict mail).",
            S).add_metric(s, 1 if st.redis.maxmemory_policy == "noeviction" else 0)
    f.gauge("mailpipe_redis_info", "Always 1; the Redis version and eviction policy as labels.",
            (*S, "version", "maxmemory_policy")).add_metric(
        [stream, st.redis.version, st.redis.maxmemory_policy], 1)

    box = (*S, "account", "mailbox")
    for cp in st.checkpoints:
        bl = [stream, cp.account, cp.mailbox]
        if cp.last_uid is not None:
            f.gauge("mailpipe_checkpoint_last_uid", "Highest IMAP UID the producer has published.",
                    box).add_metric(bl, cp.last_uid)
        if cp.uidvalidity is not None:
            f.gauge("mailpipe_checkpoint_uidvalidity", "UIDVALIDITY the checkpoint belongs to.",
                    box).add_metric(bl, cp.uidvalidity)
        if cp.updated_ms is not None:
            f.gauge("mailpipe_checkpoint_updated_timestamp_seconds",
                    "When the producer last advanced the checkpoint.", box).add_metric(
                bl, cp.updated_ms / 1000)
    yield from f
