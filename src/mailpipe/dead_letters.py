"""The dead-letter stream: list, show, replay and purge (used by ``mailpipe dlq``).

A dead letter is the original entry's fields plus ``dl_*`` fields: error type, error message, truncated
traceback, reason (permanent | max_attempts | poison | malformed), attempts, consumer, group, the
original stream id and the failure time. Replaying moves an entry back onto the stream with attempts
reset, atomically (no entry is both replayed and still dead, none is lost).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from mailpipe.keys import Keys
from mailpipe.scripts import source

REPLAY_CHUNK = 100


@dataclass(frozen=True)
class DeadLetter:
    id: str
    fields: dict[str, str]

    @property
    def error_type(self) -> str:
        return self.fields.get("dl_error_type", "")

    @property
    def error(self) -> str:
        return self.fields.get("dl_error", "")

    @property
    def reason(self) -> str:
        return self.fields.get("dl_reason", "")

    @property
    def failed_ms(self) -> int:
        try:
            return int(self.fields.get("dl_failed_ms", "0"))
        except ValueError:
            return 0

    @property
    def first_seen_ms(self) -> int:
        try:
            return int(self.fields.get("first_ms") or self.fields.get("enq_ms") or "0")
        except ValueError:
            return 0


@dataclass(frozen=True)
class Filter:
    error_type: str | None = None
    reason: str | None = None
    group: str | None = None
    older_than_s: float | None = None
    newer_than_s: float | None = None

    def matches(self, dl: DeadLetter, now_ms: int) -> bool:
        if self.error_type and dl.error_type != self.error_type:
            return False
        if self.reason and dl.reason != self.reason:
            return False
        if self.group and dl.fields.get("dl_group") != self.group:
            return False
        age_s = (now_ms - dl.failed_ms) / 1000
        if self.older_than_s is not None and age_s < self.older_than_s:
            return False
        return not (self.newer_than_s is not None and age_s > self.newer_than_s)


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._replay = client.register_script(source("replay_dead"))

    def count(self) -> int:
        return int(self.client.xlen(self.keys.dead_letters))

    def iter(self, flt: Filter | None = None, *, limit: int | None = None) -> Iterator[DeadLetter]:
        """Dead letters oldest first, filtered; walks the stream in pages (bounded memory)."""
        flt = flt or Filter()
        now_ms = int(time.time() * 1000)
        start, yielded = "-", 0
        while True:
            page: list[Any] = self.client.xrange(self.keys.dead_letters, start, "+", count=500) or []
            for entry_id, fields in page:
                dl = DeadLetter(entry_id, fields)
                if flt.matches(dl, now_ms):
                    yield dl
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
            if len(page) < 500:
                return
            start = "(" + page[-1][0]

    def get(self, entry_id: str) -> DeadLetter | None:
        found: list[Any] = self.client.xrange(self.keys.dead_letters, entry_id, entry_id) or []
        return DeadLetter(found[0][0], found[0][1]) if found else None

    def replay(self, ids: list[str]) -> list[tuple[str, str]]:
        """Move these dead letters back onto the stream; returns (dead-letter id, new stream id) pairs."""
        moved: list[tuple[str, str]] = []
        for i in range(0, len(ids), REPLAY_CHUNK):
            chunk = ids[i:i + REPLAY_CHUNK]
            result = self._replay(keys=[self.keys.dead_letters, self.keys.stream],
                                  args=[int(time.time() * 1000), *chunk])
            moved += [(str(a), str(b)) for a, b in result]
        return moved

    def purge(self, ids: list[str]) -> int:
        removed = 0
        for i in range(0, len(ids), 500):
            removed += int(self.client.xdel(self.keys.dead_letters, *ids[i:i + 500]))
        return removed
