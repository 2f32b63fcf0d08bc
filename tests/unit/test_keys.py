from __future__ import annotations

import pytest
from redis.crc import key_slot

from mailpipe.keys import Keys, bucket_expire_at, bucket_of, live_buckets


def all_keys(k: Keys) -> list[str]:
    return [k.stream, k.dead_letters, k.done_bucket("g", 5), k.claim("g", "id:{x}"), k.retry_schedule("g"),
            k.retry_data("g"), k.breaker("g"), k.lock("g", "trim"), k.checkpoint("me@x", "INBOX/Sub {1}"),
            k.lease("me@x", "INBOX"), k.published_bucket(3)]


def test_every_key_of_a_pipeline_is_in_one_cluster_slot() -> None:
    k = Keys("mailpipe", "mail")
    slots = {key_slot(name.encode()) for name in all_keys(k)}
    assert slots == {key_slot(b"{mail}")}


def test_documented_layout() -> None:
    k = Keys("mailpipe", "mail")
    assert k.stream == "mailpipe:{mail}:stream"
    assert k.dead_letters == "mailpipe:{mail}:dead"
    assert k.done_bucket("workers", 20000) == "mailpipe:{mail}:g:workers:done:20000"
    assert k.retry_schedule("workers") == "mailpipe:{mail}:g:workers:retry"
    assert k.checkpoint("me@x.com", "INBOX") == "mailpipe:{mail}:checkpoint:me@x.com:INBOX"


def test_free_form_parts_cannot_forge_separators() -> None:
    k = Keys("mailpipe", "mail")
    assert k.checkpoint("a:b", "c") != k.checkpoint("a", "b:c")


@pytest.mark.parametrize("bad", ["", "has space", "brace{", "x" * 101, "colon:"])
def test_names_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid stream name"):
        Keys("mailpipe", bad)


def test_live_buckets_cover_the_retention_window() -> None:
    day, week = 86400, 7 * 86400
    now = 100 * day + 5
    buckets = live_buckets(now, day, week)
    assert buckets[0] == bucket_of(now, day) == 100
    assert len(buckets) == 8
    # a key written at the very start of the oldest live bucket is still within its retention
    for b in buckets:
        assert bucket_expire_at(b, day, week) > now
    # the bucket before the oldest live one has expired
    assert bucket_expire_at(buckets[-1] - 1, day, week) <= now + day
