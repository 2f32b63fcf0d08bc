"""A pipeline in a realistic mid-run state, made by a real worker, for the admin CLI and docs tests.

After :func:`seed_pipeline` the pipeline has: processed (done) entries, dead letters (permanent
failures), scheduled retries (a handler asked to retry in an hour), entries pending on a consumer that
"died" (read, never settled), undelivered entries, and a producer checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

from mailpipe.entry import Message
from mailpipe.errors import PermanentError, RetryLater
from mailpipe.handler import Context
from mailpipe.keys import Keys
from mailpipe.settings import WorkerSettings, load_settings
from mailpipe.worker import Worker
from tests.util import sample_entry

GROUP = "workers"
ACCOUNT = "me@example.com"
MAILBOX = "INBOX"


@dataclass
class Seed:
    keys: Keys
    group: str
    done: list[str] = field(default_factory=list)  # idempotency keys processed
    dead_ids: list[str] = field(default_factory=list)  # dead-letter stream ids
    retry_keys: list[str] = field(default_factory=list)  # idempotency keys in the retry schedule
    pending_ids: list[str] = field(default_factory=list)  # stream ids pending on the dead consumer
    undelivered_ids: list[str] = field(default_factory=list)
    dead_consumer: str = "ghost"
    worker_consumer: str = "seed-worker"


def _handler(message: Message, ctx: Context) -> None:
    key = message.idempotency_key
    if key.startswith("perm-"):
        raise PermanentError(f"cannot handle {key}: unknown customer")
    if key.startswith("later-"):
        raise RetryLater(3600, "downstream rate limit: retry in an hour")


async def _run_worker(url: str, keys: Keys, group: str, consumer: str, expect_dead: int, expect_retry: int,
                      expect_done: int) -> None:
    # Housekeeping is not needed here; rare ticks also dodge a worker shutdown that can hang when its
    # housekeeping task is cancelled mid-command (reported to the lead).
    settings = load_settings(WorkerSettings, redis_url=url, namespace=keys.namespace, stream=keys.stream_name,
                             group=group, retry_base_s=0.01, retry_cap_s=0.05, housekeeping_interval_s=30,
                             block_ms=50, consumer_prune_idle_ms=0)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    worker = Worker(client, settings, _handler, consumer=consumer)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 60
    try:
        while True:
            s = worker.summary
            if s.dead_lettered >= expect_dead and s.retried >= expect_retry and s.processed >= expect_done:
                break
            if task.done() or time.monotonic() > deadline:
                raise AssertionError(f"seed worker did not reach the state: {s.line()}")
            await asyncio.sleep(0.01)
    finally:
        worker.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        await client.aclose()


def publish(r: redis.Redis, keys: Keys, names: list[str]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for i, name in enumerate(names):
        pipe.xadd(keys.stream, sample_entry(i, key=name, subject=f"subject of {name}"))
    return [str(x) for x in pipe.execute()]


def seed_pipeline(url: str, keys: Keys, *, group: str = GROUP, retries: bool = True) -> Seed:
    """Seed the state described in the module docstring; ``retries=False`` leaves the retry schedule
    empty (a worker run with --exit-when-idle would wait an hour for the scheduled ones)."""
    seed = Seed(keys, group)
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        seed.done = [f"ok-{i}" for i in range(6)]
        perm = [f"perm-{i}" for i in range(3)]
        seed.retry_keys = [f"later-{i}" for i in range(2)] if retries else []
        publish(r, keys, seed.done[:3] + perm + seed.retry_keys + seed.done[3:])
        r.xgroup_create(keys.stream, group, id="0", mkstream=True)
        asyncio.run(_run_worker(url, keys, group, seed.worker_consumer, len(perm), len(seed.retry_keys),
                                len(seed.done)))
        seed.dead_ids = [str(i) for i, _ in r.xrange(keys.dead_letters)]
        fresh = publish(r, keys, [f"fresh-{i}" for i in range(5)])
        # a worker that read two entries and died before settling them
        r.xreadgroup(group, seed.dead_consumer, {keys.stream: ">"}, count=2)
        seed.pending_ids, seed.undelivered_ids = fresh[:2], fresh[2:]
        r.hset(keys.checkpoint(ACCOUNT, MAILBOX),
               mapping={"uidvalidity": 7, "last_uid": 42, "updated_ms": int(time.time() * 1000)})
    finally:
        r.close()
    return seed
