"""``mailpipe status``: one screen answering "is mail flowing, what is stuck, what failed".

Read in a few round trips whatever the stream's size (the exporter's snapshot reader plus one pipeline
for leases). Lag is the number of entries after the group's last-delivered id, not XINFO's ``lag``
alone, which Redis 7.0 over-reports forever after an AOF rewrite and a restart.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from rich.text import Text

from mailpipe.cli import EXIT_FAILURE, EXIT_OK
from mailpipe.cli.mailboxes import MailboxState, read_mailboxes
from mailpipe.cli.support import (
    Admin,
    cells,
    command,
    console,
    fmt_duration_ms,
    id_ms,
    leaf_parser,
    open_admin,
    print_json,
    print_table,
    table,
)
from mailpipe.stream_state import GroupState, PipelineState, StateOptions, StreamStateReader


@dataclass(frozen=True)
class Finding:
    level: str  # warn: needs action | info: worth knowing
    text: str


def register(sub: Any) -> None:
    p = leaf_parser(sub, "status", "one screen: stream, groups, lag, pending, consumers, retries, dead letters, "
                    "breaker, producer checkpoints and leases",
                    "mailpipe status", "mailpipe status --group workers", "mailpipe status --json",
                    "mailpipe status --check    # exit 1 when something needs attention (for cron/monitoring)")
    p.add_argument("--group", help="only this consumer group (default: every group)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--check", action="store_true", help="exit 1 if any finding needs attention")
    p.set_defaults(func=run)


def read(admin: Admin, group: str | None) -> tuple[PipelineState, list[MailboxState]]:
    admin.require_stream()
    if group is not None:
        admin.resolve_group(group)
    options = StateOptions(groups=(group,) if group else (), pending_sample=1000, max_consumers=10_000,
                           live_consumer_idle_s=admin.settings.reclaim_idle_ms / 1000, checkpoint_rescan_s=0)
    state = StreamStateReader(admin.client, admin.keys, options).read()
    return state, read_mailboxes(admin.client, admin.keys)


def live_consumers(g: GroupState, live_ms: int) -> int:
    return sum(1 for c in g.consumer_list if c.idle_ms < live_ms)


def findings(state: PipelineState, mailboxes: list[MailboxState], live_ms: int) -> list[Finding]:
    out: list[Finding] = []
    now = state.now_ms
    for g in state.groups:
        busy = g.undelivered or g.pending or g.retry_scheduled
        if busy and live_consumers(g, live_ms) == 0:
            out.append(Finding("warn", f"group {g.name}: no live consumer (none talked to Redis in the last "
                                       f"{fmt_duration_ms(live_ms)}) while work waits: start workers"))
        if g.breaker_state in ("open", "half_open"):
            since = f" for {fmt_duration_ms(now - g.breaker_opened_at_ms)}" if g.breaker_opened_at_ms else ""
            out.append(Finding("warn", f"group {g.name}: circuit breaker {g.breaker_state}{since}: the downstream "
                                       "fails, workers take no new mail (runbook MailpipeCircuitBreakerOpen)"))
        if g.pending and g.max_idle_ms_seen >= live_ms:
            out.append(Finding("warn", f"group {g.name}: pending entries idle for {fmt_duration_ms(g.max_idle_ms_seen)}"
                                       f": their consumer is gone or stuck (mailpipe pending --group {g.name} "
                                       f"--min-idle {live_ms})"))
        if g.retry_due and g.breaker_state in (None, "closed"):
            out.append(Finding("warn", f"group {g.name}: {g.retry_due} retries are overdue: no worker of the "
                                       "group runs housekeeping"))
    if state.dead_letters.length:
        out.append(Finding("info", f"{state.dead_letters.length} dead letters: mailpipe dlq list"))
    for mb in mailboxes:
        if mb.checkpoint is not None and mb.lease_owner is None:
            out.append(Finding("info", f"mailbox {mb.account}/{mb.mailbox}: no producer holds its lease "
                                       "(producer stopped?)"))
    if state.redis.maxmemory_policy and state.redis.maxmemory_policy != "noeviction":
        out.append(Finding("warn", f"Redis maxmemory-policy is {state.redis.maxmemory_policy}: under memory "
                                   "pressure it may evict mail; set noeviction"))
    if not state.redis.aof_enabled:
        out.append(Finding("info", "Redis runs without appendonly: a restart loses recent mail"))
    return out


def as_json(admin: Admin, state: PipelineState, mailboxes: list[MailboxState], live_ms: int) -> dict[str, Any]:
    now = state.now_ms
    groups = []
    for g in state.groups:
        d = asdict(g)
        d.pop("consumer_list")
        d["consumers"] = [{"name": c.name, "pending": c.pending, "idle_ms": c.idle_ms,
                           "live": c.idle_ms < live_ms} for c in g.consumer_list]
        d["consumer_count"] = g.consumers
        d["live_consumers"] = live_consumers(g, live_ms)
        d["oldest_pending_age_ms"] = now - id_ms(g.oldest_pending_id) if g.oldest_pending_id else None
        d["oldest_undelivered_age_ms"] = (now - id_ms(g.first_undelivered_id)
                                          if g.first_undelivered_id else None)
        d["next_retry_in_ms"] = g.retry_oldest_due_ms - now if g.retry_oldest_due_ms is not None else None
        groups.append(d)
    return {
        "now_ms": now, "namespace": admin.keys.namespace, "stream_name": admin.keys.stream_name,
        "stream": {"key": admin.keys.stream, **asdict(state.stream),
                   "last_entry_age_ms": now - id_ms(state.stream.last_id) if state.stream.length else None},
        "dead_letters": {"key": admin.keys.dead_letters, **asdict(state.dead_letters),
                         "newest_age_ms": (now - id_ms(state.dead_letters.last_id)
                                           if state.dead_letters.length else None)},
        "groups": groups,
        "mailboxes": [mb.as_dict() for mb in mailboxes],
        "memory": state.memory, "redis": asdict(state.redis),
        "findings": [asdict(f) for f in findings(state, mailboxes, live_ms)],
    }


@command
def run(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        state, mailboxes = read(admin, args.group)
    finally:
        admin.close()
    live_ms = admin.settings.reclaim_idle_ms
    found = findings(state, mailboxes, live_ms)
    if args.json:
        print_json(as_json(admin, state, mailboxes, live_ms))
    else:
        render(admin, state, mailboxes, found, live_ms)
    if args.check and any(f.level == "warn" for f in found):
        return EXIT_FAILURE
    return EXIT_OK


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def render(admin: Admin, state: PipelineState, mailboxes: list[MailboxState], found: list[Finding],
           live_ms: int) -> None:
    out, now = console(), state.now_ms
    r = state.redis
    maxmem = _size(r.maxmemory) if r.maxmemory else "no limit"
    out.print(Text(f"pipeline {admin.keys.prefix}   Redis {r.version}, {_size(r.used_memory)} used of {maxmem}, "
                   f"policy {r.maxmemory_policy or '?'}, AOF {'on' if r.aof_enabled else 'off'}"))
    s, d = state.stream, state.dead_letters
    last = f", newest {fmt_duration_ms(now - id_ms(s.last_id))} ago" if s.length else ""
    newest_dead = f", newest {fmt_duration_ms(now - id_ms(d.last_id))} ago" if d.length else ""
    out.print(Text(f"stream {s.length} entries ({_size(state.memory.get('stream', 0))}){last}   "
                   f"dead letters {d.length}{newest_dead}"))
    out.print()
    t = table("GROUP", "CONSUMERS", "LIVE", "UNDELIVERED", "OLDEST UNDELIVERED", "PENDING", "OLDEST PENDING",
              "MAX IDLE", "RETRIES", "DUE", "NEXT RETRY", "BREAKER", "DONE KEYS",
              right=("CONSUMERS", "LIVE", "UNDELIVERED", "OLDEST UNDELIVERED", "PENDING", "OLDEST PENDING",
                     "MAX IDLE", "RETRIES", "DUE", "NEXT RETRY", "DONE KEYS"))
    for g in state.groups:
        next_retry = "-"
        if g.retry_oldest_due_ms is not None:
            delta = g.retry_oldest_due_ms - now
            next_retry = f"in {fmt_duration_ms(delta)}" if delta > 0 else f"{fmt_duration_ms(-delta)} late"
        t.add_row(*cells(
            g.name, g.consumers, live_consumers(g, live_ms), g.undelivered,
            fmt_duration_ms(now - id_ms(g.first_undelivered_id)) if g.first_undelivered_id else "-",
            g.pending, fmt_duration_ms(now - id_ms(g.oldest_pending_id)) if g.oldest_pending_id else "-",
            fmt_duration_ms(g.max_idle_ms_seen) if g.pending else "-", g.retry_scheduled, g.retry_due,
            next_retry, g.breaker_state or "closed", g.dedup_keys))
    if state.groups:
        print_table(out, t)
    else:
        out.print(Text("no consumer group yet: no worker has started on this stream"))
    for g in state.groups:
        if not g.consumer_list:
            continue
        out.print()
        ct = table("CONSUMER", "PENDING", "IDLE", "STATE", title=f"consumers of {g.name}",
                   right=("PENDING", "IDLE"))
        for c in g.consumer_list:
            ct.add_row(*cells(c.name, c.pending, fmt_duration_ms(c.idle_ms), "live" if c.idle_ms < live_ms else
                              ("gone, entries wait for reclaim" if c.pending else "gone")))
        print_table(out, ct)
    if mailboxes:
        out.print()
        mt = table("ACCOUNT", "MAILBOX", "UIDVALIDITY", "LAST UID", "SYNCED", "LEASE OWNER", "LEASE TTL",
                   title="producer checkpoints", right=("UIDVALIDITY", "LAST UID", "SYNCED", "LEASE TTL"))
        for mb in mailboxes:
            cp = mb.checkpoint or {}
            synced = cp.get("synced_ms") or cp.get("updated_ms")
            mt.add_row(*cells(mb.account, mb.mailbox, cp.get("uidvalidity", "-"), cp.get("last_uid", "-"),
                              f"{fmt_duration_ms(now - synced)} ago" if synced else "-", mb.lease_owner or "-",
                              fmt_duration_ms(mb.lease_ttl_ms) if mb.lease_ttl_ms is not None else "-"))
        print_table(out, mt)
    out.print()
    if not found:
        out.print(Text("all clear: nothing needs attention"))
    for f in found:
        out.print(Text(("! " if f.level == "warn" else "- ") + f.text,
                       style="bold red" if f.level == "warn" else ""))
