"""``mailpipe exporter``: serve the pipeline's state in Redis as Prometheus metrics.

One exporter per pipeline (not one per worker): the stream, its groups, pending lists, retry schedule,
dead letters and checkpoints are the same whoever reads them, so a single reader exports them once and
workers only export what they alone know (their own counters and latencies). Reads happen at scrape time;
nothing is cached except the list of producer checkpoint keys.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

import redis
from prometheus_client import generate_latest
from pydantic import Field
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailpipe import defaults
from mailpipe.cli import EXIT_OK, EXIT_REDIS, add_common_options
from mailpipe.connection import explain_error, redact_url, resolve_url
from mailpipe.errors import ConfigError
from mailpipe.health import HealthServer
from mailpipe.logs import setup_logging
from mailpipe.metrics import new_registry
from mailpipe.settings import CommonSettings, load_settings
from mailpipe.state_collector import StreamStateCollector
from mailpipe.stream_state import StateOptions, StreamStateReader

log = logging.getLogger(__name__)

# The exporter exists to be scraped, so unlike workers it serves by default; 9108 is the port the shipped
# config/prometheus.yml scrapes.
DEFAULT_EXPORTER_PORT = 9108
# A scrape must answer within Prometheus' scrape timeout (10 s by default) even when Redis hangs.
DEFAULT_EXPORTER_REDIS_TIMEOUT_S = 5.0


class ExporterSettings(CommonSettings):
    """Settings of ``mailpipe exporter`` (MAILPIPE_*; dedup settings are the worker's, so they match)."""

    metrics_port: int | None = Field(default=DEFAULT_EXPORTER_PORT, ge=0, le=65535)
    exporter_groups: str = Field(default="", description="comma-separated groups; empty: every group")
    exporter_pending_sample: int = Field(default=100, ge=0, le=10_000)
    exporter_max_consumers: int = Field(default=100, ge=0, le=10_000)
    exporter_live_consumer_idle_s: float = Field(default=defaults.DEFAULT_RECLAIM_IDLE_MS / 1000, gt=0)
    exporter_checkpoint_rescan_s: float = Field(default=60.0, ge=0)
    exporter_max_checkpoints: int = Field(default=500, ge=0, le=100_000)
    exporter_redis_timeout_s: float = Field(default=DEFAULT_EXPORTER_REDIS_TIMEOUT_S, gt=0)
    dedup_retention_s: int = Field(default=defaults.DEFAULT_DEDUP_RETENTION_S, ge=1)
    dedup_bucket_s: int = Field(default=defaults.DEFAULT_DEDUP_BUCKET_S, ge=1)

    def state_options(self) -> StateOptions:
        return StateOptions(
            groups=tuple(g.strip() for g in self.exporter_groups.split(",") if g.strip()),
            pending_sample=self.exporter_pending_sample,
            max_consumers=self.exporter_max_consumers,
            live_consumer_idle_s=self.exporter_live_consumer_idle_s,
            dedup_bucket_s=self.dedup_bucket_s,
            dedup_retention_s=self.dedup_retention_s,
            checkpoint_rescan_s=self.exporter_checkpoint_rescan_s,
            max_checkpoints=self.exporter_max_checkpoints,
        )


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "exporter", help="serve the stream's state (lag, pending, dead letters, ...) as Prometheus metrics",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_common_options(parser)
    parser.add_argument("--host", dest="metrics_host", help="address to serve on (MAILPIPE_METRICS_HOST, "
                        "default 127.0.0.1)")
    parser.add_argument("--port", dest="metrics_port", type=int,
                        help=f"port to serve on, 0 picks one (MAILPIPE_METRICS_PORT, default {DEFAULT_EXPORTER_PORT})")
    parser.add_argument("--group", dest="groups", action="append",
                        help="export only this consumer group (repeatable; default: every group)")
    parser.add_argument("--once", action="store_true",
                        help="print the metrics once to stdout and exit (exit 3 if Redis is unreachable)")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ExporterSettings:
    groups = ",".join(args.groups) if args.groups else None
    return load_settings(ExporterSettings, redis_url=args.redis_url, namespace=args.namespace,
                         stream=args.stream, metrics_host=args.metrics_host, metrics_port=args.metrics_port,
                         exporter_groups=groups)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # --once reports a failure as its one-line error and exit code; the log line would only repeat it.
    setup_logging("ERROR" if args.once else settings.log_level, settings.log_format)
    url = resolve_url(settings)
    try:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=settings.exporter_redis_timeout_s,
            socket_connect_timeout=settings.exporter_redis_timeout_s, health_check_interval=30,
            # One immediate retry (a pooled connection gone stale after a Redis restart), then report
            # Redis as down: the client's default backoff would outlast Prometheus' scrape timeout.
            retry=Retry(NoBackoff(), 1),
        )
    except ValueError:
        raise ConfigError(f"invalid MAILPIPE_REDIS_URL {redact_url(url)}") from None
    reader = StreamStateReader(client, settings.keys(), settings.state_options())
    collector = StreamStateCollector(reader)
    registry = new_registry()
    registry.register(collector)
    try:
        if args.once:
            return _print_once(registry, collector, url)
        return _serve(settings, registry, collector, client, url)
    finally:
        client.close()


def _print_once(registry: Any, collector: StreamStateCollector, url: str) -> int:
    text = generate_latest(registry).decode()
    if collector.last_error is not None:
        print(f"mailpipe: cannot read the pipeline state from Redis at {redact_url(url)}: "
              f"{collector.last_error}", file=sys.stderr)
        return EXIT_REDIS
    sys.stdout.write(text)
    return EXIT_OK


def _serve(settings: ExporterSettings, registry: Any, collector: StreamStateCollector, client: redis.Redis,
           url: str) -> int:
    def ready() -> tuple[bool, str]:
        try:
            client.ping()
        except Exception as exc:
            return False, str(explain_error(exc, url))
        return True, "ready"

    def status() -> dict[str, object]:
        return {"role": "exporter", "namespace": settings.namespace, "stream": settings.stream,
                "redis": redact_url(url), "last_error": collector.last_error,
                "last_success": collector.last_success}

    port = DEFAULT_EXPORTER_PORT if settings.metrics_port is None else settings.metrics_port
    server = HealthServer(settings.metrics_host, port, registry, ready=ready, status=status)
    server.start()
    # The port line goes to stdout too, so scripts starting the exporter on port 0 can find it.
    print(f"mailpipe exporter serving {server.url}/metrics for stream {settings.stream!r}", flush=True)
    log.info("exporter started", extra={"url": server.url, "redis": redact_url(url), "stream": settings.stream})
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    log.info("exporter stopped")
    return EXIT_OK
