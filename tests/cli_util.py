"""Running the admin CLI in-process against a test pipeline, and draining a pipeline with a real worker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from mailpipe.cli import main
from mailpipe.keys import Keys
from mailpipe.settings import WorkerSettings, load_settings
from mailpipe.worker import Summary, Worker


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(url: str, keys: Keys, *argv: str) -> CliResult:
    """``mailpipe ARGV --redis-url URL --namespace NS --stream S``, as the console script runs it."""
    out, err = io.StringIO(), io.StringIO()
    full = [*argv, "--redis-url", url, "--namespace", keys.namespace, "--stream", keys.stream_name]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(full)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def drain(url: str, keys: Keys, handler: Callable[..., Any], *, group: str = "workers",
          consumer: str = "drainer", timeout: float = 60) -> Summary:
    """Run an in-process worker until the stream, its pending entries and due retries are done."""
    # Housekeeping is not needed here; rare ticks also dodge a worker shutdown that can hang when its
    # housekeeping task is cancelled mid-command (reported to the lead).
    settings = load_settings(WorkerSettings, redis_url=url, namespace=keys.namespace, stream=keys.stream_name,
                             group=group, exit_when_idle=True, retry_base_s=0.01, retry_cap_s=0.05,
                             housekeeping_interval_s=30, consumer_prune_idle_ms=0)

    async def go() -> Summary:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            return await asyncio.wait_for(Worker(client, settings, handler, consumer=consumer).run(), timeout)
        finally:
            await client.aclose()

    return asyncio.run(go())
