"""A snapshot of a pipeline's state in Redis, read in two round trips whatever the stream's size.

Used by the exporter at scrape time (and usable by status commands). Round trip 1 is a read-only Lua
script that summarises both streams and every group without shipping entry payloads (``XINFO STREAM``
returns the first and last entry, which can be hundreds of kB of mail). Round trip 2 is a pipeline of
O(log n) / bounded commands per group. Nothing is done per entry except a bounded ``XPENDING`` sample.

Lag: ``XINFO GROUPS`` ``lag`` is over-reported forever after an AOF rewrite followed by a restart (Redis
7.0), while ``last-delivered-id`` stays right. So "undelivered" is derived from ``last-delivered-id``
first: nothing after it means zero, whatever ``lag`` says; the reported lag only sizes a non-zero backlog
(clamped to the stream length), and the age of the first undelivered entry comes from its id alone.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

import redis
from redis.exceptions import NoScriptError

from mailpipe import defaults
from mailpipe.keys import Keys, live_buckets

log = logging.getLogger(__name__)

# Flagged no-writes so it runs on replicas and while Redis refuses writes (maxmemory reached).
# Returns {now_ms, stream summary, dead-letter summary, groups...}; each summary is
# {length, last-generated-id, entries-added or "", first id or ""}, each group
# {name, consumers, pending, last-delivered-id, entries-read or "", lag or "", first undelivered id or ""}.
_SUMMARY_LUA = """#!lua flags=no-writes
local function summary(key)
  -- a stream not created yet has had 0 entries: exported as such, so the first dead letter is an increase
  if redis.call('EXISTS', key) == 0 then return {'0', '0-0', '0', ''} end
  local info = redis.call('XINFO', 'STREAM', key)
  local f = {}
  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
  local first = f['recorded-first-entry-id']
  if not first and f['first-entry'] then first = f['first-entry'][1] end
  return {tostring(f['length']), f['last-generated-id'], tostring(f['entries-added'] or ''), first or ''}
end
local t = redis.call('TIME')
local out = {tostring(t[1] * 1000 + math.floor(t[2] / 1000)), summary(KEYS[1]), summary(KEYS[2])}
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    local after = redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
    local first_undelivered = ''
    if #after > 0 then first_undelivered = after[1][1] end
    local read, lag = f['entries-read'], f['lag']
    table.insert(out, {f['name'], tostring(f['consumers']), tostring(f['pending']), f['last-delivered-id'],
      read and tostring(read) or '', lag and tostring(lag) or '', first_undelivered})
  end
