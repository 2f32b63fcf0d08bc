# mypy: ignore-errors
# (typed against packages that exist only in the bench's own venv, bench/.venv)
"""taskiq with taskiq-redis's ``RedisStreamBroker`` (consumer group, XACK after the task ran), run with
its own CLI: ``taskiq worker taskiq_app:broker --workers 1`` (the bench adds ``--log-level WARNING``), or
``python taskiq_app.py fill`` to enqueue entries exactly as ``handle.kiq(entry)`` would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from taskiq import TaskiqMessage
from taskiq_redis import RedisStreamBroker

STREAM = os.environ.get("BENCH_STREAM", "bench")
SLEEP_S = float(os.environ.get("BENCH_SLEEP_S", "0"))

broker = RedisStreamBroker(
    os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"), queue_name=STREAM,
    consumer_group_name=os.environ.get("BENCH_GROUP", "bench"), consumer_id="0", xread_block=500,
)


@broker.task(task_name="handle")
async def handle(entry: dict[str, Any]) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)


def fill(count: int, payload_file: str) -> None:
    import redis

    payload = json.loads(Path(payload_file).read_text())
    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    for start in range(0, count, 1000):
        pipe = r.pipeline(transaction=False)
        for n in range(start, min(start + 1000, count)):
            message = TaskiqMessage(task_id=uuid.uuid4().hex, task_name="handle", labels={},
                                    labels_types={}, args=[{**payload, "idem": f"bench:{n}"}], kwargs={})
            pipe.xadd(STREAM, {b"data": broker.formatter.dumps(message).message})
        pipe.execute()


if __name__ == "__main__" and sys.argv[1:2] == ["fill"]:
    fill(int(sys.argv[2]), sys.argv[3])
