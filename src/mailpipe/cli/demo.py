"""``mailpipe demo``: the README's run command. Publishes the bundled sample emails through the local
import (the same path as ``producer.py --source eml:DIR``) and runs a worker until the stream is drained.

It uses its own pipeline (stream ``demo``) and clears it first, so every run shows the same result and
no real pipeline is touched.
"""

from __future__ import annotations

import argparse
import asyncio
from importlib import resources
from typing import Any

from mailpipe.cli import add_common_options
from mailpipe.connection import connect_sync, redact_url, resolve_url
from mailpipe.embedded import answers_ping, stop_embedded
from mailpipe.logs import setup_logging
from mailpipe.settings import WorkerSettings, load_settings
from mailpipe.worker_main import run_worker

DEMO_STREAM = "demo"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo", help="publish the bundled sample emails and process them with a worker (the run command)")
    add_common_options(parser)
    parser.add_argument("--handler", help="handler to run (default: the log handler)")
    parser.add_argument("--log-format", choices=["json", "text"], default="text", help="log format (default text)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(
        WorkerSettings, redis_url=args.redis_url, namespace=args.namespace, stream=args.stream or DEMO_STREAM,
        consumer="demo-worker", handler=args.handler, exit_when_idle=True, concurrency=4, block_ms=200,
        log_format=args.log_format)
    setup_logging(settings.log_level, settings.log_format)
    started_embedded = settings.redis_url is None and not answers_ping(settings.embedded_port)
    url = resolve_url(settings)
    where = "embedded server" if settings.redis_url is None else "MAILPIPE_REDIS_URL"
    print(f"Redis: {redact_url(url)} ({where})")
    client = connect_sync(url)
    keys = settings.keys()
    stale = list(client.scan_iter(match=keys.pattern(), count=1000))
    if stale:
        client.unlink(*stale)

    from mailpipe.producer.local_source import import_source  # the producer's local import

    samples = resources.files("mailpipe").joinpath("samples")
    with resources.as_file(samples) as sample_dir:
        imported = import_source(client, keys, f"eml:{sample_dir}")
    print(f"published {imported.published} sample emails onto {keys.stream} "
          f"({imported.skipped_already_published} skipped by the producer as already published)")
    client.close()

    try:
        summary = asyncio.run(run_worker(settings))
    finally:
        if started_embedded:
            stop_embedded(settings.embedded_dir)
    duplicates = summary.duplicates + imported.skipped_already_published
    print()
    print(f"processed {summary.processed}, skipped as duplicate {duplicates} (producer "
          f"{imported.skipped_already_published}, worker {summary.duplicates}), failed {summary.failed}")
    if started_embedded:
        print(f"(the embedded Redis was stopped; its data stays in {settings.embedded_dir})")
    print("Next: README.md shows how to run `python producer.py` and `python worker.py --consumer w1`")
    return 0 if summary.failed == 0 else 1
