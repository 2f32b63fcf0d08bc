"""``mailpipe dlq list|show|replay|purge``: inspect and act on the dead-letter stream.

A dead letter keeps the original entry plus why it failed (``dl_*`` fields). Replay moves entries back
onto the main stream atomically (attempts reset, addressed to the group that gave up on them); purge
deletes them for good and always asks for ``--yes``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.text import Text

from mailpipe.cli import EXIT_FAILURE, EXIT_OK
from mailpipe.cli.support import (
    Admin,
    CommandError,
    cells,
    clean,
    command,
    console,
    fmt_duration_ms,
    fmt_time_ms,
    leaf_parser,
    open_admin,
    parse_duration,
    print_json,
    print_table,
    refuse_without_yes,
    stream_id_arg,
    table,
    usage_error,
)
from mailpipe.dead_letters import DeadLetter, DeadLetters, Filter

REASONS = ("permanent", "max_attempts", "poison", "malformed")
PAGE = 200


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "dlq", help="dead letters: list, show, replay, purge",
        description="Inspect and act on the dead-letter stream (entries that failed for good).")
    actions = parser.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)

    p = leaf_parser(actions, "list", "list dead letters, newest first",
                    "mailpipe dlq list", "mailpipe dlq list --reason poison --newer-than 1h",
                    "mailpipe dlq list --error-type ValueError --group workers --json")
    _add_filters(p)
    p.add_argument("--limit", type=int, default=50, help="show at most N (default 50; 0 = all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)

    p = leaf_parser(actions, "show", "show one dead letter: every field, the error and its traceback",
                    "mailpipe dlq show 1718000000000-0", "mailpipe dlq show 1718000000000-0 --json")
    p.add_argument("id", type=stream_id_arg, help="dead-letter id (first column of `dlq list`)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_show)

    p = leaf_parser(actions, "replay", "move dead letters back onto the stream (attempts reset, atomic)",
                    "mailpipe dlq replay 1718000000000-0 1718000000001-0",
                    "mailpipe dlq replay --all --error-type TimeoutError --yes")
    _add_selection(p)
    p.set_defaults(func=run_replay)

    p = leaf_parser(actions, "purge", "delete dead letters for good (refuses without --yes)",
                    "mailpipe dlq purge 1718000000000-0 --yes",
                    "mailpipe dlq purge --all --older-than 30d --yes")
    _add_selection(p)
    p.set_defaults(func=run_purge)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--error-type", help="only this exception class name (e.g. TimeoutError)")
    p.add_argument("--reason", choices=REASONS, help="only dead letters with this reason")
    p.add_argument("--group", help="only those dead-lettered by this consumer group")
    p.add_argument("--older-than", type=parse_duration, metavar="AGE", help="failed longer ago than AGE (1h, 7d)")
    p.add_argument("--newer-than", type=parse_duration, metavar="AGE", help="failed within the last AGE")


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="*", type=stream_id_arg, metavar="ID", help="dead-letter ids")
    p.add_argument("--all", action="store_true", help="every dead letter matching the filters")
    _add_filters(p)
    p.add_argument("--yes", action="store_true", help="do it (without: print what would happen, exit 2)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _filter(args: argparse.Namespace) -> Filter:
    return Filter(error_type=args.error_type, reason=args.reason, group=args.group,
                  older_than_s=args.older_than, newer_than_s=args.newer_than)


def _has_filters(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.error_type, args.reason, args.group, args.older_than, args.newer_than))


# --- views ---------------------------------------------------------------------------------------


def email_summary(fields: dict[str, str]) -> dict[str, Any]:
    """Subject, senders etc. from the entry's email JSON; empty when it is missing or unreadable."""
    try:
        doc = json.loads(fields.get("email") or "{}")
    except ValueError:
        return {"unreadable": True}
    if not isinstance(doc, dict):
        return {"unreadable": True}
    return {
        "subject": doc.get("subject") or "",
        "from": list(doc.get("from") or []),
        "to": list(doc.get("to") or []),
        "date": doc.get("date"),
        "message_id": doc.get("message_id"),
        "size": doc.get("size"),
        "attachments": len(doc.get("attachments") or []),
    }


def summary(dl: DeadLetter, now_ms: int) -> dict[str, Any]:
    f, email = dl.fields, email_summary(dl.fields)
    return {
        "id": dl.id, "failed_ms": dl.failed_ms, "age_s": round((now_ms - dl.failed_ms) / 1000, 3),
        "group": f.get("dl_group", ""), "reason": dl.reason, "error_type": dl.error_type, "error": dl.error,
        "attempts": _int(f.get("dl_attempts")), "consumer": f.get("dl_consumer", ""),
        "stream_id": f.get("dl_stream_id", ""), "idempotency_key": f.get("idem", ""),
        "correlation_id": f.get("cid", ""), "account": f.get("account", ""), "mailbox": f.get("mailbox", ""),
        "subject": email.get("subject", ""), "from": email.get("from", []),
    }


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def newest_first(admin: Admin, flt: Filter) -> Iterator[DeadLetter]:
    now_ms = int(time.time() * 1000)
    end = "+"
    while True:
        page: list[Any] = admin.client.xrevrange(admin.keys.dead_letters, end, "-", count=PAGE) or []
        for entry_id, fields in page:
            dl = DeadLetter(entry_id, fields)
            if flt.matches(dl, now_ms):
                yield dl
        if len(page) < PAGE:
            return
        end = "(" + page[-1][0]


# --- commands ------------------------------------------------------------------------------------


