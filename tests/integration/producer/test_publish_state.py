"""The producer's Redis state against a real Redis: publish.lua, checkpoints, leases, backpressure."""

from __future__ import annotations

import time

import pytest
import redis

from mailpipe.entry import Source, build_entry
from mailpipe.keys import Keys
from mailpipe.producer.backpressure import Backpressure, undelivered
from mailpipe.producer.checkpoint import Checkpoint, CheckpointStore
from mailpipe.producer.errors import CheckpointMoved, LeaseLost
from mailpipe.producer.lease import Lease
from mailpipe.producer.mime import parse_email
from mailpipe.producer.publish import BEHIND, DUPLICATE, PUBLISHED, SKIPPED, Publication, Publisher, Target
from tests.mail_samples import make_mail
from tests.util import sample_entry, wait_until


def publication(n: int, uid: int | None = None) -> Publication:
    email = parse_email(make_mail(n))
    fields = build_entry(email, idempotency_key=f"k{n}", source=Source("imap", "a@x", "INBOX", 1, uid))
    return Publication(key=f"k{n}", fields=fields, uid=uid)


@pytest.fixture
def publisher(r: redis.Redis, keys: Keys) -> Publisher:
    return Publisher(r, keys, retention_s=3600, bucket_s=600)


@pytest.fixture
def lease(r: redis.Redis, keys: Keys) -> Lease:
    held = Lease(r, keys, "a@x", "INBOX", ttl_s=5)
    assert held.acquire()
    return held


def statuses(result: object) -> list[str]:
    return [o.status for o in result.outcomes]  # type: ignore[attr-defined]


def test_publish_advances_checkpoint_and_skips_what_is_behind(
        r: redis.Redis, keys: Keys, publisher: Publisher, lease: Lease) -> None:
    store = CheckpointStore(r, keys)
    store.reset("a@x", "INBOX", Checkpoint(uidvalidity=1, last_uid=0), expected=None, lease=lease)
    target = Target("a@x", "INBOX", 1, lease)
    result = publisher.publish([publication(1, 1), publication(2, 2)], target)
    assert statuses(result) == [PUBLISHED, PUBLISHED]
    assert result.outcomes[0].stream_id == r.xrange(keys.stream)[0][0]
    # Re-publishing the same UIDs (a crash before the caller saw the reply) is a no-op.
    assert statuses(publisher.publish([publication(1, 1), publication(2, 2)], target)) == [BEHIND, BEHIND]
    # The same email under a new UID (UIDVALIDITY change, second folder) is not published twice ...
    assert statuses(publisher.publish([publication(1, 3)], target)) == [DUPLICATE]
    # ... and a skip only moves the checkpoint.
    assert statuses(publisher.publish([Publication("-", None, 9)], target)) == [SKIPPED]
    assert r.xlen(keys.stream) == 2
    cp = store.get("a@x", "INBOX")
    assert cp is not None and cp.last_uid == 9


def test_publish_is_fenced_by_lease_and_uidvalidity(
        r: redis.Redis, keys: Keys, publisher: Publisher, lease: Lease) -> None:
    store = CheckpointStore(r, keys)
    store.reset("a@x", "INBOX", Checkpoint(uidvalidity=1, last_uid=0), expected=None, lease=lease)
    with pytest.raises(CheckpointMoved):
        publisher.publish([publication(1, 1)], Target("a@x", "INBOX", 2, lease))
    r.set(lease.key, "someone-else")
    with pytest.raises(LeaseLost):
        publisher.publish([publication(1, 1)], Target("a@x", "INBOX", 1, lease))
    with pytest.raises(LeaseLost):
        store.update("a@x", "INBOX", 1, lease, synced_ms=1)
    assert r.xlen(keys.stream) == 0


def test_checkpoint_reset_is_compare_and_set(r: redis.Redis, keys: Keys, lease: Lease) -> None:
    store = CheckpointStore(r, keys)
    store.reset("a@x", "INBOX", Checkpoint(uidvalidity=1, last_uid=5), expected=None, lease=lease)
    with pytest.raises(CheckpointMoved):  # someone already placed it
        store.reset("a@x", "INBOX", Checkpoint(uidvalidity=1, last_uid=0), expected=None, lease=lease)
    store.reset("a@x", "INBOX", Checkpoint(uidvalidity=2, last_uid=0, uv_changes=1), expected=1, lease=lease)
    cp = store.get("a@x", "INBOX")
    assert cp == Checkpoint(uidvalidity=2, last_uid=0, uv_changes=1)


def test_local_publish_dedups_without_checkpoint(r: redis.Redis, keys: Keys, publisher: Publisher) -> None:
    items = [Publication("k1", sample_entry(1, key="k1")), Publication("k1", sample_entry(1, key="k1")),
             Publication("k2", sample_entry(2, key="k2"))]
    assert statuses(publisher.publish(items)) == [PUBLISHED, DUPLICATE, PUBLISHED]
    assert publisher.was_published("k2") and not publisher.was_published("k3")
    ttl = r.ttl(keys.published_bucket(int(time.time() // 600)))
    assert 0 < ttl <= 3600 + 600


def test_lease_is_exclusive_renewable_and_expires(r: redis.Redis, keys: Keys) -> None:
    first = Lease(r, keys, "a@x", "INBOX", ttl_s=1)
    second = Lease(r, keys, "a@x", "INBOX", ttl_s=1)
    assert first.acquire() and not second.acquire()
    first.renew()
    assert second.holder() == first.token
    wait_until(lambda: second.acquire(), 5, interval=0.05, what="lease expiry")  # first stopped renewing
    with pytest.raises(LeaseLost):
        first.renew()
    first.release()  # not ours any more: must not delete the new holder's lease
    assert second.holder() == second.token
    second.release()
    assert second.holder() is None


def test_backlog_counts_undelivered_entries_per_group(r: redis.Redis, keys: Keys) -> None:
    for i in range(10):
        r.xadd(keys.stream, sample_entry(i))
    assert undelivered(r, keys.stream, 100) == 10  # no group yet: nothing was delivered
    r.xgroup_create(keys.stream, "g1", id="0")
    r.xgroup_create(keys.stream, "g2", id="0")
    r.xreadgroup("g1", "c", {keys.stream: ">"}, count=10)
    r.xreadgroup("g2", "c", {keys.stream: ">"}, count=4)
    assert undelivered(r, keys.stream, 100) == 6
    # Deleting an entry after g2's position makes XINFO lag unknown: counted by reading ids instead.
    last = r.xrange(keys.stream)[-1][0]
    r.xdel(keys.stream, last)
    assert undelivered(r, keys.stream, 100) == 5
    gate = Backpressure(r, keys, limit=3, check_s=0.01)
    assert gate.over()
    r.xreadgroup("g2", "c", {keys.stream: ">"}, count=10)
    assert not gate.over()
