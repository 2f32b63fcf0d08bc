"""``mailpipe consumers list|prune``: the consumers of each group, and removing dead ones safely.

Only consumers with **no** pending entries are removed: XGROUP DELCONSUMER throws away a consumer's
pending list, so the check and the delete run as one Lua script (``lua/prune_consumers.lua``). That is
always safe: a consumer without pending entries owns nothing, and a live worker removed by mistake is
recreated by its next read. A dead consumer that still holds entries is left alone: live workers take
its entries over (XAUTOCLAIM) once they are idle longer than the reclaim idle time; prune it after.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from mailpipe.cli import EXIT_OK
from mailpipe.cli.pending import idle_ms_arg
from mailpipe.cli.support import (
    Admin,
    cells,
    command,
    console,
    fmt_duration_ms,
    leaf_parser,
    open_admin,
    print_json,
    print_table,
    refuse_without_yes,
    table,
)
from mailpipe.scripts import source

# A worker reads at least every block_ms (2 s by default); an hour of silence is a dead process.
DEFAULT_PRUNE_IDLE_MS = 3_600_000


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "consumers", help="list consumers per group; prune dead ones that hold no entries",
        description="List the consumers of each group, or remove dead ones that have no pending entries.")
    actions = parser.add_subparsers(dest="consumers_action", metavar="ACTION", required=True)
    p = leaf_parser(actions, "list", "consumers of each group: pending entries, idle time, live or gone",
                    "mailpipe consumers list", "mailpipe consumers list --group workers --json")
    p.add_argument("--group", help="only this group (default: every group)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)
    p = leaf_parser(actions, "prune", "remove consumers idle for long that have no pending entries",
                    "mailpipe consumers prune                   # show what would be removed",
                    "mailpipe consumers prune --idle-ms 1h --yes")
    p.add_argument("--group", help="only this group (default: every group)")
    p.add_argument("--idle-ms", type=idle_ms_arg, default=DEFAULT_PRUNE_IDLE_MS, metavar="MS",
                   help="remove consumers idle at least this long (ms or a duration, default 1h)")
    p.add_argument("--yes", action="store_true", help="do it (without: print what would happen, exit 2)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_prune)


def _groups(admin: Admin, group: str | None) -> list[str]:
    if group is not None:
        return [admin.resolve_group(group)]
    admin.require_stream()
    return admin.groups()


def read(admin: Admin, groups: list[str]) -> list[dict[str, Any]]:
    live_ms = admin.settings.reclaim_idle_ms
    rows = []
    for group in groups:
        for c in admin.client.xinfo_consumers(admin.keys.stream, group):
            idle, pending = int(c["idle"]), int(c["pending"])
            inactive = c.get("inactive")  # Redis 7.2+: since the last successful read/claim
            rows.append({"group": group, "name": str(c["name"]), "pending": pending, "idle_ms": idle,
                         "inactive_ms": None if inactive is None else int(inactive), "live": idle < live_ms})
    return rows


def _state(row: dict[str, Any]) -> str:
    if row["live"]:
        return "live"
    return f"gone, {row['pending']} entries wait for reclaim" if row["pending"] else "gone"


@command
def run_list(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        rows = read(admin, _groups(admin, args.group))
    finally:
        admin.close()
    if args.json:
        print_json(rows)
        return EXIT_OK
    out = console()
    if not rows:
        out.print(Text("no consumers (no worker has read from this stream yet)"))
        return EXIT_OK
    t = table("GROUP", "CONSUMER", "PENDING", "IDLE", "STATE", right=("PENDING", "IDLE"))
    for row in rows:
        t.add_row(*cells(row["group"], row["name"], row["pending"], fmt_duration_ms(row["idle_ms"]), _state(row)))
    print_table(out, t)
    out.print(Text(f"live = talked to Redis within the reclaim idle time "
                   f"({fmt_duration_ms(admin.settings.reclaim_idle_ms)}, MAILPIPE_RECLAIM_IDLE_MS)"))
    return EXIT_OK


@command
def run_prune(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        groups = _groups(admin, args.group)
        rows = read(admin, groups)
        idle = [r for r in rows if r["idle_ms"] >= args.idle_ms]
        candidates = [r for r in idle if r["pending"] == 0]
        kept = [r for r in idle if r["pending"] > 0]
        if not args.yes:
            if not candidates:
                _report_kept(kept, args.json)
                if not args.json:
                    print(f"no consumer idle for {fmt_duration_ms(args.idle_ms)} without pending entries: "
                          "nothing to prune")
                else:
                    print_json({"removed": [], "kept": kept})
                return EXIT_OK
            _report_kept(kept, args.json)
            return refuse_without_yes(
                "remove these consumers", [f"{r['group']}/{r['name']} (idle {fmt_duration_ms(r['idle_ms'])})"
                                           for r in candidates], len(candidates))
        script = admin.client.register_script(source("prune_consumers"))
        removed: list[dict[str, str]] = []
        for group in groups:
            # "" as the protected name: this command is no consumer itself
            names = script(keys=[admin.keys.stream], args=[group, args.idle_ms, ""])
            removed += [{"group": group, "name": str(n)} for n in names]
    finally:
        admin.close()
    if args.json:
        print_json({"removed": removed, "kept": kept})
        return EXIT_OK
    _report_kept(kept, False)
    for r in removed:
        print(f"removed {r['group']}/{r['name']}")
    print(f"removed {len(removed)} consumers")
    return EXIT_OK


def _report_kept(kept: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        return
    for r in kept:
        print(f"kept {r['group']}/{r['name']}: idle {fmt_duration_ms(r['idle_ms'])} but {r['pending']} pending "
              "entries; live workers reclaim them after the reclaim idle time, then prune again")
