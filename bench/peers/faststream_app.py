# mypy: ignore-errors
# (typed against packages that exist only in the bench's own venv, bench/.venv)
"""FastStream's Redis Streams subscriber in a consumer group, run with its own CLI:
``faststream run faststream_app:app`` (the bench adds ``--log-level warning`` so per-message log lines do
not hold it back), or ``python faststream_app.py fill`` to publish entries in FastStream's own format.

Messages are read 100 per XREADGROUP (``max_records``), handled one by one and acknowledged one by one
(FastStream's default ack policy: XACK after the handler returns).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub

STREAM = os.environ.get("BENCH_STREAM", "bench")
GROUP = os.environ.get("BENCH_GROUP", "bench")
LATENCY_FILE = os.environ.get("BENCH_LATENCY_FILE")
SLEEP_S = float(os.environ.get("BENCH_SLEEP_S", "0"))

broker = RedisBroker(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app = FastStream(broker)
latencies: list[int] = []


@broker.subscriber(stream=StreamSub(STREAM, group=GROUP, consumer=os.environ.get("BENCH_CONSUMER", "c1"),
                                    max_records=100))
async def handle(body: dict[str, Any]) -> None:
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    if LATENCY_FILE:
        latencies.append(time.time_ns() - int(body["t_ns"]))


@app.after_shutdown
async def write_latencies() -> None:
    if LATENCY_FILE:
        Path(LATENCY_FILE).write_text("\n".join(map(str, latencies)))


def fill(count: int, payload_file: str) -> None:
    """XADD ``count`` copies of the payload, encoded exactly as ``broker.publish`` encodes them."""
    import redis
    from faststream.redis.message import DATA_KEY
    from faststream.redis.parser.binary import BinaryMessageFormatV1

    payload = json.loads(Path(payload_file).read_text())

    async def encoded(n: int) -> bytes:
        return await BinaryMessageFormatV1.encode(
            message={**payload, "idem": f"bench:{n}"}, reply_to=None, headers=None,
            correlation_id=uuid.uuid4().hex,
        )

    r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    for start in range(0, count, 1000):
        pipe = r.pipeline(transaction=False)
        for n in range(start, min(start + 1000, count)):
            pipe.xadd(STREAM, {DATA_KEY: asyncio.run(encoded(n))})
        pipe.execute()


if __name__ == "__main__" and sys.argv[1:2] == ["fill"]:
    fill(int(sys.argv[2]), sys.argv[3])
