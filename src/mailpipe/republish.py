"""Re-publishing entries still in the stream for reprocessing (``mailpipe replay``).

A replay copies entries of an id range to the end of the stream with attempts reset. One copy per
idempotency key (the first entry of the range carrying it: retry copies of the same email are not
copied again). The copies keep their idempotency key, so the workers skip every one whose key is
already done, unless the replay is forced: then the copies carry ``replay=force`` and are addressed to
one group (``grp``), whose workers run them again even if done, and every other group ignores them.
Each copy records the id it was made from (``replay_of``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from mailpipe.scripts import source

PAGE = 500
CHUNK = 200


@dataclass
class ReplayPlan:
    start: str  # first id of the range (inclusive)
    end: str  # last id of the range (inclusive), fixed when planning so the copies are never re-read
    group: str  # "" = every group
    selected: list[tuple[str, str]] = field(default_factory=list)  # (stream id, idempotency key)
    same_key_again: int = 0  # entries whose key an earlier entry of the range carries
    other_group: int = 0  # retry copies addressed to another group
    malformed: int = 0  # no idempotency key: cannot be replayed meaningfully
    first_id: str | None = None  # the stream's first entry
    trimmed: bool = False  # entries were removed from the stream (trimming): older ones are gone

    @property
    def keys(self) -> list[str]:
        return [k for _, k in self.selected]


def plan(client: redis.Redis, stream: str, start: str, end: str, *, group: str = "",
         limit: int | None = None) -> ReplayPlan:
    """Choose what a replay of ``start``..``end`` copies (read-only)."""
    info = client.xinfo_stream(stream)
    if end == "+":
        end = str(info["last-generated-id"])
    first: list[Any] = client.xrange(stream, "-", "+", count=1) or []
    added = info.get("entries-added")
    result = ReplayPlan(start, end, group, first_id=str(first[0][0]) if first else None,
                        trimmed=added is not None and int(added) > int(info["length"]))
    seen: set[str] = set()
    cursor = start
    while True:
        page: list[Any] = client.xrange(stream, cursor, end, count=PAGE) or []
        for entry_id, fields in page:
            key = fields.get("idem", "")
            if not key:
                result.malformed += 1
            elif fields.get("grp") and group and fields["grp"] != group:
                result.other_group += 1
            elif key in seen:
                result.same_key_again += 1
            else:
                seen.add(key)
                result.selected.append((str(entry_id), key))
                if limit is not None and len(result.selected) >= limit:
                    return result
        if len(page) < PAGE:
            return result
        cursor = "(" + str(page[-1][0])


def done_counts(client: redis.Redis, group_prefixes: dict[str, str], keys: Iterable[str]) -> dict[str, int]:
    """How many of ``keys`` each group has already done (its live done buckets, found by SCAN)."""
    wanted = list(dict.fromkeys(keys))
    counts: dict[str, int] = {}
    for group, prefix in group_prefixes.items():
        buckets = [str(k) for k in client.scan_iter(match=f"{prefix}:done:*", count=1000)]
        done: set[str] = set()
        for i in range(0, len(wanted), 1000):
            chunk = wanted[i:i + 1000]
            pipe = client.pipeline(transaction=False)
            for bucket in buckets:
                pipe.smismember(bucket, chunk)
            for flags in pipe.execute():
                done.update(k for k, f in zip(chunk, flags, strict=True) if f)
        counts[group] = len(done)
    return counts


def republish(client: redis.Redis, stream: str, ids: list[str], *, now_ms: int, group: str = "",
              force: bool = False) -> list[tuple[str, str]]:
    """Copy ``ids`` to the end of the stream; returns (source id, new id) pairs."""
    if force and not group:
        raise ValueError("a forced replay must be addressed to one group")
    script = client.register_script(source("replay_range"))
    copied: list[tuple[str, str]] = []
    for i in range(0, len(ids), CHUNK):
        reply = script(keys=[stream], args=[now_ms, group, "1" if force else "0", *ids[i:i + CHUNK]])
        copied += [(str(a), str(b)) for a, b in reply]
    return copied
