"""``mailpipe embedded start|stop|url``: manage the embedded Redis used when no URL is configured."""

from __future__ import annotations

import argparse
from typing import Any

from mailpipe.embedded import ensure_embedded, stop_embedded
from mailpipe.settings import CommonSettings, load_settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "embedded", help="start/stop the embedded Redis (used when MAILPIPE_REDIS_URL is empty)"
    )
    parser.add_argument("action", choices=["start", "stop", "url"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(CommonSettings)
    if args.action == "stop":
        stopped = stop_embedded(settings.embedded_dir)
        print("embedded Redis stopped" if stopped else "embedded Redis was not running")
        return 0
    print(ensure_embedded(settings.embedded_port, settings.embedded_dir))
    return 0
