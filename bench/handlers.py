"""Handlers for benchmarking the mailpipe worker: 1 ms of simulated I/O, and latency recording.

``record_latency`` keeps, for each entry carrying a ``t_ns`` field (wall clock at XADD, added by the
bench's paced producer), the delay until the handler ran, and writes them to ``BENCH_LATENCY_FILE`` (one
value in nanoseconds per line) when the worker process exits.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from array import array
from pathlib import Path

from mailpipe.entry import Message
from mailpipe.handler import Context

SIMULATED_IO_S = 0.001

_latencies = array("q")


async def sleep_async(message: Message, ctx: Context) -> None:
    """1 ms of non-blocking I/O (an HTTP call to a fast service)."""
    await asyncio.sleep(SIMULATED_IO_S)


def sleep_sync(message: Message, ctx: Context) -> None:
    """1 ms of blocking I/O (a synchronous client library)."""
    time.sleep(SIMULATED_IO_S)


async def record_latency(message: Message, ctx: Context) -> None:
    """A no-op coroutine that notes how long ago the entry was added (the cheapest path through the
    worker: no thread-pool hand-off)."""
    sent = message.fields.get("t_ns")
    if sent:
        _latencies.append(time.time_ns() - int(sent))


def _write_latencies() -> None:
    target = os.environ.get("BENCH_LATENCY_FILE")
    if target:
        Path(target).write_text("\n".join(map(str, _latencies)))


atexit.register(_write_latencies)
