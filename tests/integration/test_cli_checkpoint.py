"""`mailpipe checkpoint show|set|reset` against a real Redis, in the producer's checkpoint format."""

from __future__ import annotations

import redis

from mailpipe.keys import Keys
from mailpipe.producer.checkpoint import Checkpoint, CheckpointStore
from tests.cli_util import run_cli

ACCOUNT, BOX = "me@example.com", "Archive/2024: Q1"  # ':' and '/' in a name survive the key encoding


def _store(r: redis.Redis, keys: Keys, **fields: int) -> None:
    base = {"uidvalidity": 7, "last_uid": 500, "acted_uid": 500, "floor_ms": 1_700_000_000_000, "floor_uid": 300,
            "synced_ms": 1_700_000_100_000, "uv_changes": 1, "updated_ms": 1_700_000_100_000}
    r.hset(keys.checkpoint(ACCOUNT, BOX), mapping={**base, **fields})


def test_show_lists_checkpoints_with_their_leases(redis_url: str, keys: Keys, r: redis.Redis) -> None:
    _store(r, keys)
    r.hset(keys.checkpoint("other@example.com", "INBOX"), mapping={"uidvalidity": 1, "last_uid": 3})
    r.set(keys.lease(ACCOUNT, BOX), "host:42:abcdef", px=20_000)
    res = run_cli(redis_url, keys, "checkpoint", "show", "--json")
    assert res.code == 0, res.err
    rows = {(m["account"], m["mailbox"]): m for m in res.json()}
    assert set(rows) == {(ACCOUNT, BOX), ("other@example.com", "INBOX")}
    mine = rows[(ACCOUNT, BOX)]
    assert mine["checkpoint"]["last_uid"] == 500 and mine["checkpoint"]["floor_uid"] == 300
    assert mine["lease"]["owner"] == "host:42:abcdef" and 0 < mine["lease"]["ttl_ms"] <= 20_000
    assert rows[("other@example.com", "INBOX")]["lease"] is None

    only = run_cli(redis_url, keys, "checkpoint", "show", "--account", "other@example.com", "--json").json()
    assert [m["account"] for m in only] == ["other@example.com"]
    human = run_cli(redis_url, keys, "checkpoint", "show")
    assert human.code == 0 and BOX in human.out and "host:42:abcdef" in human.out

    empty = run_cli(redis_url, Keys(stream_name="empty"), "checkpoint", "show")
    assert empty.code == 0 and "no producer checkpoints" in empty.out


def test_set_needs_yes_then_moves_the_checkpoint_the_producer_reads(redis_url: str, keys: Keys,
                                                                     r: redis.Redis) -> None:
    _store(r, keys)
    before = r.hgetall(keys.checkpoint(ACCOUNT, BOX))
    args = ("checkpoint", "set", "--account", ACCOUNT, "--mailbox", BOX, "--uid", "120")
    refused = run_cli(redis_url, keys, *args)
    assert refused.code == 2 and "last_uid=500 date floor" in refused.out
    assert refused.out.rstrip().endswith("-> uidvalidity=7 last_uid=120")
    assert r.hgetall(keys.checkpoint(ACCOUNT, BOX)) == before

    res = run_cli(redis_url, keys, *args, "--yes")
    assert res.code == 0, res.err
    assert "continues with UID 121" in res.out
    cp = CheckpointStore(r, keys).get(ACCOUNT, BOX)  # the producer's own reader
    assert cp is not None
    assert (cp.uidvalidity, cp.last_uid, cp.acted_uid, cp.floor_ms, cp.floor_uid) == (7, 120, 120, 0, 0)
    assert cp.uv_changes == 1 and cp.updated_ms > 1_700_000_100_000


def test_set_creates_a_checkpoint_only_with_uidvalidity(redis_url: str, keys: Keys, r: redis.Redis) -> None:
    args = ("checkpoint", "set", "--account", ACCOUNT, "--mailbox", BOX, "--uid", "0", "--yes")
    missing = run_cli(redis_url, keys, *args)
    assert missing.code == 2 and "--uidvalidity" in missing.err
    assert not r.exists(keys.checkpoint(ACCOUNT, BOX))
    res = run_cli(redis_url, keys, *args, "--uidvalidity", "99", "--json")
    assert res.code == 0, res.err
    assert res.json()["before"] is None
    cp = Checkpoint.from_hash(r.hgetall(keys.checkpoint(ACCOUNT, BOX)))
    assert cp is not None and (cp.uidvalidity, cp.last_uid) == (99, 0)


def test_a_held_lease_blocks_changes_unless_forced(redis_url: str, keys: Keys, r: redis.Redis) -> None:
    _store(r, keys)
    r.set(keys.lease(ACCOUNT, BOX), "host:42:abcdef", px=30_000)
    before = r.hgetall(keys.checkpoint(ACCOUNT, BOX))
    for action in (("set", "--uid", "1"), ("reset",)):
        res = run_cli(redis_url, keys, "checkpoint", action[0], "--account", ACCOUNT, "--mailbox", BOX,
                      *action[1:], "--yes")
        assert res.code == 1 and "host:42:abcdef" in res.err and "--force" in res.err
        assert r.hgetall(keys.checkpoint(ACCOUNT, BOX)) == before
    forced = run_cli(redis_url, keys, "checkpoint", "set", "--account", ACCOUNT, "--mailbox", BOX, "--uid", "1",
                     "--yes", "--force")
    assert forced.code == 0, forced.err
    assert r.hget(keys.checkpoint(ACCOUNT, BOX), "last_uid") == "1"
    assert r.get(keys.lease(ACCOUNT, BOX)) == "host:42:abcdef"  # the lease itself is not touched


def test_reset_deletes_the_checkpoint(redis_url: str, keys: Keys, r: redis.Redis) -> None:
    _store(r, keys)
    args = ("checkpoint", "reset", "--account", ACCOUNT, "--mailbox", BOX)
    refused = run_cli(redis_url, keys, *args)
    assert refused.code == 2 and r.exists(keys.checkpoint(ACCOUNT, BOX))
    res = run_cli(redis_url, keys, *args, "--yes", "--json")
    assert res.code == 0, res.err
    assert res.json()["before"]["last_uid"] == 500
    assert not r.exists(keys.checkpoint(ACCOUNT, BOX))
    again = run_cli(redis_url, keys, *args, "--yes")
    assert again.code == 1 and "no checkpoint" in again.err


def test_bad_arguments_are_usage_errors(redis_url: str, keys: Keys) -> None:
    assert run_cli(redis_url, keys, "checkpoint", "set", "--account", ACCOUNT, "--mailbox", BOX,
                   "--uid", "-1", "--yes").code == 2
    assert run_cli(redis_url, keys, "checkpoint", "set", "--account", ACCOUNT, "--uid", "1").code == 2
