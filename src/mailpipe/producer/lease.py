"""One active producer per (account, mailbox): a Redis lease with a TTL, renewed while alive.

``SET NX PX`` takes it; a Lua script renews or releases it only if it is still ours, so a producer that
stalled past the TTL can never extend or delete a lease another producer has taken since. A producer
killed with SIGKILL holds it at most one TTL. Every publish also checks the token (``publish.lua``),
so even a producer that has not noticed it lost the lease cannot publish: the lease is a fence.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from functools import cache
from importlib import resources
from typing import Any

import redis

from mailpipe.keys import Keys
from mailpipe.producer.errors import LeaseLost


@cache
def lua_source(name: str) -> str:
    return resources.files("mailpipe").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


def owner_name() -> str:
    """Who holds a lease, for humans: host, pid and a random part (unique per acquisition)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Lease:
    def __init__(self, client: redis.Redis, keys: Keys, account: str, mailbox: str, ttl_s: float) -> None:
        self.client = client
        self.key = keys.lease(account, mailbox)
        self.ttl_ms = int(ttl_s * 1000)
        self.token = owner_name()
        self._script: Any = client.register_script(lua_source("lease"))
        self._renewed_at = 0.0
        self.held = False

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; True if it is ours now."""
        if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            self.held = True
            self._renewed_at = time.monotonic()
        return self.held

    def renew(self) -> None:
        """Extend the lease; raises :class:`LeaseLost` if it expired and someone else took it."""
        if not int(self._script(keys=[self.key], args=["renew", self.token, self.ttl_ms])):
            self.held = False
            raise LeaseLost(f"lease {self.key} was lost (held by {self.holder() or 'nobody'} now)")
        self._renewed_at = time.monotonic()

    def keep_alive(self) -> None:
        """Renew if a third of the TTL has passed since the last renewal (cheap to call often)."""
        if time.monotonic() - self._renewed_at >= self.ttl_ms / 3000:
            self.renew()

    def touched(self) -> None:
        """The lease was renewed by a script that checked the token (publish, checkpoint)."""
        self._renewed_at = time.monotonic()

    def release(self) -> None:
        if self.held:
            self._script(keys=[self.key], args=["release", self.token, self.ttl_ms])
            self.held = False

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
