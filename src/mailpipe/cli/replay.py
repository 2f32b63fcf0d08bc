"""``mailpipe replay``: re-publish entries still in the stream so the workers process them again.

Without ``--bypass-idempotency`` the copies carry their original idempotency keys and the workers skip
every key already done (within the dedup retention): only what never succeeded runs again. With it,
the copies are marked ``replay=force`` and addressed to one group, which runs every one of them again.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.text import Text

from mailpipe.cli import EXIT_OK
from mailpipe.cli.support import (
    CommandError,
    command,
    console,
    fmt_time_ms,
    id_ms,
    id_order,
    leaf_parser,
    open_admin,
    parse_time_ms,
    print_json,
    stream_id_arg,
    usage_error,
)
from mailpipe.republish import ReplayPlan, done_counts, plan, republish


def _time_or_id(text: str) -> str:
    """A stream id (MS-SEQ) as is, else a time turned into the id bound of that millisecond."""
    if "-" in text and stream_id_arg(text):
        return text
    return str(parse_time_ms(text))


def register(sub: Any) -> None:
    p = leaf_parser(sub, "replay", "re-publish entries still in the stream for reprocessing",
                    "mailpipe replay --since 2h --dry-run",
                    "mailpipe replay --since 2024-05-01T10:00:00Z --until 2024-05-01T11:00:00Z --yes",
                    "mailpipe replay --from-id 1718000000000-0 --group workers --bypass-idempotency --yes")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--since", type=parse_time_ms, metavar="TIME",
                       help="entries added since TIME: a duration ago (2h), an ISO time, or @UNIX_SECONDS")
    start.add_argument("--from-id", type=stream_id_arg, metavar="ID", help="entries from this stream id on")
    p.add_argument("--until", type=_time_or_id, metavar="TIME|ID",
                   help="last entry: a time or a stream id (default: the newest entry now)")
    p.add_argument("--group", help="address the copies to this group only (default: every group; with "
                   "--bypass-idempotency: required unless the stream has one group)")
    p.add_argument("--bypass-idempotency", action="store_true",
                   help="run the copies even if their idempotency key is done (marks them replay=force)")
    p.add_argument("--limit", type=int, metavar="N", help="copy at most N entries")
    p.add_argument("--dry-run", action="store_true", help="show what would be re-published, change nothing")
    p.add_argument("--yes", action="store_true", help="do it (without: print the plan, exit 2)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


@command
def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit <= 0:
        raise usage_error("--limit must be > 0")
    start = args.from_id if args.from_id else str(args.since)
    end = args.until or "+"
    admin = open_admin(args)
    try:
        admin.require_stream()
        groups = admin.groups()
        group = admin.resolve_group(args.group) if (args.group or args.bypass_idempotency) else ""
        if end != "+" and id_order(end) < id_order(start):
            raise usage_error(f"--until ({end}) is before the start ({start})")
        the_plan = plan(admin.client, admin.keys.stream, start, end, group=group, limit=args.limit)
        targets = {g: admin.keys.group_prefix(g) for g in ([group] if group else groups)}
        done = done_counts(admin.client, targets, the_plan.keys)
        if not the_plan.selected:
            raise CommandError(f"no entries between {start} and {the_plan.end} to replay"
                               + _trimmed_note(the_plan))
        if args.dry_run or not args.yes:
            _report(args, the_plan, done, [], dry_run=True)
            if args.dry_run:
                return EXIT_OK
            print("nothing changed: add --yes to re-publish (or --dry-run to only look)", file=sys.stderr)
            return 2
        copied = republish(admin.client, admin.keys.stream, [i for i, _ in the_plan.selected],
                           now_ms=int(time.time() * 1000), group=group, force=args.bypass_idempotency)
    finally:
        admin.close()
    _report(args, the_plan, done, copied, dry_run=False)
    return EXIT_OK


def _trimmed_note(p: ReplayPlan) -> str:
    if p.trimmed and p.first_id and id_ms(p.start) < id_ms(p.first_id):
        return (f" (the stream was trimmed: it starts at {p.first_id}, {fmt_time_ms(id_ms(p.first_id))}; "
                "older entries cannot be replayed)")
    return ""


def _bound(stream_id: str) -> str:
    ms = id_ms(stream_id)
    return f"{fmt_time_ms(ms)} ({stream_id})" if ms else stream_id


def _report(args: argparse.Namespace, p: ReplayPlan, done: dict[str, int], copied: list[tuple[str, str]],
            *, dry_run: bool) -> None:
    n = len(p.selected)
    target = f"group {p.group}" if p.group else "every group"
    if args.json:
        print_json({"dry_run": dry_run, "start": p.start, "end": p.end, "group": p.group or None,
                    "bypass_idempotency": args.bypass_idempotency, "selected": n,
                    "skipped": {"same_key_again": p.same_key_again, "other_group": p.other_group,
                                "malformed": p.malformed},
                    "already_done": done, "first_available_id": p.first_id,
                    "copies": [{"source_id": a, "stream_id": b} for a, b in copied]})
        return
    out = console()
    verb = "would re-publish" if dry_run else "re-published"
    out.print(Text(f"{verb} {n} entries from {_bound(p.start)} to {_bound(p.end)} for {target}"
                   + _trimmed_note(p)))
    skipped = [f"{v} {k}" for k, v in (("with a key seen earlier in the range", p.same_key_again),
                                        ("addressed to another group", p.other_group),
                                        ("without an idempotency key", p.malformed)) if v]
    if skipped:
        out.print(Text("skipped: " + ", ".join(skipped)))
    if args.bypass_idempotency:
        out.print(Text(f"the copies carry replay=force: group {p.group} runs every one of them again, "
                       f"including {done.get(p.group, 0)} already done; other groups ignore them"))
    else:
        for g, count in done.items():
            out.print(Text(f"group {g}: {count} of {n} keys are already done and will be skipped by its workers; "
                           f"{n - count} will run"))
        out.print(Text("(the copies keep their idempotency keys; to run done ones again use "
                       "--bypass-idempotency --group G)"))
    if copied:
        out.print(Text(f"copies {copied[0][1]} .. {copied[-1][1]}"))
