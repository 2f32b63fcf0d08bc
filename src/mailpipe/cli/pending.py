"""``mailpipe pending``: entries delivered to a group but not yet settled, with who holds them and for how long.

An entry stays pending while its handler runs, and after its worker died until a live worker reclaims
it (XAUTOCLAIM after the reclaim idle time). Delivery counts above one mean it was reclaimed or
redelivered before; at the poison limit it is dead-lettered.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.text import Text

from mailpipe.cli import EXIT_OK
from mailpipe.cli.support import (
    Admin,
    CommandError,
    cells,
    clean,
    command,
    console,
    fmt_duration_ms,
    id_ms,
    leaf_parser,
    open_admin,
    parse_duration,
    print_json,
    print_table,
    table,
    usage_error,
)


def idle_ms_arg(text: str) -> int:
    """Milliseconds: a plain integer is ms (as in XPENDING), or a duration with a unit (90s, 5m)."""
    if text.strip().isdigit():
        return int(text)
    return int(parse_duration(text) * 1000)


def register(sub: Any) -> None:
    p = leaf_parser(sub, "pending", "list entries delivered but not settled: consumer, idle time, deliveries",
                    "mailpipe pending", "mailpipe pending --group workers --min-idle 5m",
                    "mailpipe pending --consumer worker-1 --json")
    p.add_argument("--group", help="consumer group (default: the stream's only group)")
    p.add_argument("--consumer", help="only entries pending on this consumer")
    p.add_argument("--min-idle", type=idle_ms_arg, default=0, metavar="MS",
                   help="only entries idle at least this long (ms, or a duration such as 5m)")
    p.add_argument("--limit", type=int, default=100, help="show at most N, oldest first (default 100)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def read(admin: Admin, group: str, *, consumer: str | None, min_idle_ms: int, limit: int) -> list[dict[str, Any]]:
    stream = admin.keys.stream
    kwargs: dict[str, Any] = {"consumername": consumer} if consumer else {}
    if min_idle_ms:
        kwargs["idle"] = min_idle_ms
    items = admin.client.xpending_range(stream, group, "-", "+", limit, **kwargs)
    pipe = admin.client.pipeline(transaction=False)
    for item in items:
        pipe.xrange(stream, item["message_id"], item["message_id"])
    payloads = pipe.execute()
    rows = []
    for item, found in zip(items, payloads, strict=True):
        fields: dict[str, str] = found[0][1] if found else {}
        rows.append({
            "id": str(item["message_id"]), "consumer": str(item["consumer"]),
            "idle_ms": int(item["time_since_delivered"]), "deliveries": int(item["times_delivered"]),
            "enqueued_age_ms": None, "payload": bool(found),
            "idempotency_key": fields.get("idem", ""), "attempt": fields.get("attempt", ""),
            "subject": _subject(fields),
        })
    return rows


def _subject(fields: dict[str, str]) -> str:
    try:
        doc = json.loads(fields.get("email") or "{}")
    except ValueError:
        return ""
    return str(doc.get("subject") or "") if isinstance(doc, dict) else ""


@command
def run(args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise usage_error("--limit must be > 0")
    admin = open_admin(args)
    try:
        group = admin.resolve_group(args.group)
        if args.consumer:
            names = [str(c["name"]) for c in admin.client.xinfo_consumers(admin.keys.stream, group)]
            if args.consumer not in names:
                raise CommandError(f"no consumer {args.consumer!r} in group {group}; consumers: "
                                   f"{', '.join(names) or 'none'}")
        summary = admin.client.xpending(admin.keys.stream, group)
        rows = read(admin, group, consumer=args.consumer, min_idle_ms=args.min_idle, limit=args.limit)
        seconds, micros = admin.client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000  # Redis' clock, the one that stamped the ids
    finally:
        admin.close()
    for row in rows:
        row["enqueued_age_ms"] = max(0, now_ms - id_ms(row["id"]))
    total = int(summary["pending"])
    if args.json:
        print_json({"group": group, "total_pending": total,
                    "per_consumer": {str(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []},
                    "entries": rows})
        return EXIT_OK
    out = console()
    if not rows:
        what = "matching" if args.consumer or args.min_idle else "in"
        out.print(Text(f"no pending entries {what} group {group} ({total} pending in total)"))
        return EXIT_OK
    t = table("ID", "ENQUEUED", "CONSUMER", "IDLE", "DELIVERIES", "ATTEMPT", "IDEMPOTENCY KEY", "SUBJECT",
              right=("ENQUEUED", "IDLE", "DELIVERIES", "ATTEMPT"))
    for row in rows:
        subject = clean(row["subject"], 50) if row["payload"] else "(payload deleted: dropped at next reclaim)"
        t.add_row(*cells(row["id"], fmt_duration_ms(row["enqueued_age_ms"]) + " ago", row["consumer"],
                         fmt_duration_ms(row["idle_ms"]), row["deliveries"], row["attempt"],
                         clean(row["idempotency_key"], 40), subject))
    print_table(out, t)
    per = ", ".join(f"{c['name']} {c['pending']}" for c in summary.get("consumers") or [])
    out.print(Text(f"{len(rows)} shown of {total} pending in group {group} ({per}). Entries idle longer than the "
                   "reclaim idle time are taken over by live workers."))
    return EXIT_OK
