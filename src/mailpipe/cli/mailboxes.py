"""Producer state per mailbox as the admin commands see it: the checkpoint hash and the lease.

The producer owns both (``mailpipe.producer.checkpoint`` / ``.lease``); this module only reads them,
and changes a checkpoint through ``lua/checkpoint_admin.lua``, which refuses while a lease is held.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis

from mailpipe.keys import Keys
from mailpipe.scripts import source

# Every field of the producer's checkpoint hash (see mailpipe.producer.checkpoint), all integers.
CHECKPOINT_FIELDS = ("uidvalidity", "last_uid", "acted_uid", "floor_ms", "floor_uid", "synced_ms",
                     "uv_changes", "updated_ms")


@dataclass
class MailboxState:
    account: str
    mailbox: str
    checkpoint: dict[str, int] | None  # None: no checkpoint (never synced, or reset)
    lease_owner: str | None  # None: no producer holds the mailbox
    lease_ttl_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "mailbox": self.mailbox, "checkpoint": self.checkpoint,
                "lease": None if self.lease_owner is None else {"owner": self.lease_owner,
                                                                 "ttl_ms": self.lease_ttl_ms}}


def _split(key: str, prefix: str) -> tuple[str, str] | None:
    rest = key[len(prefix):] if key.startswith(prefix) else ""
    account, sep, mailbox = rest.partition(":")  # ':' inside names is percent-encoded by Keys
    if not sep or not account:
        return None
    return unquote(account), unquote(mailbox)


def read_mailboxes(client: redis.Redis, keys: Keys, *, account: str | None = None,
                   mailbox: str | None = None) -> list[MailboxState]:
    """Every mailbox with a checkpoint or a lease, optionally only one account and/or mailbox."""
    found: set[tuple[str, str]] = set()
    for pattern in (keys.checkpoint_pattern(), keys.lease_pattern()):
        prefix = pattern[:-1]
        for key in client.scan_iter(match=pattern, count=1000):
            names = _split(str(key), prefix)
            if names is not None:
                found.add(names)
    if account is not None and mailbox is not None:
        found.add((account, mailbox))  # asked for by name: shown even when it has no state
    chosen = sorted((a, m) for a, m in found
                    if (account is None or a == account) and (mailbox is None or m == mailbox))
    if not chosen:
        return []
    pipe = client.pipeline(transaction=False)
    for a, m in chosen:
        pipe.hgetall(keys.checkpoint(a, m))
        pipe.get(keys.lease(a, m))
        pipe.pttl(keys.lease(a, m))
    replies = iter(pipe.execute(raise_on_error=False))
    result = []
    for a, m in chosen:
        raw, owner, ttl = next(replies), next(replies), next(replies)
        checkpoint = _checkpoint(raw) if isinstance(raw, dict) and raw else None
        owner_text = None if owner is None or isinstance(owner, Exception) else str(owner)
        ttl_ms = int(ttl) if owner_text is not None and isinstance(ttl, int) and ttl >= 0 else None
        result.append(MailboxState(a, m, checkpoint, owner_text, ttl_ms))
    return result


def _checkpoint(raw: dict[Any, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in raw.items():
        try:
            out[str(name)] = int(value)
        except (TypeError, ValueError):
            continue  # a field another version added that is not a number: not ours to judge
    return out


@dataclass(frozen=True)
class ChangeResult:
    status: str  # ok | leased | no_checkpoint
    owner: str = ""
    ttl_ms: int = -1
    before: dict[str, int] | None = None


def change_checkpoint(client: redis.Redis, keys: Keys, account: str, mailbox: str, *, op: str,
                      fields: dict[str, int] | None = None, force: bool = False) -> ChangeResult:
    """``op`` "set" (update ``fields``) or "reset" (delete), atomically refused while a lease is held."""
    script = client.register_script(source("checkpoint_admin"))
    pairs = [str(x) for item in (fields or {}).items() for x in item]
    reply = script(keys=[keys.checkpoint(account, mailbox), keys.lease(account, mailbox)],
                   args=["1" if force else "0", op, int(time.time() * 1000), *pairs])
    status, owner, ttl, before = str(reply[0]), str(reply[1]), int(reply[2]), reply[3]
    flat = [str(x) for x in before]
    previous = _checkpoint(dict(zip(flat[::2], flat[1::2], strict=True))) if flat else None
    return ChangeResult(status, owner, ttl, previous)
