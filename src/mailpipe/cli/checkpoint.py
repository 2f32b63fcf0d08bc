"""``mailpipe checkpoint show|set|reset``: inspect or deliberately move a producer's mailbox checkpoint.

The checkpoint says "every message with a UID <= last_uid is handled". ``set --uid N`` makes the producer
continue with UID N+1 (skip ahead past a bad range, or go back to pick up mail a start point skipped);
``reset`` deletes it, so the next pass places the start point again (MAILPIPE_START: new, all, since:DATE).
Mail the producer published before is never published twice (its published set), so going back only
picks up mail that was not published; to *reprocess* mail use ``mailpipe replay``.

Both refuse while a producer holds the mailbox lease (stop it first): a running producer keeps its
position in memory and would overwrite the change. ``--force`` overrides that, atomically checked.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from mailpipe.cli import EXIT_OK
from mailpipe.cli.mailboxes import MailboxState, change_checkpoint, read_mailboxes
from mailpipe.cli.support import (
    Admin,
    CommandError,
    cells,
    command,
    console,
    fmt_duration_ms,
    fmt_time_ms,
    leaf_parser,
    open_admin,
    print_json,
    print_table,
    refuse_without_yes,
    table,
    usage_error,
)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "checkpoint", help="show, set or reset a producer mailbox checkpoint",
        description=__doc__.splitlines()[0] if __doc__ else None)
    actions = parser.add_subparsers(dest="checkpoint_action", metavar="ACTION", required=True)

    p = leaf_parser(actions, "show", "checkpoints per mailbox with their lease (which producer holds it)",
                    "mailpipe checkpoint show", "mailpipe checkpoint show --account me@example.com --json")
    p.add_argument("--account", help="only this account")
    p.add_argument("--mailbox", help="only this mailbox")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_show)

    p = leaf_parser(actions, "set", "move a checkpoint: the producer continues with UID N+1",
                    "mailpipe checkpoint set --account me@example.com --mailbox INBOX --uid 1200 --yes",
                    "mailpipe checkpoint set --account me@example.com --mailbox INBOX --uid 0 --uidvalidity 7 --yes")
    _target(p)
    p.add_argument("--uid", type=int, required=True, metavar="N",
                   help="UIDs <= N count as handled; the producer fetches from N+1 (0: the whole mailbox)")
    p.add_argument("--uidvalidity", type=int, metavar="V",
                   help="UIDVALIDITY the UID refers to (default: keep the checkpoint's; required if none)")
    p.set_defaults(func=run_set)

    p = leaf_parser(actions, "reset", "delete a checkpoint: the next pass places the start point again "
                    "(MAILPIPE_START)",
                    "mailpipe checkpoint reset --account me@example.com --mailbox INBOX --yes")
    _target(p)
    p.set_defaults(func=run_reset)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", required=True, help="the account (as shown by `checkpoint show`)")
    p.add_argument("--mailbox", required=True, help="the mailbox, e.g. INBOX")
    p.add_argument("--force", action="store_true", help="change it even while a producer holds the lease")
    p.add_argument("--yes", action="store_true", help="do it (without: print what would happen, exit 2)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _describe(cp: dict[str, int] | None) -> str:
    if not cp:
        return "no checkpoint"
    parts = [f"uidvalidity={cp.get('uidvalidity', '?')}", f"last_uid={cp.get('last_uid', '?')}"]
    if cp.get("floor_ms"):
        parts.append(f"date floor {fmt_time_ms(cp['floor_ms'])} below UID {cp.get('floor_uid', 0)}")
    return " ".join(parts)


def _current(admin: Admin, account: str, mailbox: str) -> MailboxState:
    found = read_mailboxes(admin.client, admin.keys, account=account, mailbox=mailbox)
    return found[0] if found else MailboxState(account, mailbox, None, None, None)


def _lease_refusal(mb: MailboxState | None, owner: str, ttl_ms: int) -> CommandError:
    where = f"{mb.account}/{mb.mailbox}" if mb else "the mailbox"
    return CommandError(f"refusing: a producer holds the lease of {where} (owner {owner}, expires in "
                        f"{fmt_duration_ms(ttl_ms)}); stop it first (scripts/stop-producer.sh) or pass --force")


@command
def run_show(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        rows = read_mailboxes(admin.client, admin.keys, account=args.account, mailbox=args.mailbox)
        seconds, micros = admin.client.time()
    finally:
        admin.close()
    now = int(seconds) * 1000 + int(micros) // 1000
    if args.json:
        print_json([r.as_dict() for r in rows])
        return EXIT_OK
    out = console()
    if not rows:
        out.print(Text("no producer checkpoints (no mailbox has been synced into this pipeline)"))
        return EXIT_OK
    t = table("ACCOUNT", "MAILBOX", "UIDVALIDITY", "LAST UID", "ACTED UID", "DATE FLOOR", "SYNCED", "LEASE OWNER",
              "LEASE TTL", right=("UIDVALIDITY", "LAST UID", "ACTED UID", "SYNCED", "LEASE TTL"))
    for r in rows:
        cp = r.checkpoint or {}
        synced = cp.get("synced_ms") or cp.get("updated_ms")
        floor = f"{fmt_time_ms(cp['floor_ms'])} < UID {cp.get('floor_uid', 0)}" if cp.get("floor_ms") else "-"
        t.add_row(*cells(r.account, r.mailbox, cp.get("uidvalidity", "-"), cp.get("last_uid", "-"),
                         cp.get("acted_uid", "-"), floor, f"{fmt_duration_ms(now - synced)} ago" if synced else "-",
                         r.lease_owner or "-",
                         fmt_duration_ms(r.lease_ttl_ms) if r.lease_ttl_ms is not None else "-"))
    print_table(out, t)
    return EXIT_OK


@command
def run_set(args: argparse.Namespace) -> int:
    if args.uid < 0:
        raise usage_error("--uid must be >= 0")
    if args.uidvalidity is not None and args.uidvalidity <= 0:
        raise usage_error("--uidvalidity must be > 0")
    # last_uid and acted_uid together: UIDs <= N are handled, post-actions included (never flag or move
    # mail that was skipped); the date floor goes, so an explicit UID means exactly that.
    fields = {"last_uid": args.uid, "acted_uid": args.uid, "floor_ms": 0, "floor_uid": 0}
    if args.uidvalidity is not None:
        fields["uidvalidity"] = args.uidvalidity
    admin = open_admin(args)
    try:
        mb = _current(admin, args.account, args.mailbox)
        if mb.checkpoint is None and args.uidvalidity is None:
            raise usage_error(f"{args.account}/{args.mailbox} has no checkpoint yet: pass --uidvalidity "
                              "(the mailbox's UIDVALIDITY, as the IMAP server reports it)")
        after = {**(mb.checkpoint or {}), **fields}
        plan = f"{args.account}/{args.mailbox}: {_describe(mb.checkpoint)} -> {_describe(after)}"
        if mb.lease_owner and not args.force:
            raise _lease_refusal(mb, mb.lease_owner, mb.lease_ttl_ms or 0)
        if not args.yes:
            return refuse_without_yes("change this checkpoint", [plan], 1)
        result = change_checkpoint(admin.client, admin.keys, args.account, args.mailbox, op="set",
                                   fields=fields, force=args.force)
    finally:
        admin.close()
    if result.status == "leased":
        raise _lease_refusal(mb, result.owner, result.ttl_ms)
    if result.status == "no_checkpoint":
        raise CommandError(f"{args.account}/{args.mailbox}: the checkpoint vanished meanwhile; pass --uidvalidity")
    if args.json:
        print_json({"account": args.account, "mailbox": args.mailbox, "before": result.before, "set": fields})
    else:
        print(f"checkpoint {plan}")
        print(f"the producer continues with UID {args.uid + 1} at its next pass; mail it published before is "
              "not published again")
    return EXIT_OK


@command
def run_reset(args: argparse.Namespace) -> int:
    admin = open_admin(args)
    try:
        mb = _current(admin, args.account, args.mailbox)
        if mb.checkpoint is None:
            raise CommandError(f"{args.account}/{args.mailbox} has no checkpoint (see `mailpipe checkpoint show`)")
        if mb.lease_owner and not args.force:
            raise _lease_refusal(mb, mb.lease_owner, mb.lease_ttl_ms or 0)
        plan = f"{args.account}/{args.mailbox}: delete {_describe(mb.checkpoint)}"
        if not args.yes:
            return refuse_without_yes("reset this checkpoint", [plan], 1)
        result = change_checkpoint(admin.client, admin.keys, args.account, args.mailbox, op="reset",
                                   force=args.force)
    finally:
        admin.close()
    if result.status == "leased":
        raise _lease_refusal(mb, result.owner, result.ttl_ms)
    if args.json:
        print_json({"account": args.account, "mailbox": args.mailbox, "before": result.before, "reset": True})
    else:
        print(f"checkpoint {plan}")
        print("the next producer pass places the start point again (MAILPIPE_START: new, all or since:DATE)")
    return EXIT_OK
