"""The stream-state collector against a real Redis: every value checked against what Redis says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailpipe.embedded import RedisServerProcess, free_port
from mailpipe.keys import Keys, live_buckets
from mailpipe.metrics import new_registry
from mailpipe.state_collector import StreamStateCollector
from mailpipe.stream_state import StateOptions, StreamStateReader, id_ms
from tests.util import sample_entry, wait_until

BUCKET_S, RETENTION_S = 3600, 7200


class Scrape:
    """One collection through a real registry, read back sample by sample."""

    def __init__(self, reader: StreamStateReader) -> None:
        self.registry = new_registry(process_metrics=False)
        self.collector = StreamStateCollector(reader)
        self.registry.register(self.collector)
        self.stream = reader.keys.stream_name

    def __call__(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"stream": self.stream, **labels})

    def names(self) -> set[str]:
        return {s.name for f in self.registry.collect() for s in f.samples}


def redis_now_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


@pytest.fixture
def reader(r: redis.Redis, keys: Keys) -> StreamStateReader:
    return StreamStateReader(r, keys, StateOptions(dedup_bucket_s=BUCKET_S, dedup_retention_s=RETENTION_S))


@pytest.fixture
def busy(r: redis.Redis, keys: Keys) -> dict[str, int]:
    """A pipeline in a known state: backlog, pending with redeliveries, retries, dead letters, dedup sets."""
    now = redis_now_ms(r)
    old = now - 3_600_000
    r.xadd(keys.stream, sample_entry(0), id=f"{old}-0")  # enqueued an hour ago, still pending below
    for n in range(1, 10):
        r.xadd(keys.stream, sample_entry(n))
    r.xgroup_create(keys.stream, "workers", id="0")
    r.xgroup_create(keys.stream, "archive", id="0")  # nobody reads it: everything undelivered
    got = r.xreadgroup("workers", "c1", {keys.stream: ">"}, count=4)
    ids = [i for i, _ in got[0][1]]
    r.xack(keys.stream, "workers", ids[1])
    r.xreadgroup("workers", "c2", {keys.stream: ">"}, count=2)
    r.xclaim(keys.stream, "workers", "c2", 0, [ids[2], ids[3]])  # delivered twice now
    r.xclaim(keys.stream, "workers", "c2", 0, [ids[3]])  # three times
    r.zadd(keys.retry_schedule("workers"), {"r-due": now - 5_000, "r-later": now + 60_000})
    for n in range(3):
        r.xadd(keys.dead_letters, {"n": str(n)})
    live = live_buckets(now / 1000, BUCKET_S, RETENTION_S)
    r.sadd(keys.done_bucket("workers", live[0]), *[f"k{i}" for i in range(5)])
    r.sadd(keys.done_bucket("workers", live[1]), "k5", "k6")
    r.sadd(keys.done_bucket("workers", live[-1] - 1), *[f"gone{i}" for i in range(9)])  # past retention
    r.hset(keys.breaker("workers"), mapping={"state": "open", "opened_at_ms": now - 10_000, "failures": 7})
    r.hset(keys.checkpoint("ops@example.com", "INBOX/Sub:x"),
           mapping={"uidvalidity": 1234, "last_uid": 42, "updated_ms": now - 1_000})
    return {"now": now, "old": old}


def test_values_equal_the_truth_in_redis(r: redis.Redis, keys: Keys, reader: StreamStateReader,
                                         busy: dict[str, int]) -> None:
    scrape = Scrape(reader)
    w, a = {"group": "workers"}, {"group": "archive"}

    assert scrape("mailpipe_exporter_redis_up") == 1
    assert scrape("mailpipe_stream_entries") == r.xlen(keys.stream) == 10
    assert scrape("mailpipe_stream_entries_added_total") == 10
    assert scrape("mailpipe_dead_letter_entries") == r.xlen(keys.dead_letters) == 3
    assert scrape("mailpipe_dead_letter_entries_added_total") == 3
    assert scrape("mailpipe_stream_first_entry_timestamp_seconds") == busy["old"] / 1000

    pending = r.xpending(keys.stream, "workers")
    assert scrape("mailpipe_group_pending_entries", **w) == pending["pending"] == 5
    age = scrape("mailpipe_group_oldest_pending_age_seconds", **w)  # every call is a fresh scrape
    after = redis_now_ms(r)
    assert age is not None
    assert (busy["now"] - id_ms(pending["min"])) / 1000 <= age <= (after - id_ms(pending["min"])) / 1000
    assert scrape("mailpipe_group_pending_entries", **a) == 0
    assert scrape("mailpipe_group_oldest_pending_age_seconds", **a) == 0

    # delivery counts: 3 entries delivered once, one twice, one three times
    detail = r.xpending_range(keys.stream, "workers", min="-", max="+", count=100)
    counts = sorted(int(p["times_delivered"]) for p in detail)
    assert counts == [1, 1, 1, 2, 3]
    sampled = {b: scrape("mailpipe_group_pending_sampled_entries", **w, deliveries=b)
               for b in ("1", "2", "3", "4-5", "6-9", "10+")}
    assert sampled == {"1": 3, "2": 1, "3": 1, "4-5": 0, "6-9": 0, "10+": 0}
    assert scrape("mailpipe_group_pending_sample_max_deliveries", **w) == 3

    groups = {g["name"]: g for g in r.xinfo_groups(keys.stream)}
    assert scrape("mailpipe_group_undelivered_entries", **w) == groups["workers"]["lag"] == 4
    assert scrape("mailpipe_group_undelivered_entries", **a) == 10
    assert scrape("mailpipe_group_lag_entries", **a) == groups["archive"]["lag"] == 10
    assert scrape("mailpipe_group_entries_read_total", **w) == groups["workers"]["entries-read"] == 6
    assert scrape("mailpipe_group_last_delivered_timestamp_seconds", **w) == id_ms(
        groups["workers"]["last-delivered-id"]) / 1000
    backlog_age = scrape("mailpipe_group_oldest_undelivered_age_seconds", **a)
    assert backlog_age is not None and backlog_age >= 3600
    first_undelivered = r.xrange(keys.stream, "(" + groups["workers"]["last-delivered-id"], "+", count=1)[0][0]
    workers_backlog = scrape("mailpipe_group_oldest_undelivered_age_seconds", **w)
    assert workers_backlog is not None
    assert workers_backlog <= (redis_now_ms(r) - id_ms(first_undelivered)) / 1000

    consumers = {c["name"]: c for c in r.xinfo_consumers(keys.stream, "workers")}
    assert scrape("mailpipe_group_consumers", **w) == len(consumers) == 2
    assert scrape("mailpipe_group_consumers", **a) == 0
    assert scrape("mailpipe_group_live_consumers", **w) == 2
    assert scrape("mailpipe_group_live_consumers", **a) == 0
    for name, c in consumers.items():
        assert scrape("mailpipe_consumer_pending_entries", **w, consumer=name) == c["pending"]
        assert scrape("mailpipe_consumer_idle_seconds", **w, consumer=name) is not None

    schedule = keys.retry_schedule("workers")
    assert scrape("mailpipe_retry_scheduled_entries", **w) == r.zcard(schedule) == 2
    assert scrape("mailpipe_retry_due_entries", **w) == 1
    assert scrape("mailpipe_retry_oldest_due_timestamp_seconds", **w) == r.zrange(
        schedule, 0, 0, withscores=True)[0][1] / 1000
    assert scrape("mailpipe_retry_scheduled_entries", **a) == 0

    assert scrape("mailpipe_dedup_keys", **w) == 7  # the set past retention is not counted
    assert {s: scrape("mailpipe_breaker_state", **w, state=s) for s in ("closed", "open", "half_open")} == {
        "closed": 0, "open": 1, "half_open": 0}
    assert scrape("mailpipe_breaker_opened_timestamp_seconds", **w) == (busy["now"] - 10_000) / 1000
    assert scrape("mailpipe_breaker_state", **a, state="closed") == 1  # no hash: never opened

    cp = {"account": "ops@example.com", "mailbox": "INBOX/Sub:x"}
    assert scrape("mailpipe_checkpoint_last_uid", **cp) == 42
    assert scrape("mailpipe_checkpoint_uidvalidity", **cp) == 1234
    assert scrape("mailpipe_checkpoint_updated_timestamp_seconds", **cp) == (busy["now"] - 1_000) / 1000

    stream_bytes = scrape("mailpipe_redis_key_memory_bytes", key="stream")
    assert stream_bytes is not None and stream_bytes > 0
    used = scrape("mailpipe_redis_memory_used_bytes")
    assert used is not None and used > 0
    assert scrape("mailpipe_redis_noeviction") == (1 if r.config_get("maxmemory-policy")[
        "maxmemory-policy"] == "noeviction" else 0)
    assert scrape("mailpipe_redis_aof_enabled") == int(r.info("persistence")["aof_enabled"])


def test_a_consumer_silent_past_the_limit_is_not_live(r: redis.Redis, keys: Keys) -> None:
    r.xadd(keys.stream, sample_entry(1))
    r.xgroup_create(keys.stream, "workers", id="0")
    r.xgroup_createconsumer(keys.stream, "workers", "ghost")
    wait_until(lambda: r.xinfo_consumers(keys.stream, "workers")[0]["idle"] > 300, 10, what="ghost idle")
    r.xreadgroup("workers", "alive", {keys.stream: ">"}, count=1)
    scrape = Scrape(StreamStateReader(r, keys, StateOptions(live_consumer_idle_s=0.25)))
    assert scrape("mailpipe_group_consumers", group="workers") == 2
    assert scrape("mailpipe_group_live_consumers", group="workers") == 1


def test_an_empty_pipeline_reports_zeros(r: redis.Redis, keys: Keys, reader: StreamStateReader) -> None:
    scrape = Scrape(reader)
    assert scrape("mailpipe_stream_entries") == 0
    assert scrape("mailpipe_dead_letter_entries") == 0
    # present at 0 before the first dead letter, so that first one is an increase() and alerts
    assert scrape("mailpipe_dead_letter_entries_added_total") == 0
    assert scrape("mailpipe_exporter_redis_up") == 1
    assert not any(n.startswith("mailpipe_group_") for n in scrape.names())


def test_commands_per_scrape_do_not_grow_with_the_stream(r: redis.Redis, keys: Keys,
                                                         reader: StreamStateReader) -> None:
    r.xgroup_create(keys.stream, "workers", id="0", mkstream=True)

    def calls_of_one_scrape() -> int:
        reader.read()  # warm: the checkpoint SCAN runs once a minute, not per scrape
        r.config_resetstat()
        reader.read()
        stats = r.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_config")

    def grow(n: int) -> None:
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(keys.stream, sample_entry(i))
        pipe.execute()
        r.xreadgroup("workers", "c1", {keys.stream: ">"}, count=n // 2)

    grow(10)
    small = calls_of_one_scrape()
    grow(2000)
    assert calls_of_one_scrape() == small
    assert small < 60  # a few commands per group plus the fixed ones, never one per entry


def test_redis_down_is_reported_not_raised(tmp_path: Path, keys: Keys) -> None:
    client = redis.Redis(port=free_port(), decode_responses=True, socket_connect_timeout=1,
                         retry=Retry(NoBackoff(), 1))  # as the exporter builds it
    scrape = Scrape(StreamStateReader(client, keys))
    assert scrape("mailpipe_exporter_redis_up") == 0
    assert scrape("mailpipe_exporter_collect_errors_total") == 2  # each get_sample_value collects
    assert scrape.collector.last_error is not None and "ConnectionError" in scrape.collector.last_error
    assert scrape("mailpipe_stream_entries") is None


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServerProcess]:
    server = RedisServerProcess(data_dir=tmp_path, appendonly=True)
    server.start()
    yield server
    server.stop()


def test_lag_after_aof_rewrite_and_restart_is_not_trusted(aof_server: RedisServerProcess, keys: Keys) -> None:
    """Redis 7.0 over-reports XINFO GROUPS lag forever after AOF rewrite + restart; we must not."""

    def client() -> redis.Redis:
        return redis.Redis.from_url(aof_server.url, decode_responses=True)

    r = client()
    for n in range(100):
        r.xadd(keys.stream, sample_entry(n))
    r.xgroup_create(keys.stream, "workers", id="0")
    r.xreadgroup("workers", "c1", {keys.stream: ">"}, count=50)
    r.bgrewriteaof()
    wait_until(lambda: not int(r.info("persistence")["aof_rewrite_in_progress"])
               and not int(r.info("persistence")["aof_rewrite_scheduled"]), 20, what="AOF rewrite")
    r.xreadgroup("workers", "c1", {keys.stream: ">"}, count=20)
    r.close()
    aof_server.restart()
    r = client()
    r.xreadgroup("workers", "c1", {keys.stream: ">"}, count=1000)  # everything delivered now
    group = r.xinfo_groups(keys.stream)[0]
    assert group["last-delivered-id"] == r.xinfo_stream(keys.stream)["last-generated-id"]

    scrape = Scrape(StreamStateReader(r, keys))
    assert scrape("mailpipe_group_undelivered_entries", group="workers") == 0
    assert scrape("mailpipe_group_oldest_undelivered_age_seconds", group="workers") == 0
    # the raw value is exported as Redis reports it (over-reported on affected versions)
    assert scrape("mailpipe_group_lag_entries", group="workers") == (group["lag"] if group["lag"] is not None
                                                                     else None)
    r.close()


def test_the_documented_read_only_acl_is_enough(r: redis.Redis, keys: Keys, redis_server: RedisServerProcess,
                                                busy: dict[str, int]) -> None:
    """The exporter user of config/redis.conf (no write, no SCRIPT LOAD) reads every series."""
    conf = (Path(__file__).resolve().parents[2] / "config" / "redis.conf").read_text()
    rule = next(line.removeprefix("# user ").split() for line in conf.splitlines()
                if line.startswith("# user mailpipe-exporter "))
    name, rules = rule[0], [x for x in rule[1:] if not x.startswith(">")]
    r.acl_setuser(name, reset=True)
    r.execute_command("ACL", "SETUSER", name, *rules, ">exporter-test-pw")
    try:
        client = redis.Redis(port=redis_server.port, username=name, password="exporter-test-pw",
                             decode_responses=True)
        scrape = Scrape(StreamStateReader(client, keys, StateOptions(dedup_bucket_s=BUCKET_S,
                                                                     dedup_retention_s=RETENTION_S)))
        assert scrape("mailpipe_exporter_redis_up") == 1, scrape.collector.last_error
        assert scrape("mailpipe_group_pending_entries", group="workers") == 5
        assert scrape("mailpipe_checkpoint_last_uid", account="ops@example.com", mailbox="INBOX/Sub:x") == 42
        client.close()
    finally:
        r.acl_deluser(name)
