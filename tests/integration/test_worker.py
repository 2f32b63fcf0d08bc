"""Worker behaviour against a real Redis, with the worker running in-process."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from mailpipe.entry import Message
from mailpipe.errors import PermanentError, RetryLater, TransientError
from mailpipe.handler import Context
from mailpipe.keys import Keys
from mailpipe.settings import WorkerSettings, load_settings
from mailpipe.worker import Summary, Worker
from tests.util import sample_entry

G = "workers"


def settings_for(keys: Keys, redis_url: str, **kw: Any) -> WorkerSettings:
    base: dict[str, Any] = dict(redis_url=redis_url, namespace=keys.namespace, stream=keys.stream_name,
                                exit_when_idle=True, retry_base_s=0.01, retry_cap_s=0.05,
                                housekeeping_interval_s=0.05, concurrency=8)
    base.update(kw)
    return load_settings(WorkerSettings, **base)


async def run_worker(settings: WorkerSettings, handler: Callable[..., Any], consumer: str = "c1",
                     timeout: float = 60) -> Summary:
    assert settings.redis_url is not None
    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
    try:
        worker = Worker(client, settings, handler, consumer=consumer)
        return await asyncio.wait_for(worker.run(), timeout)
    finally:
        await client.aclose()


def publish(r: redis.Redis, keys: Keys, n: int, key: Callable[[int], str] = lambda i: f"k{i}") -> list[str]:
    pipe = r.pipeline()
    for i in range(n):
        pipe.xadd(keys.stream, sample_entry(i, key=key(i)))
    return [str(x) for x in pipe.execute()]


def done_keys(r: redis.Redis, keys: Keys) -> set[str]:
    found: set[str] = set()
    for name in r.scan_iter(match=keys.prefix + ":g:workers:done:*"):
        found |= r.smembers(name)  # type: ignore[arg-type]
    return found


def pending_count(r: redis.Redis, keys: Keys, group: str = G) -> int:
    return int(r.xpending(keys.stream, group)["pending"])


async def until(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_group_is_created_and_duplicates_are_skipped(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 300, key=lambda i: f"k{i % 250}")
    seen: list[str] = []
    summary = asyncio.run(run_worker(settings_for(keys, redis_url), lambda m, c: seen.append(c.idempotency_key)))
    assert (summary.processed, summary.duplicates, summary.failed) == (250, 50, 0)
    assert sorted(seen) == sorted(f"k{i}" for i in range(250))
    assert done_keys(r, keys) == {f"k{i}" for i in range(250)}
    assert pending_count(r, keys) == 0
    # a second run over a re-published batch handles nothing again
    publish(r, keys, 10)
    again = asyncio.run(run_worker(settings_for(keys, redis_url), lambda m, c: seen.append("again")))
    assert again.duplicates == 10 and "again" not in seen


def test_async_handler_receives_message_and_context(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 5)
    got: list[tuple[Message, Context]] = []

    async def handler(message: Message, ctx: Context) -> None:
        await asyncio.sleep(0)
        got.append((message, ctx))

    asyncio.run(run_worker(settings_for(keys, redis_url), handler, consumer="alice"))
    message, ctx = got[0]
    assert ctx.consumer == "alice" and ctx.attempt == 1 and ctx.stream_id == message.stream_id
    assert ctx.idempotency_key == message.idempotency_key and ctx.correlation_id == message.correlation_id
    assert message.email.subject.startswith("message ")


def test_concurrent_duplicates_never_run_at_the_same_time(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 400, key=lambda i: f"k{i % 40}")  # every key 10 times
    running: collections.Counter[str] = collections.Counter()
    executions: collections.Counter[str] = collections.Counter()
    overlap: list[str] = []
    lock = threading.Lock()

    async def handler(message: Message, ctx: Context) -> None:
        with lock:
            running[ctx.idempotency_key] += 1
            executions[ctx.idempotency_key] += 1
            if running[ctx.idempotency_key] > 1:
                overlap.append(ctx.idempotency_key)
        await asyncio.sleep(0.005)
        with lock:
            running[ctx.idempotency_key] -= 1

    async def two_workers() -> list[Summary]:
        s = settings_for(keys, redis_url, concurrency=16, batch_size=20)
        return list(await asyncio.gather(run_worker(s, handler, "w1"), run_worker(s, handler, "w2")))

    summaries = asyncio.run(two_workers())
    assert overlap == []
    assert set(executions.values()) == {1} and len(executions) == 40
    assert sum(s.processed for s in summaries) == 40
    assert sum(s.duplicates for s in summaries) == 360
    assert pending_count(r, keys) == 0


def test_failure_retries_with_attempt_in_the_entry_then_succeeds(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 20)
    attempts: collections.defaultdict[str, list[int]] = collections.defaultdict(list)

    def handler(message: Message, ctx: Context) -> None:
        attempts[ctx.idempotency_key].append(ctx.attempt)
        if ctx.attempt < 3 and int(ctx.idempotency_key[1:]) % 2 == 0:
            raise ValueError("flaky")

    summary = asyncio.run(run_worker(settings_for(keys, redis_url, max_attempts=5), handler))
    assert summary.processed == 20 and summary.retried == 20 and summary.dead_lettered == 0
    for i in range(20):
        assert attempts[f"k{i}"] == ([1, 2, 3] if i % 2 == 0 else [1])
    assert r.zcard(keys.retry_schedule(G)) == 0 and pending_count(r, keys) == 0
    assert r.xlen(keys.dead_letters) == 0


def test_permanent_errors_and_exhausted_attempts_are_dead_lettered(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 6)

    def handler(message: Message, ctx: Context) -> None:
        n = int(ctx.idempotency_key[1:])
        if n < 2:
            raise PermanentError(f"bad email {n}")
        if n < 4:
            raise KeyError("always broken")

    summary = asyncio.run(run_worker(settings_for(keys, redis_url, max_attempts=3), handler))
    assert summary.processed == 2 and summary.dead_lettered == 4
    dead = {f["idem"]: f for _, f in r.xrange(keys.dead_letters)}
    assert {k: dead[k]["dl_reason"] for k in dead} == {"k0": "permanent", "k1": "permanent",
                                                         "k2": "max_attempts", "k3": "max_attempts"}
    assert dead["k0"]["dl_attempts"] == "1" and dead["k2"]["dl_attempts"] == "3"
    assert dead["k2"]["dl_error_type"] == "KeyError" and "always broken" in dead["k2"]["dl_error"]
    assert "Traceback" in dead["k2"]["dl_traceback"] and dead["k2"]["dl_consumer"] == "c1"
    assert int(dead["k0"]["first_ms"]) <= int(dead["k0"]["dl_failed_ms"])
    assert pending_count(r, keys) == 0 and r.zcard(keys.retry_schedule(G)) == 0
    assert not done_keys(r, keys) & {"k0", "k1", "k2", "k3"}


def test_retry_later_uses_the_requested_delay(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 1)
    runs: list[float] = []

    def handler(message: Message, ctx: Context) -> None:
        runs.append(time.monotonic())
        if ctx.attempt == 1:
            raise RetryLater(0.3, "rate limited")

    summary = asyncio.run(run_worker(settings_for(keys, redis_url), handler))
    assert summary.processed == 1 and summary.retried == 1 and len(runs) == 2
    assert runs[1] - runs[0] >= 0.29


def test_malformed_entries_and_foreign_retry_copies(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    r.xadd(keys.stream, {"v": "1", "idem": "x"})
    foreign = sample_entry(1)
    foreign["grp"] = "another-group"
    r.xadd(keys.stream, foreign)
    calls: list[str] = []
    summary = asyncio.run(run_worker(settings_for(keys, redis_url), lambda m, c: calls.append("x")))
    assert calls == [] and summary.dead_lettered == 1 and summary.duplicates == 0
    [(_, dead)] = r.xrange(keys.dead_letters)
    assert dead["dl_reason"] == "malformed" and "missing field" in dead["dl_error"]
    assert pending_count(r, keys) == 0


def test_group_recreated_after_flushall(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    seen: list[str] = []

    async def scenario() -> Summary:
        settings = settings_for(keys, redis_url, exit_when_idle=False, block_ms=100)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = Worker(client, settings, lambda m, c: seen.append(c.idempotency_key), consumer="c1")
        task = asyncio.create_task(worker.run())
        publish(r, keys, 5)
        await until(lambda: len(seen) == 5, what="first batch")
        r.flushall()
        publish(r, keys, 5, key=lambda i: f"after{i}")
        await until(lambda: len(seen) == 10, what="entries after FLUSHALL")
        worker.request_stop()
        summary = await task
        await client.aclose()
        return summary

    summary = asyncio.run(scenario())
    assert summary.processed == 10
    assert sorted(seen[5:]) == [f"after{i}" for i in range(5)]
    assert pending_count(r, keys) == 0


def test_long_running_handler_is_never_stolen(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 3)
    executions: collections.Counter[str] = collections.Counter()

    async def slow(message: Message, ctx: Context) -> None:
        executions[ctx.idempotency_key] += 1
        await asyncio.sleep(1.5)  # the simulated work: five times the reclaim idle time

    async def scenario() -> tuple[Summary, Summary]:
        s = settings_for(keys, redis_url, reclaim_idle_ms=300, claim_ttl_ms=300, exit_when_idle=False,
                         block_ms=50)
        owner_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        other_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        owner = Worker(owner_client, s, slow, consumer="owner")
        other = Worker(other_client, s, slow, consumer="other")
        t1 = asyncio.create_task(owner.run())
        await until(lambda: len(executions) == 3, what="owner started all three")
        t2 = asyncio.create_task(other.run())
        await until(lambda: owner.summary.processed == 3, what="owner finished")
        other.request_stop()
        owner.request_stop()
        result = await t1, await t2
        await owner_client.aclose()
        await other_client.aclose()
        return result

    owner_summary, other_summary = asyncio.run(scenario())
    assert set(executions.values()) == {1}
    assert other_summary.reclaimed == 0 and other_summary.processed == 0
    assert owner_summary.processed == 3


def test_orphans_of_a_dead_consumer_are_reclaimed_and_poison_dead_lettered(
        r: redis.Redis, keys: Keys, redis_url: str) -> None:
    r.xgroup_create(keys.stream, G, id="0", mkstream=True)
    ids = publish(r, keys, 4)
    r.xreadgroup(G, "crashed", {keys.stream: ">"}, count=4)
    for _ in range(4):  # ids[0] keeps killing whoever takes it
        r.xclaim(keys.stream, G, "crashed", 0, [ids[0]])
    seen: list[str] = []

    async def scenario() -> Summary:
        s = settings_for(keys, redis_url, reclaim_idle_ms=200, claim_ttl_ms=300, max_deliveries=5,
                         exit_when_idle=False, block_ms=50)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = Worker(client, s, lambda m, c: seen.append(c.idempotency_key), consumer="live")
        task = asyncio.create_task(worker.run())
        await until(lambda: len(seen) == 3 and pending_count(r, keys) == 0, what="orphans handled")
        worker.request_stop()
        summary = await task
        await client.aclose()
        return summary

    summary = asyncio.run(scenario())
    assert sorted(seen) == ["k1", "k2", "k3"]
    assert summary.reclaimed == 3 and summary.poison == 1
    [(_, dead)] = r.xrange(keys.dead_letters)
    assert dead["idem"] == "k0" and dead["dl_reason"] == "poison"


def test_breaker_pauses_reading_and_spends_no_attempts(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 30)
    downstream_up = threading.Event()
    calls: list[tuple[str, int, bool]] = []

    def handler(message: Message, ctx: Context) -> None:
        calls.append((ctx.idempotency_key, ctx.attempt, downstream_up.is_set()))
        if not downstream_up.is_set():
            raise TransientError("downstream down")

    async def scenario() -> Summary:
        s = settings_for(keys, redis_url, concurrency=1, batch_size=1, breaker_threshold=3,
                         breaker_cooldown_s=0.4, max_attempts=3, exit_when_idle=False, block_ms=50)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = Worker(client, s, handler, consumer="c1")
        task = asyncio.create_task(worker.run())
        await until(lambda: r.hget(keys.breaker(G), "state") == "open", what="breaker open")
        opened_calls = len(calls)
        delivered = r.xinfo_groups(keys.stream)[0]["last-delivered-id"]
        # while open (before the cool-down ends) nothing new is read and no retry runs
        await asyncio.sleep(0.2)  # a window in which nothing may happen, not a wait for work
        assert len(calls) == opened_calls
        assert r.xinfo_groups(keys.stream)[0]["last-delivered-id"] == delivered
        downstream_up.set()
        await until(lambda: worker.summary.processed == 30, timeout=30, what="all processed after recovery")
        worker.request_stop()
        summary = await task
        await client.aclose()
        return summary

    summary = asyncio.run(scenario())
    assert r.hget(keys.breaker(G), "state") == "closed"
    failures = [c for c in calls if not c[2]]
    assert len(failures) == 3  # the threshold, plus no more: nothing ran while open
    assert summary.dead_lettered == 0 and max(a for _, a, _ in calls) == 2


def test_graceful_stop_finishes_in_flight_and_leaves_unfinished_pending(
        r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 3)
    release = threading.Event()
    started: list[str] = []

    def handler(message: Message, ctx: Context) -> None:
        started.append(ctx.idempotency_key)
        if ctx.idempotency_key == "k2":
            time.sleep(30)  # never finishes within the shutdown timeout
        else:
            release.wait(10)

    async def scenario() -> Summary:
        s = settings_for(keys, redis_url, exit_when_idle=False, shutdown_timeout_s=1.0, block_ms=50)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = Worker(client, s, handler, consumer="c1")
        task = asyncio.create_task(worker.run())
        await until(lambda: len(started) == 3, what="three handlers running")
        worker.request_stop()
        publish(r, keys, 2, key=lambda i: f"late{i}")
        release.set()
        summary = await task
        await client.aclose()
        return summary

    summary = asyncio.run(scenario())
    pend = {p["message_id"] for p in r.xpending_range(keys.stream, G, "-", "+", 10)}
    k2_id = r.xrange(keys.stream, "-", "+", count=3)[2][0]
    assert k2_id in pend  # unfinished: not acknowledged, left for recovery
    # what a read already under way brought in was handled; nothing was acknowledged unhandled
    done = done_keys(r, keys)
    assert {"k0", "k1"} <= done and "k2" not in done
    assert done - {"k0", "k1"} == {k for k in started if k.startswith("late")} - {"k2"}
    assert summary.processed == len(done)
    # every entry is either done or still pending: nothing unfinished was acknowledged
    all_ids = {sid: f["idem"] for sid, f in r.xrange(keys.stream)}
    assert {all_ids[sid] for sid in pend} | done == set(all_ids.values())
    assert not {all_ids[sid] for sid in pend} & done


@pytest.mark.parametrize("deliver_to_dead_consumer", [True])
def test_own_pending_entries_are_recovered_after_restart(
        r: redis.Redis, keys: Keys, redis_url: str, deliver_to_dead_consumer: bool) -> None:
    r.xgroup_create(keys.stream, G, id="0", mkstream=True)
    publish(r, keys, 5)
    r.xreadgroup(G, "c1", {keys.stream: ">"}, count=3)  # delivered to c1, which then "crashed"
    seen: list[str] = []
    summary = asyncio.run(run_worker(settings_for(keys, redis_url), lambda m, c: seen.append(c.idempotency_key)))
    assert sorted(seen) == [f"k{i}" for i in range(5)] and summary.processed == 5
    assert pending_count(r, keys) == 0


def test_trimming_keeps_what_a_lagging_group_has_not_read(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    r.xgroup_create(keys.stream, "lagging", id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(500):  # 10 ms apart: the trim estimates its cut from entry timestamps
        pipe.xadd(keys.stream, sample_entry(i, key=f"k{i}"), id=f"{1_000 + 10 * i}-0")
    pipe.execute()
    s = settings_for(keys, redis_url, stream_max_len=10)

    async def work_then_trim() -> int:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = Worker(client, s, lambda m, c: None, consumer="c1")
        await worker.run()
        removed = await worker.housekeeping.trim()
        await client.aclose()
        return removed

    assert asyncio.run(work_then_trim()) == 0  # "lagging" has read nothing: every entry stays
    assert r.xlen(keys.stream) == 500
    r.xreadgroup("lagging", "l1", {keys.stream: ">"}, count=200)
    r.xack(keys.stream, "lagging", *[sid for sid, _ in r.xrange(keys.stream, count=150)])
    assert asyncio.run(work_then_trim()) == 150  # up to the lagging group's oldest pending entry
    rest = r.xreadgroup("lagging", "l1", {keys.stream: ">"}, count=1000)
    assert len(rest[0][1]) == 300


def test_dead_letter_retention_is_off_by_default_and_explicit(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    old_ms = int(time.time() * 1000) - 3_600_000
    r.xadd(keys.dead_letters, {"dl_reason": "permanent"}, id=f"{old_ms}-0")
    r.xadd(keys.dead_letters, {"dl_reason": "permanent"})

    async def trim(**kw: Any) -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = Worker(client, settings_for(keys, redis_url, **kw), lambda m, c: None, consumer="c1")
        await worker.housekeeping.trim()
        await client.aclose()

    asyncio.run(trim())
    assert r.xlen(keys.dead_letters) == 2
    asyncio.run(trim(dead_letter_retention_s=600))
    assert r.xlen(keys.dead_letters) == 1


def test_broken_email_document_found_by_the_handler_is_dead_lettered(
        r: redis.Redis, keys: Keys, redis_url: str) -> None:
    entry = sample_entry(1)
    entry["email"] = "{broken"
    r.xadd(keys.stream, entry)
    summary = asyncio.run(run_worker(settings_for(keys, redis_url), lambda m, c: m.email.subject))
    assert summary.dead_lettered == 1 and summary.retried == 0
    [(_, dead)] = r.xrange(keys.dead_letters)
    assert dead["dl_reason"] == "malformed" and dead["dl_error_type"] == "MalformedEntry"


def test_a_slow_sync_handler_does_not_hold_up_the_others(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    publish(r, keys, 40)
    release = threading.Event()
    finished: list[str] = []

    def handler(message: Message, ctx: Context) -> None:
        if ctx.idempotency_key == "k0":
            release.wait(20)  # stuck until the test has seen all the others finish
        finished.append(ctx.idempotency_key)

    async def scenario() -> Summary:
        s = settings_for(keys, redis_url, concurrency=4, exit_when_idle=False, block_ms=50)
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        worker = Worker(client, s, handler, consumer="c1")
        task = asyncio.create_task(worker.run())
        await until(lambda: len(finished) == 39, what="the 39 other entries, while k0 is stuck")
        assert "k0" not in finished
        release.set()
        await until(lambda: worker.summary.processed == 40, what="k0 too")
        worker.request_stop()
        summary = await task
        await client.aclose()
        return summary

    assert asyncio.run(scenario()).processed == 40
