"""The admin CLI: ``python -m mailpipe <command>`` (also the ``mailpipe`` console script).

Each command lives in its own module exposing ``register(subparsers)``, which adds a parser whose
``func(args) -> int`` default runs it. Exit codes: 0 ok, 1 operational failure (e.g. nothing matched
where something was required), 2 usage or configuration error, 3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mailpipe.errors import ConfigError, RedisUnavailable

# Modules providing commands; a module missing here is simply not offered.
COMMAND_MODULES = (
    "mailpipe.cli.demo",
    "mailpipe.cli.embedded",
    "mailpipe.cli.dlq",
    "mailpipe.cli.status",
    "mailpipe.cli.pending",
    "mailpipe.cli.consumers",
    "mailpipe.cli.checkpoint",
    "mailpipe.cli.replay",
    "mailpipe.cli.exporter",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REDIS = 3


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every command accepts (each also settable as MAILPIPE_* in the environment / .env)."""
    parser.add_argument("--redis-url", help="Redis URL (default: MAILPIPE_REDIS_URL, else the embedded server)")
    parser.add_argument("--namespace", help="key namespace (default: MAILPIPE_NAMESPACE or 'mailpipe')")
    parser.add_argument("--stream", help="pipeline / stream name (default: MAILPIPE_STREAM or 'mail')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailpipe", description="mailpipe admin CLI")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mailpipe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RedisUnavailable as exc:
        print(f"mailpipe: {exc}", file=sys.stderr)
        return EXIT_REDIS
    except KeyboardInterrupt:
        return 130