end
return out
"""

# Delivery-count buckets of the pending sample: first try, a few retries, near and past the poison limit.
DELIVERY_BUCKETS: tuple[tuple[int, float, str], ...] = (
    (1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4-5"), (6, 9, "6-9"), (10, float("inf"), "10+"),
)


def id_ms(stream_id: str) -> int:
    """Milliseconds part of a stream id (the time Redis assigned it)."""
    return int(stream_id.split("-", 1)[0])


def _opt_int(value: Any) -> int | None:
    return None if value in (None, "", b"") else int(value)


@dataclass(frozen=True)
class StateOptions:
    """What to read and how much; the defaults keep a scrape to a few milliseconds."""

    groups: tuple[str, ...] = ()  # empty: every group of the stream
    pending_sample: int = 100
    max_consumers: int = 100
    live_consumer_idle_s: float = defaults.DEFAULT_RECLAIM_IDLE_MS / 1000
    dedup_bucket_s: int = defaults.DEFAULT_DEDUP_BUCKET_S
    dedup_retention_s: int = defaults.DEFAULT_DEDUP_RETENTION_S
    memory_samples: int = 5
    checkpoint_rescan_s: float = 60.0
    max_checkpoints: int = 500


@dataclass
class StreamSummary:
    length: int
    last_id: str
    entries_added: int | None
    first_id: str | None


@dataclass
class ConsumerState:
    name: str
    pending: int
    idle_ms: int


@dataclass
class GroupState:
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag_reported: int | None  # XINFO GROUPS lag, as Redis says it (may be wrong, see module docstring)
    first_undelivered_id: str | None
    undelivered: int = 0
    oldest_pending_id: str | None = None
    pending_sample_size: int = 0
    pending_deliveries: dict[str, int] = field(default_factory=dict)
    max_deliveries_seen: int = 0
    max_idle_ms_seen: int = 0
    consumer_list: list[ConsumerState] = field(default_factory=list)
    retry_scheduled: int = 0
    retry_due: int = 0
    retry_oldest_due_ms: int | None = None
    dedup_keys: int = 0
    breaker_state: str | None = None
    breaker_opened_at_ms: int | None = None


@dataclass
class Checkpoint:
    account: str
    mailbox: str
    uidvalidity: int | None
    last_uid: int | None
    updated_ms: int | None


@dataclass
class RedisInfo:
    version: str = ""
    used_memory: int = 0
    maxmemory: int = 0
    maxmemory_policy: str = ""
    aof_enabled: bool = False


@dataclass
class PipelineState:
    now_ms: int
    stream: StreamSummary
    dead_letters: StreamSummary
    groups: list[GroupState]
    memory: dict[str, int]
    redis: RedisInfo
    checkpoints: list[Checkpoint]


class StreamStateReader:
    """Reads :class:`PipelineState` for one pipeline; keeps only a cache of checkpoint key names."""

    def __init__(self, client: redis.Redis, keys: Keys, options: StateOptions | None = None) -> None:
        self.client = client
        self.keys = keys
        self.options = options or StateOptions()
        self._summary_sha = hashlib.sha1(_SUMMARY_LUA.encode()).hexdigest()
        self._checkpoint_keys: list[str] = []
        self._checkpoints_scanned_at = float("-inf")

    def read(self) -> PipelineState:
        raw = self._run_summary()
        now_ms = int(raw[0])
        stream, dead = _summary(raw[1]), _summary(raw[2])
        groups = [_group(g, stream.length) for g in raw[3:]]
        if self.options.groups:
            groups = [g for g in groups if g.name in self.options.groups]
        checkpoint_keys = self._discover_checkpoints()

        pipe = self.client.pipeline(transaction=False)
        for g in groups:
            self._queue_group(pipe, g.name, now_ms)
        pipe.memory_usage(self.keys.stream, samples=self.options.memory_samples)
        pipe.memory_usage(self.keys.dead_letters, samples=self.options.memory_samples)
        pipe.info("server")
        pipe.info("memory")
        pipe.info("persistence")
        for key in checkpoint_keys:
            pipe.hmget(key, "uidvalidity", "last_uid", "updated_ms")
        replies = iter(pipe.execute(raise_on_error=True))

        for g in groups:
            self._fill_group(g, replies, now_ms)
        memory = {"stream": int(next(replies) or 0), "dead_letters": int(next(replies) or 0)}
        server, mem, persistence = next(replies), next(replies), next(replies)
        info = RedisInfo(
            version=str(server.get("redis_version", server.get("valkey_version", ""))),
            used_memory=int(mem.get("used_memory", 0)),
            maxmemory=int(mem.get("maxmemory", 0)),
            maxmemory_policy=str(mem.get("maxmemory_policy", "")),
            aof_enabled=bool(int(persistence.get("aof_enabled", 0))),
        )
        checkpoints = [self._checkpoint(key, next(replies)) for key in checkpoint_keys]
        return PipelineState(now_ms, stream, dead, groups, memory, info,
                             [c for c in checkpoints if c is not None])

    def _run_summary(self) -> list[Any]:
        # The _RO variants: a read-only ACL user (the exporter's) needs no write or SCRIPT permission.
        keys = (self.keys.stream, self.keys.dead_letters)
        try:
            return cast(list[Any], self.client.evalsha_ro(self._summary_sha, len(keys), *keys))
        except NoScriptError:
            return cast(list[Any], self.client.eval_ro(_SUMMARY_LUA, len(keys), *keys))

    # --- per group ------------------------------------------------------------------------------

    def _queue_group(self, pipe: Any, group: str, now_ms: int) -> None:
        k, opts = self.keys, self.options
        pipe.xpending(k.stream, group)
        pipe.xpending_range(k.stream, group, min="-", max="+", count=opts.pending_sample)
        pipe.xinfo_consumers(k.stream, group)
        schedule = k.retry_schedule(group)
        pipe.zcard(schedule)
        pipe.zcount(schedule, "-inf", now_ms)
        pipe.zrange(schedule, 0, 0, withscores=True)
        pipe.hgetall(k.breaker(group))
        for bucket in live_buckets(now_ms / 1000, opts.dedup_bucket_s, opts.dedup_retention_s):
            pipe.scard(k.done_bucket(group, bucket))

    def _fill_group(self, g: GroupState, replies: Any, now_ms: int) -> None:
        opts = self.options
        summary = next(replies)
        g.oldest_pending_id = summary.get("min") if summary.get("pending") else None
        sample = next(replies)
        g.pending_sample_size = len(sample)
        counts = {label: 0 for _, _, label in DELIVERY_BUCKETS}
        for item in sample:
            delivered = int(item["times_delivered"])
            g.max_deliveries_seen = max(g.max_deliveries_seen, delivered)
            g.max_idle_ms_seen = max(g.max_idle_ms_seen, int(item["time_since_delivered"]))
            for low, high, label in DELIVERY_BUCKETS:
                if low <= delivered <= high:
                    counts[label] += 1
                    break
        g.pending_deliveries = counts
        consumers = sorted(next(replies), key=lambda c: int(c["idle"]))
        g.consumer_list = [ConsumerState(str(c["name"]), int(c["pending"]), int(c["idle"]))
                           for c in consumers[: opts.max_consumers]]
        g.consumers = len(consumers)
        g.retry_scheduled = int(next(replies))
        g.retry_due = int(next(replies))
        oldest = next(replies)
        g.retry_oldest_due_ms = int(oldest[0][1]) if oldest else None
        breaker = next(replies) or {}
        state = breaker.get("state")
        g.breaker_state = state if state in ("closed", "open", "half_open") else None
        try:
            g.breaker_opened_at_ms = _opt_int(breaker.get("opened_at_ms"))
        except ValueError:
            g.breaker_opened_at_ms = None
        buckets = live_buckets(now_ms / 1000, opts.dedup_bucket_s, opts.dedup_retention_s)
        g.dedup_keys = sum(int(next(replies)) for _ in buckets)

    # --- producer checkpoints -------------------------------------------------------------------

    def _discover_checkpoints(self) -> list[str]:
        """Checkpoint keys, rescanned at most every ``checkpoint_rescan_s`` (SCAN walks the keyspace)."""
        now = time.monotonic()
        if now - self._checkpoints_scanned_at >= self.options.checkpoint_rescan_s:
            found: list[str] = []
            for key in self.client.scan_iter(match=self.keys.checkpoint_pattern(), count=1000):
                found.append(str(key))
                if len(found) >= self.options.max_checkpoints:
                    log.warning("more than %d producer checkpoints: exporting the first %d only",
                                self.options.max_checkpoints, self.options.max_checkpoints)
                    break
            self._checkpoint_keys = sorted(found)
            self._checkpoints_scanned_at = now
        return self._checkpoint_keys

    def _checkpoint(self, key: str, values: list[Any]) -> Checkpoint | None:
        rest = key.removeprefix(self.keys.checkpoint_pattern()[:-1])
        account, _, mailbox = rest.partition(":")
        if not account or all(v is None for v in values):
            return None  # deleted since the last SCAN, or not a checkpoint of ours
        try:
            uidvalidity, last_uid, updated_ms = (_opt_int(v) for v in values)
        except ValueError:
            log.warning("unreadable producer checkpoint", extra={"key": key})
            return None
        return Checkpoint(unquote(account), unquote(mailbox), uidvalidity, last_uid, updated_ms)


def _summary(raw: list[Any]) -> StreamSummary:
    return StreamSummary(int(raw[0]), str(raw[1]), _opt_int(raw[2]), str(raw[3]) or None)


def _group(raw: list[Any], stream_length: int) -> GroupState:
    name, consumers, pending, last_delivered, read, lag, first_undelivered = (str(v) for v in raw)
    g = GroupState(name, int(consumers), int(pending), last_delivered, _opt_int(read), _opt_int(lag),
                   first_undelivered or None)
    if g.first_undelivered_id is None:
        g.undelivered = 0  # caught up: whatever the reported lag says
    elif g.lag_reported is not None:
        g.undelivered = max(1, min(g.lag_reported, stream_length))
    else:
        g.undelivered = max(1, stream_length)  # Redis cannot count (tombstones): the stream bounds it
    return g