@command
def run_list(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise usage_error("--limit must be >= 0")
    admin = open_admin(args)
    try:
        admin.require_stream()
        total = DeadLetters(admin.client, admin.keys).count()
        shown: list[DeadLetter] = []
        more = False
        for dl in newest_first(admin, _filter(args)):
            if args.limit and len(shown) >= args.limit:
                more = True
                break
            shown.append(dl)
    finally:
        admin.close()
    now_ms = int(time.time() * 1000)
    if args.json:
        print_json([summary(dl, now_ms) for dl in shown])
        return EXIT_OK
    out = console()
    if not shown:
        out.print(Text(f"no dead letters match ({total} in {admin.keys.dead_letters})"))
        return EXIT_OK
    t = table("ID", "FAILED", "GROUP", "REASON", "ERROR TYPE", "ATT", "IDEMPOTENCY KEY", "SUBJECT", "ERROR",
              right=("FAILED", "ATT"))
    for dl in shown:
        s = summary(dl, now_ms)
        t.add_row(*cells(dl.id, fmt_duration_ms(now_ms - dl.failed_ms) + " ago", s["group"], s["reason"],
                         s["error_type"], s["attempts"] or "", clean(s["idempotency_key"], 40),
                         clean(s["subject"], 40), clean(s["error"], 60)))
    print_table(out, t)
    tail = f"{len(shown)} shown" + (" (more match: raise --limit or narrow the filters)" if more else "")
    out.print(Text(f"{tail}; {total} dead letters in total. Details: mailpipe dlq show ID"))
    return EXIT_OK


@command
def run_show(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        admin.require_stream()
        dl = DeadLetters(admin.client, admin.keys).get(args.id)
    finally:
        admin.close()
    if dl is None:
        raise CommandError(f"no dead letter with id {args.id} in {admin.keys.dead_letters} "
                           "(replayed or purged already? see `mailpipe dlq list`)")
    now_ms = int(time.time() * 1000)
    if args.json:
        print_json({**summary(dl, now_ms), "traceback": dl.fields.get("dl_traceback", ""),
                    "email": email_summary(dl.fields), "fields": dl.fields})
        return EXIT_OK
    out = console()
    t = table("FIELD", "VALUE")
    t.add_row(*cells("id", dl.id))
    t.add_row(*cells("failed", f"{fmt_time_ms(dl.failed_ms)} ({fmt_duration_ms(now_ms - dl.failed_ms)} ago)"))
    for name in sorted(dl.fields):
        if name in ("email", "dl_traceback", "dl_failed_ms"):
            continue
        t.add_row(*cells(name, clean(dl.fields[name], 160)))
    email = email_summary(dl.fields)
    for name in ("subject", "from", "to", "date", "message_id", "size", "attachments"):
        if name in email:
            value = ", ".join(email[name]) if isinstance(email[name], list) else email[name]
            t.add_row(*cells(f"email.{name}", clean(value if value is not None else "", 160)))
    if email.get("unreadable"):
        t.add_row(*cells("email", "(missing or not valid JSON)"))
    print_table(out, t)
    traceback = dl.fields.get("dl_traceback", "")
    if traceback:
        out.print(Text("\ntraceback:", style="bold"))
        out.print(Text(traceback.rstrip()))
    return EXIT_OK


def _select(admin: Admin, args: argparse.Namespace) -> list[str]:
    """Ids chosen by ID arguments or --all + filters; fails on unknown ids or a contradictory choice."""
    if args.ids and args.all:
        raise usage_error("give dead-letter ids or --all, not both")
    if not args.ids and not args.all:
        raise usage_error("give dead-letter ids, or --all (optionally with filters)")
    if args.ids and _has_filters(args):
        raise usage_error("filters (--error-type, --reason, --group, --older-than, --newer-than) go with --all")
    dead = DeadLetters(admin.client, admin.keys)
    if args.all:
        return [dl.id for dl in dead.iter(_filter(args))]
    missing = [i for i in dict.fromkeys(args.ids) if dead.get(i) is None]
    if missing:
        raise CommandError(f"no dead letter with id {', '.join(missing)} (nothing changed)")
    return list(dict.fromkeys(args.ids))


@command
def run_replay(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        admin.require_stream()
        ids = _select(admin, args)
        if not ids:
            print("no dead letters match: nothing to replay")
            return EXIT_OK
        if args.all and not args.yes:
            return refuse_without_yes("replay these dead letters onto the stream", ids[:20], len(ids))
        moved = DeadLetters(admin.client, admin.keys).replay(ids)
    finally:
        admin.close()
    if args.json:
        print_json([{"dead_letter_id": a, "stream_id": b} for a, b in moved])
    else:
        out = console()
        for old, new in moved:
            out.print(Text(f"{old} -> {new}"))
        out.print(Text(f"replayed {len(moved)} dead letters onto {admin.keys.stream}, attempts reset; each goes "
                       "to the group that dead-lettered it"))
    if len(moved) < len(ids):
        print(f"mailpipe: {len(ids) - len(moved)} dead letters vanished meanwhile (replayed or purged by "
              "someone else)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


@command
def run_purge(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        admin.require_stream()
        ids = _select(admin, args)
        if not ids:
            print("no dead letters match: nothing to purge")
            return EXIT_OK
        if not args.yes:
            dead = DeadLetters(admin.client, admin.keys)
            preview = []
            for i in ids[:20]:
                dl = dead.get(i)
                if dl is not None:
                    preview.append(f"{dl.id}  {dl.reason}  {dl.error_type}  {dl.fields.get('idem', '')}")
            return refuse_without_yes("delete these dead letters for good", preview, len(ids))
        removed = DeadLetters(admin.client, admin.keys).purge(ids)
    finally:
        admin.close()
    if args.json:
        print_json({"purged": removed, "ids": ids})
    else:
        print(f"purged {removed} dead letters from {admin.keys.dead_letters}")
    return EXIT_OK
