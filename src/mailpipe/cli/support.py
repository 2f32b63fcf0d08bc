"""Plumbing shared by the admin commands: settings, connecting, finding the stream and group, output.

Every command runs inside :func:`command`, which turns expected failures into one line on stderr and an
exit code scripts can trust (see :mod:`mailpipe.cli`): nothing an operator can cause prints a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailpipe import defaults
from mailpipe.cli import EXIT_FAILURE, EXIT_REDIS, EXIT_USAGE, add_common_options
from mailpipe.connection import connect_sync, explain_error, resolve_url
from mailpipe.errors import MailpipeError
from mailpipe.keys import Keys
from mailpipe.settings import CommonSettings, load_settings

# How many keys the "which pipelines do exist?" hint may walk before giving up (SCAN is O(keyspace)).
DISCOVERY_SCAN_LIMIT = 50_000


class AdminSettings(CommonSettings):
    """Settings the admin commands read besides the common ones (MAILPIPE_*, same names as the worker's)."""

    # A consumer idle longer than this is not live (workers touch Redis every block_ms at least).
    reclaim_idle_ms: int = Field(default=defaults.DEFAULT_RECLAIM_IDLE_MS, ge=100)


class CommandError(MailpipeError):
    """An expected failure of a command: one line for stderr and the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> CommandError:
    return CommandError(message, EXIT_USAGE)


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command, mapping expected failures to a one-line message and its exit code."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        url = getattr(args, "_resolved_url", "") or ""
        try:
            return fn(args)
        except CommandError as exc:
            print(f"mailpipe: {exc}", file=sys.stderr)
            return exc.code
        except (RedisConnectionError, RedisTimeoutError) as exc:
            url = getattr(args, "_resolved_url", url) or "redis"
            print(f"mailpipe: {explain_error(exc, url)}", file=sys.stderr)
            return EXIT_REDIS
        except ResponseError as exc:
            print(f"mailpipe: {describe_response_error(exc)}", file=sys.stderr)
            return EXIT_FAILURE
        except BrokenPipeError:  # `mailpipe dlq list | head`: the reader left, nothing to report
            return 0

    return run


def describe_response_error(exc: ResponseError) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if text.startswith("NOPERM") or "can't run this command" in text or "no permissions" in text:
        return (f"Redis refused the command ({text}): the ACL user of MAILPIPE_REDIS_URL lacks a permission "
                "this admin command needs (see docs/SECURITY.md for the admin ACL)")
    if text.startswith(("BUSY", "LOADING")):
        return f"Redis is busy ({text}); try again in a moment"
    return f"Redis refused the command: {text}"


# --- settings and connection ---------------------------------------------------------------------


def add_examples(parser: argparse.ArgumentParser, *examples: str) -> None:
    """Show ``examples`` under --help (kept verbatim)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)


