"""``python worker.py``: parse options, build the worker, run it until drained or stopped.

First SIGTERM/SIGINT: stop reading, let in-flight handlers finish (up to the shutdown timeout), settle
them, exit 0. Second signal: exit at once (entries not settled stay pending, never acknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from mailpipe import defaults
from mailpipe.connection import connect, resolve_url
from mailpipe.errors import ConfigError, RedisUnavailable
from mailpipe.handler import load_handler
from mailpipe.health import HealthServer
from mailpipe.logs import setup_logging
from mailpipe.metrics import WorkerMetrics, new_registry
from mailpipe.settings import WorkerSettings, load_settings
from mailpipe.worker import Summary, Worker

log = logging.getLogger("mailpipe.worker")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="worker.py",
        description="Run a mailpipe worker: consume the stream in a consumer group and run the handler on "
        "every email. Every option can also be set as MAILPIPE_<NAME> in the environment or .env.",
    )
    p.add_argument("--consumer", help="this worker's name in the group; must be unique and stable across "
                   "restarts (MAILPIPE_CONSUMER)")
    p.add_argument("--group", help=f"consumer group (default {defaults.DEFAULT_GROUP})")
    p.add_argument("--stream", help=f"pipeline / stream name (default {defaults.DEFAULT_STREAM})")
    p.add_argument("--namespace", help=f"key namespace (default {defaults.DEFAULT_NAMESPACE})")
    p.add_argument("--handler", help=f"handler as package.module:callable (default {defaults.DEFAULT_HANDLER})")
    p.add_argument("--concurrency", type=int, help="handlers running at once "
                   f"(default {defaults.DEFAULT_CONCURRENCY})")
    p.add_argument("--batch-size", type=int, help=f"entries per read (default {defaults.DEFAULT_BATCH_SIZE})")
    p.add_argument("--prefetch", type=int, help="entries held at once, running or waiting for a handler slot "
                   "(default 0 = max(concurrency, batch size))")
    p.add_argument("--block-ms", type=int, help="how long one read waits for new entries "
                   f"(default {defaults.DEFAULT_BLOCK_MS})")
    p.add_argument("--exit-when-idle", action="store_true", default=None,
                   help="drain the stream, this consumer's pending entries and the group's retries, then exit")
    p.add_argument("--redis-url", help="redis://[user:pass@]host:port/db or rediss:// (default: embedded)")
    p.add_argument("--shutdown-timeout", type=float, dest="shutdown_timeout_s",
                   help="seconds in-flight handlers get after the first SIGTERM "
                   f"(default {defaults.DEFAULT_SHUTDOWN_TIMEOUT_S:g})")
    p.add_argument("--metrics-port", type=int, help="serve /metrics /health /ready /status on this port "
                   "(default: off)")
    p.add_argument("--metrics-host", help="address for the metrics server (default 127.0.0.1)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--log-format", choices=["json", "text"], help="log format (default json)")
    return p


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = load_settings(WorkerSettings, **overrides)
    if not settings.consumer:
        raise ConfigError("no consumer name: pass --consumer NAME (or set MAILPIPE_CONSUMER); it must be "
                          "unique per worker and stable across restarts")
    return settings


async def run_worker(settings: WorkerSettings) -> Summary:
    handler = load_handler(settings.handler)
    url = resolve_url(settings)
    client = await connect(url)
    registry = new_registry()
    assert settings.consumer is not None
    metrics = WorkerMetrics(registry, stream=settings.stream, group=settings.group, consumer=settings.consumer)
    worker = Worker(client, settings, handler, consumer=settings.consumer, metrics=metrics)
    server = None
    if settings.metrics_port is not None:
        server = HealthServer(settings.metrics_host, settings.metrics_port, registry,
                              ready=worker.ready, status=worker.status)
        server.start()
        log.info("metrics and health on http://%s:%d/metrics", settings.metrics_host, server.port)
    _install_signal_handlers(worker)
    try:
        return await worker.run()
    finally:
        if server is not None:
            server.stop()
        await client.aclose()


def _install_signal_handlers(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            worker.request_stop()
        else:
            # cold stop: whatever is unsettled stays pending in Redis, nothing is acknowledged
            os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        setup_logging(settings.log_level, settings.log_format)
        summary = asyncio.run(run_worker(settings))
    except (ConfigError, RedisUnavailable) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 3
    print(f"worker {settings.consumer}: {summary.line()}", file=sys.stderr)
    return 0
