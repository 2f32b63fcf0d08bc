"""Worker and producer metrics: names, label sets, bounded cardinality, what each call changes."""

from __future__ import annotations

import re
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailpipe.metrics import (
    BREAKER_STATES,
    FETCH_ERROR_KINDS,
    OUTCOMES,
    ProducerMetrics,
    WorkerMetrics,
    new_registry,
)

# The unit (or kind of quantity) every mailpipe series must end with.
UNIT_SUFFIXES = ("_seconds", "_bytes", "_entries", "_handlers", "_consumers", "_keys", "_total", "_info",
                 "_state", "_uid", "_uidvalidity", "_enabled", "_up", "_noeviction")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def families(registry: CollectorRegistry) -> dict[str, dict[str, object]]:
    """name -> {type, label names}: only mailpipe's own series."""
    found: dict[str, dict[str, object]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if not family.name.startswith("mailpipe_"):
            continue
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        found[family.name] = {"type": family.type, "labels": labels}
    return found


@pytest.fixture
def worker() -> WorkerMetrics:
    return WorkerMetrics(stream="mail", group="workers", consumer="w1")


@pytest.fixture
def producer() -> ProducerMetrics:
    return ProducerMetrics(stream="mail")


def test_worker_series_names_types_and_labels(worker: WorkerMetrics) -> None:
    found = families(worker.registry)
    g = {"stream", "group"}
    assert found == {
        "mailpipe_worker_info": {"type": "gauge", "labels": {"stream", "group", "consumer"}},
        "mailpipe_worker_entries_processed": {"type": "counter", "labels": g | {"outcome"}},
        "mailpipe_worker_handler_duration_seconds": {"type": "histogram", "labels": g},
        "mailpipe_worker_end_to_end_duration_seconds": {"type": "histogram", "labels": g},
        "mailpipe_worker_inflight_handlers": {"type": "gauge", "labels": g},
        "mailpipe_worker_retries_scheduled": {"type": "counter", "labels": g},
        "mailpipe_worker_retries_republished": {"type": "counter", "labels": g},
        "mailpipe_worker_reclaimed_entries": {"type": "counter", "labels": g},
        "mailpipe_worker_poison_entries": {"type": "counter", "labels": g},
        "mailpipe_worker_reclaimed_deleted_entries": {"type": "counter", "labels": g},
        "mailpipe_worker_malformed_entries": {"type": "counter", "labels": g},
        "mailpipe_worker_redis_errors": {"type": "counter", "labels": g},
        "mailpipe_worker_trimmed_entries": {"type": "counter", "labels": g},
        "mailpipe_worker_breaker_state": {"type": "gauge", "labels": g | {"state"}},
        "mailpipe_worker_breaker_transitions": {"type": "counter", "labels": g | {"state"}},
    }


def test_every_series_is_prefixed_and_carries_its_unit(worker: WorkerMetrics, producer: ProducerMetrics) -> None:
    producer.published("a@example.com", "INBOX")
    producer.token_expiry("a@example.com", 60)
    producer.sync_success("a@example.com", "INBOX")
    for registry in (worker.registry, producer.registry):
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("#") or not line.startswith("mailpipe_"):
                continue
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            base = re.sub(r"_(bucket|count|sum|created)$", "", name)
            assert re.fullmatch(r"mailpipe_[a-z0-9_]+", name), name
            assert base.endswith(UNIT_SUFFIXES), f"{name}: no unit suffix"


def test_worker_counters_start_at_zero_and_count(worker: WorkerMetrics) -> None:
    reg = worker.registry
    ids = {"stream": "mail", "group": "workers"}
    for outcome in OUTCOMES:
        assert value(reg, "mailpipe_worker_entries_processed_total", **ids, outcome=outcome) == 0
    worker.processed("success")
    worker.processed("success", 4)
    worker.processed("dead_lettered", 2)
    worker.retry_scheduled()
    worker.retries_moved(3)
    worker.reclaimed(2)
    worker.poison()
    worker.payload_gone(1)
    worker.malformed()
    worker.redis_error()
    worker.trimmed(50)
    worker.set_inflight(7)
    assert value(reg, "mailpipe_worker_entries_processed_total", **ids, outcome="success") == 5
    assert value(reg, "mailpipe_worker_entries_processed_total", **ids, outcome="dead_lettered") == 2
    assert value(reg, "mailpipe_worker_retries_scheduled_total", **ids) == 1
    assert value(reg, "mailpipe_worker_retries_republished_total", **ids) == 3
    assert value(reg, "mailpipe_worker_reclaimed_entries_total", **ids) == 2
    assert value(reg, "mailpipe_worker_poison_entries_total", **ids) == 1
    assert value(reg, "mailpipe_worker_reclaimed_deleted_entries_total", **ids) == 1
    assert value(reg, "mailpipe_worker_malformed_entries_total", **ids) == 1
    assert value(reg, "mailpipe_worker_redis_errors_total", **ids) == 1
    assert value(reg, "mailpipe_worker_trimmed_entries_total", **ids) == 50
    assert value(reg, "mailpipe_worker_inflight_handlers", **ids) == 7
    assert value(reg, "mailpipe_worker_info", **ids, consumer="w1") == 1


def test_histograms_observe_and_clamp_clock_skew(worker: WorkerMetrics) -> None:
    reg = worker.registry
    ids = {"stream": "mail", "group": "workers"}
    worker.handler_seconds(0.02)
    worker.handler_seconds(3.0)
    worker.end_to_end_seconds(-1.5)  # producer clock ahead of the worker's
    assert value(reg, "mailpipe_worker_handler_duration_seconds_count", **ids) == 2
    assert value(reg, "mailpipe_worker_handler_duration_seconds_bucket", **ids, le="0.025") == 1
    assert value(reg, "mailpipe_worker_end_to_end_duration_seconds_sum", **ids) == 0
    assert value(reg, "mailpipe_worker_end_to_end_duration_seconds_bucket", **ids, le="0.01") == 1


def test_unknown_outcome_is_counted_as_other_not_as_a_new_label(worker: WorkerMetrics) -> None:
    for i in range(50):
        worker.processed(f"weird-{i}")
    outcomes = {s.labels["outcome"] for f in worker.registry.collect()
                if f.name == "mailpipe_worker_entries_processed" for s in f.samples}
    assert outcomes == {*OUTCOMES, "other"}
    assert value(worker.registry, "mailpipe_worker_entries_processed_total", stream="mail", group="workers",
                 outcome="other") == 50


def test_breaker_sets_one_state_and_counts_only_changes(worker: WorkerMetrics) -> None:
    reg = worker.registry
    ids = {"stream": "mail", "group": "workers"}

    def states() -> dict[str, float | None]:
        return {s: value(reg, "mailpipe_worker_breaker_state", **ids, state=s) for s in BREAKER_STATES}

    assert states() == {"closed": 1, "open": 0, "half_open": 0}
    for state in ("closed", "open", "open", "half_open", "open", "half_open", "closed", "bogus"):
        worker.breaker(state)
    assert states() == {"closed": 1, "open": 0, "half_open": 0}
    assert worker.breaker_state == "closed"
    transitions = {s: value(reg, "mailpipe_worker_breaker_transitions_total", **ids, state=s)
                   for s in BREAKER_STATES}
    assert transitions == {"closed": 1, "open": 2, "half_open": 2}


def test_two_pipelines_in_one_process_do_not_collide() -> None:
    a = WorkerMetrics(stream="mail", group="workers", consumer="w1")
    b = WorkerMetrics(stream="mail", group="workers", consumer="w2")
    shared = new_registry(process_metrics=False)
    WorkerMetrics(shared, stream="mail", group="g1", consumer="w1")
    ProducerMetrics(shared, stream="mail")
    a.processed("success")
    assert value(b.registry, "mailpipe_worker_entries_processed_total", stream="mail", group="workers",
                 outcome="success") == 0
    assert value(a.registry, "process_start_time_seconds") is not None
    assert value(shared, "process_start_time_seconds") is None


def test_producer_series_names_types_and_labels(producer: ProducerMetrics) -> None:
    producer.published("a@example.com", "INBOX", 3)
    producer.poll("a@example.com", "INBOX", "idle_wakeup")
    producer.sync_success("a@example.com", "INBOX")
    producer.token_expiry("a@example.com", 3600)
    producer.publish_seconds(0.002)
    producer.watch("a@example.com", "INBOX")
    found = families(producer.registry)
    acc, box = {"stream", "account"}, {"stream", "account", "mailbox"}
    assert found == {
        "mailpipe_producer_emails_published": {"type": "counter", "labels": box},
        "mailpipe_producer_polls": {"type": "counter", "labels": box | {"kind"}},
        "mailpipe_producer_fetch_errors": {"type": "counter", "labels": {"stream", "kind"}},
        "mailpipe_producer_reconnects": {"type": "counter", "labels": acc},
        "mailpipe_producer_uidvalidity_changes": {"type": "counter", "labels": box},
        "mailpipe_producer_fetched_bytes": {"type": "counter", "labels": acc},
        "mailpipe_producer_publish_duration_seconds": {"type": "histogram", "labels": {"stream"}},
        "mailpipe_producer_oauth_token_expiry_timestamp_seconds": {"type": "gauge", "labels": acc},
        "mailpipe_producer_oauth_refresh_failures": {"type": "counter", "labels": acc},
        "mailpipe_producer_backpressure_pauses": {"type": "counter", "labels": acc},
        "mailpipe_producer_last_sync_timestamp_seconds": {"type": "gauge", "labels": box},
        "mailpipe_producer_mailbox_watch_start_timestamp_seconds": {"type": "gauge", "labels": box},
        "mailpipe_producer_parse_defects": {"type": "counter", "labels": {"stream"}},
    }


def test_producer_counts_and_timestamps(producer: ProducerMetrics) -> None:
    reg = producer.registry
    acc = {"stream": "mail", "account": "a@example.com"}
    box = {**acc, "mailbox": "INBOX"}
    before = time.time()
    producer.published("a@example.com", "INBOX", 3)
    producer.poll("a@example.com", "INBOX", "poll")
    producer.poll("a@example.com", "INBOX", "later")  # unknown kind
    producer.fetch_error("auth")
    producer.fetch_error("socket exploded: 10.0.0.1")  # never a label per error message
    producer.reconnect("a@example.com")
    producer.uidvalidity_change("a@example.com", "INBOX")
    producer.bytes_fetched("a@example.com", 2048)
    producer.token_expiry("a@example.com", 600)
    producer.oauth_refresh_failure("a@example.com")
    producer.backpressure_pause("a@example.com")
    producer.sync_success("a@example.com", "INBOX")
    producer.parse_defect(2)
    after = time.time()
    assert value(reg, "mailpipe_producer_emails_published_total", **box) == 3
    assert value(reg, "mailpipe_producer_polls_total", **box, kind="poll") == 1
    assert value(reg, "mailpipe_producer_polls_total", **box, kind="other") == 1
    assert value(reg, "mailpipe_producer_fetch_errors_total", stream="mail", kind="auth") == 1
    assert value(reg, "mailpipe_producer_fetch_errors_total", stream="mail", kind="other") == 1
    kinds = {s.labels["kind"] for f in reg.collect() if f.name == "mailpipe_producer_fetch_errors"
             for s in f.samples}
    assert kinds == {*FETCH_ERROR_KINDS, "other"}
    assert value(reg, "mailpipe_producer_reconnects_total", **acc) == 1
    assert value(reg, "mailpipe_producer_uidvalidity_changes_total", **box) == 1
    assert value(reg, "mailpipe_producer_fetched_bytes_total", **acc) == 2048
    expiry = value(reg, "mailpipe_producer_oauth_token_expiry_timestamp_seconds", **acc)
    assert expiry is not None and before + 600 <= expiry <= after + 600
    assert value(reg, "mailpipe_producer_oauth_refresh_failures_total", **acc) == 1
    assert value(reg, "mailpipe_producer_backpressure_pauses_total", **acc) == 1
    synced = value(reg, "mailpipe_producer_last_sync_timestamp_seconds", **box)
    assert synced is not None and before <= synced <= after
    assert value(reg, "mailpipe_producer_parse_defects_total", stream="mail") == 2


def test_producer_account_counters_exist_at_zero_from_first_sight(producer: ProducerMetrics) -> None:
    """A counter born at 1 hides its first increase from increase(): the first failure would not alert."""
    producer.token_expiry("b@example.com", 3600)
    producer.poll("b@example.com", "INBOX", "poll")
    acc = {"stream": "mail", "account": "b@example.com"}
    box = {**acc, "mailbox": "INBOX"}
    for name in ("mailpipe_producer_oauth_refresh_failures_total", "mailpipe_producer_reconnects_total",
                 "mailpipe_producer_backpressure_pauses_total", "mailpipe_producer_fetched_bytes_total"):
        assert value(producer.registry, name, **acc) == 0, name
    assert value(producer.registry, "mailpipe_producer_emails_published_total", **box) == 0
    assert value(producer.registry, "mailpipe_producer_uidvalidity_changes_total", **box) == 0
    assert value(producer.registry, "mailpipe_producer_polls_total", **box, kind="idle_wakeup") == 0


def test_watch_declares_a_mailbox_before_anything_happens(producer: ProducerMetrics) -> None:
    before = time.time()
    producer.watch("c@example.com", "Archive")
    box = {"stream": "mail", "account": "c@example.com", "mailbox": "Archive"}
    started = value(producer.registry, "mailpipe_producer_mailbox_watch_start_timestamp_seconds", **box)
    assert started is not None and before <= started <= time.time()
    assert value(producer.registry, "mailpipe_producer_oauth_refresh_failures_total", stream="mail",
                 account="c@example.com") == 0
    assert value(producer.registry, "mailpipe_producer_last_sync_timestamp_seconds", **box) is None