def leaf_parser(sub: Any, name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    add_common_options(parser)
    if examples:
        add_examples(parser, *examples)
    return parser


@dataclass
class Admin:
    """A connected admin session on one pipeline."""

    settings: AdminSettings
    client: redis.Redis
    keys: Keys
    url: str

    def close(self) -> None:
        self.client.close()

    def require_stream(self) -> None:
        """Fail with a useful line when the pipeline's stream does not exist."""
        kind = str(self.client.type(self.keys.stream))
        if kind == "stream":
            return
        if kind != "none":
            raise CommandError(f"key {self.keys.stream} is a {kind}, not a stream: is another application "
                               "using the namespace? pick another --namespace")
        raise CommandError(missing_stream_message(self.client, self.keys))

    def groups(self) -> list[str]:
        return [str(g["name"]) for g in self.client.xinfo_groups(self.keys.stream)]

    def resolve_group(self, group: str | None) -> str:
        """The group named, or the stream's only group; fails naming the groups that exist."""
        self.require_stream()
        groups = self.groups()
        if group is not None:
            if group not in groups:
                known = ", ".join(groups) if groups else "none yet (no worker has started)"
                raise CommandError(f"no consumer group {group!r} on stream {self.keys.stream}; groups: {known}")
            return group
        if len(groups) == 1:
            return groups[0]
        if not groups:
            raise CommandError(f"stream {self.keys.stream} has no consumer group yet: start a worker first")
        raise usage_error(f"stream {self.keys.stream} has several groups ({', '.join(groups)}): pass --group")


def open_admin(args: argparse.Namespace) -> Admin:
    settings = load_settings(AdminSettings, redis_url=args.redis_url, namespace=args.namespace,
                             stream=args.stream)
    url = resolve_url(settings)
    args._resolved_url = url  # lets `command` name the server in a mid-command connection error
    return Admin(settings, connect_sync(url), settings.keys(), url)


def missing_stream_message(client: redis.Redis, keys: Keys) -> str:
    found = discover_pipelines(client)
    hint = ("pipelines found: " + ", ".join(f"--namespace {ns} --stream {s}" for ns, s in found)
            if found else "no mailpipe stream exists on this server yet (has a producer published anything?)")
    return f"no stream {keys.stream} on this Redis (check --stream / --namespace); {hint}"


_STREAM_KEY = re.compile(r"^([A-Za-z0-9_.\-]{1,100}):\{([A-Za-z0-9_.\-]{1,100})\}:stream$")


def discover_pipelines(client: redis.Redis, limit: int = 20) -> list[tuple[str, str]]:
    """(namespace, stream) of mailpipe streams on the server, from a bounded SCAN."""
    found: set[tuple[str, str]] = set()
    cursor, walked = 0, 0
    while True:
        cursor, names = client.scan(cursor, match="*:{*}:stream", count=1000)
        walked += 1000
        for name in names:
            m = _STREAM_KEY.match(str(name))
            if m:
                found.add((m.group(1), m.group(2)))
        if cursor == 0 or walked >= DISCOVERY_SCAN_LIMIT or len(found) >= limit:
            return sorted(found)


# --- times and durations -------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds of ``90s``, ``15m``, ``2h``, ``7d``, ``500ms`` or a plain number of seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 90s, 15m, 2h, 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """Unix ms of a point in time: a duration ago (``2h``), an ISO 8601 time, or ``@<unix seconds>``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if _DURATION.match(text):
        return now - int(parse_duration(text) * 1000)
    if text.startswith("@"):
        try:
            return int(float(text[1:]) * 1000)
        except ValueError:
            pass
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # say it: operators read UTC in logs and ids
            return int(moment.timestamp() * 1000)
    raise argparse.ArgumentTypeError(
        f"invalid time {text!r}: use a duration ago (2h, 30m, 1d), an ISO time (2024-05-01T10:00:00Z) "
        "or @UNIX_SECONDS")


_STREAM_ID = re.compile(r"^\d+(-\d+)?$")


def stream_id_arg(text: str) -> str:
    if not _STREAM_ID.match(text):
        raise argparse.ArgumentTypeError(f"invalid stream id {text!r}: expected MS-SEQ, e.g. 1718000000000-0")
    return text


def id_ms(stream_id: str) -> int:
    return int(stream_id.split("-", 1)[0])


def id_order(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id; a bare millisecond counts as its first id."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def fmt_duration_ms(ms: float | None) -> str:
    """Short human duration: 850ms, 42s, 3m05s, 2h03m, 5d02h."""
    if ms is None:
        return "-"
    if ms < 0:
        return "-" + fmt_duration_ms(-ms)
    if ms < 1000:
        return f"{int(ms)}ms"
    s = int(ms // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_time_ms(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- output --------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: object, width: int | None = None) -> str:
    """Text from Redis made safe for a terminal: control characters (escape sequences) replaced,
    newlines flattened, cut to ``width``."""
    text = _CONTROL.sub("?", str(value)).replace("\n", " ").replace("\t", " ")
    if width is not None and len(text) > width:
        text = text[: max(width - 1, 1)] + "…"
    return text


def console() -> Console:
    # Not a terminal (pipes, CI logs): wide enough that tables are not wrapped into unreadable columns.
    probe = Console()
    width = None if probe.is_terminal else 200
    return Console(width=width, highlight=False, soft_wrap=False)


def table(*columns: str, title: str | None = None, right: Iterable[str] = ()) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=None,
              header_style="bold")
    right_set = set(right)
    for name in columns:
        t.add_column(name, justify="right" if name in right_set else "left", no_wrap=True)
    return t


def print_table(out: Console, t: Table) -> None:
    """Print a table without the padding rich leaves at the end of each line."""
    with out.capture() as captured:
        out.print(t)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def cells(*values: object) -> list[Text]:
    """Row cells as plain Text, so data from Redis is never read as rich markup."""
    return [Text(clean(v)) for v in values]


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def refuse_without_yes(what: str, preview: Iterable[str], total: int) -> int:
    """Print what a destructive command would do and return the usage exit code."""
    out = console()
    out.print(Text(f"would {what} ({total}):"))
    shown = 0
    for line in preview:
        out.print(Text("  " + clean(line)))
        shown += 1
    if total > shown:
        out.print(Text(f"  ... and {total - shown} more"))
    print("nothing changed: add --yes to do it", file=sys.stderr)
    return EXIT_USAGE
