"""Backpressure: pause publishing while the consumers are too far behind.

The backlog of a consumer group is the number of entries after its ``last-delivered-id``. XINFO GROUPS
``lag`` gives that number cheaply, but Redis 7.0 over-reports it forever after a restart that follows
an AOF rewrite, and leaves it null after deletions. So: a group whose last-delivered-id is the stream's
last id has no backlog whatever ``lag`` says; a null ``lag`` is counted by reading ids after the
group's position, at most ``limit + 1`` of them. With no group at all, every entry is undelivered.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from mailpipe.keys import Keys

log = logging.getLogger(__name__)
_PAGE = 500


def undelivered(client: redis.Redis, stream: str, cap: int) -> int:
    """Largest number of entries some group has not been delivered yet (counting stops past ``cap``)."""
    try:
        info: dict[Any, Any] = client.xinfo_stream(stream)
    except redis.ResponseError:  # no such stream yet
        return 0
    info = {_s(k): v for k, v in info.items()}
    last_id = _s(info.get("last-generated-id", ""))
    groups = client.xinfo_groups(stream)
    if not groups:
        return int(info.get("length", 0))
    worst = 0
    for group in groups:
        group = {_s(k): v for k, v in group.items()}
        delivered = _s(group.get("last-delivered-id", "0-0"))
        if delivered == last_id:
            continue
        lag = group.get("lag")
        worst = max(worst, int(lag) if lag is not None else _count_after(client, stream, delivered, cap))
        if worst > cap:
            break
    return worst


def _count_after(client: redis.Redis, stream: str, after: str, cap: int) -> int:
    count, start = 0, f"({after}"
    while count <= cap:
        page = client.xrange(stream, min=start, max="+", count=_PAGE)
        if not page:
            break
        count += len(page)
        start = f"({_s(page[-1][0])}"
    return count


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Backpressure:
    def __init__(self, client: redis.Redis, keys: Keys, *, limit: int, check_s: float) -> None:
        self.client = client
        self.stream = keys.stream
        self.limit = limit
        self.check_s = check_s

    def over(self) -> bool:
        return self.limit > 0 and undelivered(self.client, self.stream, self.limit) > self.limit

    def wait(self, stop: threading.Event, on_pause: Any = None, keep_alive: Any = None) -> bool:
        """Block while over the limit; False if ``stop`` was set meanwhile. Calls ``on_pause()`` once."""
        if not self.over():
            return True
        log.warning("backlog of %s is over %d undelivered entries: publishing paused", self.stream, self.limit)
        if on_pause is not None:
            on_pause()
        while not stop.wait(self.check_s):
            if keep_alive is not None:
                keep_alive()
            if not self.over():
                log.info("backlog of %s is below %d again: publishing resumed", self.stream, self.limit)
                return True
        return False
