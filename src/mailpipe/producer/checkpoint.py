"""The sync state of one (account, mailbox): a Redis hash, changed only by Lua scripts under the lease.

Fields::

    uidvalidity   the mailbox's UIDVALIDITY the UIDs below refer to
    last_uid      every message with a UID <= this is published (or deliberately skipped)
    acted_uid     the post-publish action (flag/move) is done up to this UID
    floor_ms      INTERNALDATE lower bound (Unix ms, 0 = none) for messages with UID < floor_uid:
                  the start point "since:DATE", and the window re-checked after a UIDVALIDITY change
    floor_uid     UIDNEXT when the floor was set; mail arriving later is published whatever its date
    synced_ms     end of the last complete pass
    uv_changes    how many UIDVALIDITY changes were seen
    updated_ms    last write

``last_uid`` only ever moves together with the publish of that UID (``publish.lua``), so a crash at
any point loses nothing and publishes nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from mailpipe.keys import Keys
from mailpipe.producer.errors import CheckpointMoved, LeaseLost
from mailpipe.producer.lease import Lease, lua_source


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int
    acted_uid: int = 0
    floor_ms: int = 0
    floor_uid: int = 0
    synced_ms: int = 0
    uv_changes: int = 0
    updated_ms: int = 0

    @classmethod
    def from_hash(cls, data: Mapping[Any, Any]) -> Checkpoint | None:
        values = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in data.items()}
        if "uidvalidity" not in values:
            return None
        names = cls.__dataclass_fields__
        return cls(**{k: int(v) for k, v in values.items() if k in names})

    def fields(self) -> list[str]:
        return [str(x) for pair in asdict(self).items() for x in pair]


class CheckpointStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._script: Any = client.register_script(lua_source("checkpoint"))

    def get(self, account: str, mailbox: str) -> Checkpoint | None:
        return Checkpoint.from_hash(self.client.hgetall(self.keys.checkpoint(account, mailbox)))

    def reset(self, account: str, mailbox: str, checkpoint: Checkpoint, *, expected: int | None,
              lease: Lease | None) -> None:
        """Replace the checkpoint if it still has UIDVALIDITY ``expected`` (None: if there is none)."""
        self._run(account, mailbox, "reset", expected, checkpoint.fields(), lease)

    def update(self, account: str, mailbox: str, uidvalidity: int, lease: Lease | None, **fields: int) -> None:
        """Set some fields if the checkpoint still has ``uidvalidity``."""
        pairs = [str(x) for pair in fields.items() for x in pair]
        self._run(account, mailbox, "set", uidvalidity, pairs, lease)

    def _run(self, account: str, mailbox: str, op: str, expected: int | None, pairs: list[str],
             lease: Lease | None) -> None:
        key = self.keys.checkpoint(account, mailbox)
        lease_key = lease.key if lease else self.keys.lease(account, mailbox)
        token, ttl = (lease.token, lease.ttl_ms) if lease else ("", 0)
        status, detail = self._script(
            keys=[key, lease_key], args=[op, token, ttl, "" if expected is None else expected, *pairs]
        )
        status = status.decode() if isinstance(status, bytes) else status
        if status == "lease_lost":
            raise LeaseLost(f"lease of {account}/{mailbox} was lost")
        if status == "moved":
            raise CheckpointMoved(f"checkpoint of {account}/{mailbox} changed under us (UIDVALIDITY {detail!r})")
        if lease:
            lease.touched()

    def delete(self, account: str, mailbox: str) -> bool:
        return bool(self.client.delete(self.keys.checkpoint(account, mailbox)))
