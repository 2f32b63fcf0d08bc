"""Every Redis key name mailpipe uses, built in one place.

All keys of one pipeline share the hash tag ``{<stream>}`` so a Redis Cluster keeps them in one slot and
every Lua script / MULTI can touch them together. Layout (namespace ``mailpipe``, stream ``mail``)::

    mailpipe:{mail}:stream                          the stream of email entries (XADD / XREADGROUP)
    mailpipe:{mail}:dead                            dead-letter stream (every group)
    mailpipe:{mail}:g:<group>:done:<bucket>         SET of processed idempotency keys, one per time bucket
    mailpipe:{mail}:g:<group>:claim:<idem>          STRING, short-lived claim "<consumer> <stream id>"
    mailpipe:{mail}:g:<group>:retry                 ZSET retry id -> due time (ms)
    mailpipe:{mail}:g:<group>:retry:data            HASH retry id -> JSON of the entry's fields
    mailpipe:{mail}:g:<group>:breaker               HASH circuit breaker state
    mailpipe:{mail}:g:<group>:lock:<name>           STRING, TTL'd housekeeping lock
    mailpipe:{mail}:checkpoint:<account>:<mailbox>  HASH uidvalidity, last_uid (producer)
    mailpipe:{mail}:lease:<account>:<mailbox>       STRING, the one producer allowed on a mailbox
    mailpipe:{mail}:published:<bucket>              SET of idempotency keys the producer published
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from mailpipe import defaults

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"invalid {kind} name {value!r}: use 1-100 characters from A-Z a-z 0-9 _ . -"
        )
    return value


def _part(value: str) -> str:
    """Encode a free-form name (account, mailbox, idempotency key) so ':' and braces stay unambiguous."""
    return quote(value, safe="@.+-_=/")


@dataclass(frozen=True)
class Keys:
    """Key names of one pipeline (namespace + stream)."""

    namespace: str = defaults.DEFAULT_NAMESPACE
    stream_name: str = defaults.DEFAULT_STREAM

    def __post_init__(self) -> None:
        _check_name("namespace", self.namespace)
        _check_name("stream", self.stream_name)

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{{{self.stream_name}}}"

    @property
    def hash_tag(self) -> str:
        return self.stream_name

    @property
    def stream(self) -> str:
        return f"{self.prefix}:stream"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:dead"

    def pattern(self) -> str:
        """SCAN pattern matching every key of this pipeline (backup, status, tests)."""
        tag = self.stream_name.replace("[", "\\[").replace("]", "\\]")
        return f"{self.namespace}:{{{tag}}}:*"

    # --- per consumer group --------------------------------------------------------------------

    def group_prefix(self, group: str) -> str:
        return f"{self.prefix}:g:{_check_name('group', group)}"

    def done_bucket(self, group: str, bucket: int) -> str:
        return f"{self.group_prefix(group)}:done:{bucket}"

    def claim_prefix(self, group: str) -> str:
        """Claim keys are this prefix + the idempotency key, built inside the Lua scripts (the key is the
        last part and the hash tag comes first, so no encoding is needed)."""
        return f"{self.group_prefix(group)}:claim:"

    def claim(self, group: str, idempotency_key: str) -> str:
        return self.claim_prefix(group) + idempotency_key

    def retry_schedule(self, group: str) -> str:
        return f"{self.group_prefix(group)}:retry"

    def retry_data(self, group: str) -> str:
        return f"{self.group_prefix(group)}:retry:data"

    def breaker(self, group: str) -> str:
        return f"{self.group_prefix(group)}:breaker"

    def lock(self, group: str, name: str) -> str:
        return f"{self.group_prefix(group)}:lock:{_check_name('lock', name)}"

    # --- producer --------------------------------------------------------------------------------

    def checkpoint(self, account: str, mailbox: str) -> str:
        return f"{self.prefix}:checkpoint:{_part(account)}:{_part(mailbox)}"

    def checkpoint_pattern(self) -> str:
        return f"{self.prefix}:checkpoint:*"

    def lease(self, account: str, mailbox: str) -> str:
        return f"{self.prefix}:lease:{_part(account)}:{_part(mailbox)}"

    def lease_pattern(self) -> str:
        return f"{self.prefix}:lease:*"

    def published_bucket(self, bucket: int) -> str:
        return f"{self.prefix}:published:{bucket}"


def bucket_of(timestamp_s: float, bucket_s: int) -> int:
    """Index of the time bucket holding ``timestamp_s``."""
    return int(timestamp_s // bucket_s)


def live_buckets(now_s: float, bucket_s: int, retention_s: int) -> list[int]:
    """Buckets that may still hold keys remembered at ``now_s``, newest first.

    A key written into bucket b expires at the end of b plus the retention, so every bucket whose end is
    within the retention window is live.
    """
    current = bucket_of(now_s, bucket_s)
    count = -(-retention_s // bucket_s) + 1  # ceil(retention / bucket) + the current one
    return [current - i for i in range(count)]


def bucket_expire_at(bucket: int, bucket_s: int, retention_s: int) -> int:
    """Unix time at which a bucket set may be dropped: end of the bucket + retention."""
    return (bucket + 1) * bucket_s + retention_s
