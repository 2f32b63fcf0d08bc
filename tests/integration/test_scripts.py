"""Each Lua script against a real Redis, including concurrent callers."""

from __future__ import annotations

import json
import threading
import time

import redis

from mailpipe.keys import Keys
from mailpipe.scripts import Scripts, register
from tests.util import sample_entry

G = "workers"


def setup_group(r: redis.Redis, keys: Keys, n: int = 0, start: str = "0") -> list[str]:
    r.xgroup_create(keys.stream, G, id=start, mkstream=True)
    return [r.xadd(keys.stream, sample_entry(i)) for i in range(n)]  # type: ignore[misc]


def read(r: redis.Redis, keys: Keys, consumer: str, count: int = 100) -> list[str]:
    reply = r.xreadgroup(G, consumer, {keys.stream: ">"}, count=count)
    return [sid for sid, _ in reply[0][1]] if reply else []


def claim(s: Scripts, keys: Keys, items: list[tuple[str, str]], buckets: list[str] | None = None,
          ttl: int = 10_000, bypass: bool = False) -> list[int]:
    buckets = buckets or [keys.done_bucket(G, 1)]
    packed = "".join(f"{sid} {idem} {1 if bypass else 0}\n" for sid, idem in items)
    return [int(x) for x in s.claim(keys=buckets, args=[ttl, "c1", keys.claim_prefix(G), packed])]


def settle(s: Scripts, keys: Keys, outcomes: list[tuple[str, ...]], consumer: str = "c1") -> list[int]:
    """outcomes: (kind, stream id, key[, a1, a2, a3, a4])"""
    args: list[object] = [G, int(time.time()) + 3600, int(time.time() * 1000), consumer, keys.claim_prefix(G),
                          "".join(f"{o[0]} {o[1]} {o[2]}\n" for o in outcomes)]
    extras: list[object] = []
    for o in outcomes:
        if o[0] in ("retry", "dead"):
            extras += (list(o) + [""] * 7)[3:7]
    return [int(x) for x in s.settle(keys=[keys.stream, keys.dead_letters, keys.retry_schedule(G),
                                           keys.retry_data(G), keys.done_bucket(G, 1)], args=args + extras)]


def test_claim_statuses_done_busy_and_own(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    r.sadd(keys.done_bucket(G, 0), "k-done")
    buckets = [keys.done_bucket(G, 1), keys.done_bucket(G, 0)]
    assert claim(s, keys, [("1-1", "k-new"), ("1-2", "k-done")], buckets) == [0, 1]
    # same key, another entry: busy; the same entry again (a restart): still ours
    assert claim(s, keys, [("1-3", "k-new"), ("1-1", "k-new")], buckets) == [2, 0]
    assert r.pttl(keys.claim(G, "k-new")) > 0
    # a forced replay ignores the done sets
    assert claim(s, keys, [("1-4", "k-done")], buckets, bypass=True) == [0]


def test_claim_expires_so_a_dead_workers_claim_does_not_block_forever(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    assert claim(s, keys, [("1-1", "k")], ttl=100) == [0]
    assert claim(s, keys, [("1-2", "k")], ttl=100) == [2]
    deadline = time.monotonic() + 5
    while r.exists(keys.claim(G, "k")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert claim(s, keys, [("1-2", "k")]) == [0]


def test_concurrent_claims_of_one_key_have_exactly_one_winner(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def contender(n: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        scripts = register(client)
        barrier.wait()
        for round_ in range(50):
            if claim(scripts, keys, [(f"{n}-{round_}", f"key{round_}")]) == [0]:
                winners.append(round_)
        client.close()

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(winners) == list(range(50))


def test_settle_ok_acks_and_marks_done_atomically(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 3)
    read(r, keys, "c1")
    claim(s, keys, [(ids[0], "k0")])
    assert settle(s, keys, [("ok", ids[0], "k0"), ("dup", ids[1], "k1")]) == [1, 1]
    assert r.sismember(keys.done_bucket(G, 1), "k0")
    assert not r.sismember(keys.done_bucket(G, 1), "k1")
    assert not r.exists(keys.claim(G, "k0"))
    assert r.ttl(keys.done_bucket(G, 1)) > 0
    assert r.xpending(keys.stream, G)["pending"] == 1
    # settling an entry that is no longer pending has no effect on retry/dead
    assert settle(s, keys, [("retry", ids[0], "k0", "0", "2", "E", "m")]) == [0]
    assert r.zcard(keys.retry_schedule(G)) == 0


def test_settle_retry_moves_entry_to_schedule_with_next_attempt(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 1)
    read(r, keys, "c1")
    due = int(time.time() * 1000) + 60_000
    assert settle(s, keys, [("retry", ids[0], "k0", str(due), "2", "ValueError", "boom")]) == [1]
    assert r.xpending(keys.stream, G)["pending"] == 0
    assert r.zscore(keys.retry_schedule(G), ids[0]) == due
    flat = json.loads(r.hget(keys.retry_data(G), ids[0]))  # type: ignore[arg-type]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    assert fields["attempt"] == "2" and fields["grp"] == G and fields["idem"] == "k0"
    assert fields["last_error"] == "ValueError: boom"


def test_settle_dead_appends_original_fields_and_reason(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 1)
    read(r, keys, "c1")
    assert settle(s, keys, [("dead", ids[0], "k0", "KeyError", "'x'", "Traceback...", "permanent")]) == [1]
    assert r.xpending(keys.stream, G)["pending"] == 0
    [(_, dead)] = r.xrange(keys.dead_letters)
    original = r.xrange(keys.stream, ids[0], ids[0])[0][1]
    assert {k: dead[k] for k in original} == original
    assert dead["dl_error_type"] == "KeyError" and dead["dl_reason"] == "permanent"
    assert dead["dl_consumer"] == "c1" and dead["dl_stream_id"] == ids[0] and dead["dl_attempts"] == "1"
    assert int(dead["dl_failed_ms"]) > 0 and dead["dl_traceback"] == "Traceback..."


def test_due_retries_move_exactly_once_under_concurrent_movers(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    s = register(r)
    ids = setup_group(r, keys, 200)
    read(r, keys, "c1", 200)
    settle(s, keys, [("retry", sid, f"k{i}", "1", "2", "E", "m") for i, sid in enumerate(ids)])
    assert r.zcard(keys.retry_schedule(G)) == 200
    moved: list[int] = []
    barrier = threading.Barrier(4)

    def mover() -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        scripts = register(client)
        barrier.wait()
        while True:
            n = int(scripts.move_due_retries(keys=[keys.stream, keys.retry_schedule(G), keys.retry_data(G)],
                                             args=[int(time.time() * 1000), 7]))
            if not n:
                break
            moved.append(n)
        client.close()

    threads = [threading.Thread(target=mover) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(moved) == 200
    assert r.zcard(keys.retry_schedule(G)) == 0 and r.hlen(keys.retry_data(G)) == 0
    copies = r.xrange(keys.stream, "(" + ids[-1], "+")
    assert sorted(f["idem"] for _, f in copies) == sorted(f"k{i}" for i in range(200))
    assert all(f["attempt"] == "2" and f["grp"] == G for _, f in copies)


def test_not_yet_due_retries_stay(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 1)
    read(r, keys, "c1")
    settle(s, keys, [("retry", ids[0], "k0", str(int(time.time() * 1000) + 60_000), "2", "E", "m")])
    assert s.move_due_retries(keys=[keys.stream, keys.retry_schedule(G), keys.retry_data(G)],
                              args=[int(time.time() * 1000), 100]) == 0
    assert r.zcard(keys.retry_schedule(G)) == 1


def test_replay_moves_dead_letters_back_atomically(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 3)
    read(r, keys, "c1")
    settle(s, keys, [("dead", sid, f"k{i}", "E", "m", "", "max_attempts") for i, sid in enumerate(ids)])
    dead_ids = [i for i, _ in r.xrange(keys.dead_letters)]
    out = s.replay_dead(keys=[keys.dead_letters, keys.stream], args=[int(time.time() * 1000), *dead_ids[:2],
                                                                     "999-0"])
    assert [a for a, _ in out] == dead_ids[:2]
    assert r.xlen(keys.dead_letters) == 1
    for _, new_id in out:
        fields = r.xrange(keys.stream, new_id, new_id)[0][1]
        assert fields["attempt"] == "1" and fields["grp"] == G
        assert not any(k.startswith("dl_") for k in fields)


def spaced(r: redis.Redis, keys: Keys, n: int, start_ms: int = 1_000) -> list[str]:
    """n entries 10 ms apart (explicit ids), so the trim's estimate from timestamps is exact."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(keys.stream, sample_entry(i), id=f"{start_ms + 10 * i}-0")
    return [str(x) for x in pipe.execute()]


def test_trim_never_removes_undelivered_or_pending_entries(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    r.xgroup_create(keys.stream, G, id="0", mkstream=True)
    ids = spaced(r, keys, 100)
    r.xgroup_create(keys.stream, "lagging", id="0")
    # fast group: everything delivered, 10 still pending; lagging group: read 30, nothing acked beyond 20
    read(r, keys, "c1", 100)
    r.xack(keys.stream, G, *ids[10:])
    lag = r.xreadgroup("lagging", "l1", {keys.stream: ">"}, count=30)
    assert len(lag[0][1]) == 30
    r.xack(keys.stream, "lagging", *ids[:20])
    assert int(s.trim(keys=[keys.stream], args=[5])) == 0  # oldest pending of G is ids[0]
    r.xack(keys.stream, G, *ids[:10])
    removed = int(s.trim(keys=[keys.stream], args=[5]))
    assert removed == 20  # bounded by lagging's oldest pending (ids[20])
    assert r.xrange(keys.stream, "-", "+", count=1)[0][0] == ids[20]
    r.xack(keys.stream, "lagging", *ids[20:30])
    removed = int(s.trim(keys=[keys.stream], args=[5]))
    assert removed == 10  # bounded by lagging's last-delivered id: the 70 undelivered stay
    remaining = [i for i, _ in r.xrange(keys.stream)]
    assert remaining == ids[30:]
    rest = r.xreadgroup("lagging", "l1", {keys.stream: ">"}, count=1000)
    assert len(rest[0][1]) == 70


def test_trim_catches_up_with_a_large_backlog_in_one_call(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    r.xgroup_create(keys.stream, G, id="0", mkstream=True)
    ids = spaced(r, keys, 50_000)
    r.xgroup_setid(keys.stream, G, ids[-1])  # everything delivered and acknowledged
    assert int(s.trim(keys=[keys.stream], args=[1_000])) == 49_000
    assert r.xlen(keys.stream) == 1_000 and r.xrange(keys.stream, count=1)[0][0] == ids[49_000]
    assert int(s.trim(keys=[keys.stream], args=[1_000])) == 0


def test_trim_within_one_millisecond_counts_sequence_numbers(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    r.xgroup_create(keys.stream, G, id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.xadd(keys.stream, {"n": str(i)}, id=f"5000-{i}")
    pipe.execute()
    r.xgroup_setid(keys.stream, G, "5000-199")
    assert int(s.trim(keys=[keys.stream], args=[50])) == 150


def test_recover_own_and_orphans_with_poison_and_deleted_payloads(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 6)
    read(r, keys, "dead-worker", 6)
    r.xdel(keys.stream, ids[5])  # payload deleted while pending
    for _ in range(3):  # ids[4] has been delivered 4 times in all
        r.xclaim(keys.stream, G, "dead-worker", 0, [ids[4]])
    now = str(int(time.time() * 1000))
    _, entries, poison, gone = s.recover(keys=[keys.stream, keys.dead_letters],
                                              args=[G, "live", "auto", 0, 100, 3, "0-0", now])
    assert [e[0] for e in entries] == ids[:4]
    assert poison == [ids[4]]
    assert gone == [ids[5]] or ids[5] in gone
    assert r.xlen(keys.dead_letters) == 1
    assert r.xrange(keys.dead_letters)[0][1]["dl_reason"] == "poison"
    pend = r.xpending_range(keys.stream, G, "-", "+", 10)
    assert {p["message_id"] for p in pend} == set(ids[:4])
    assert {p["consumer"] for p in pend} == {"live"}
    # "own" mode hands the same consumer its pending entries back after a restart
    _, own, _, _ = s.recover(keys=[keys.stream, keys.dead_letters], args=[G, "live", "own", 0, 100, 10, "0-0", now])
    assert [e[0] for e in own] == ids[:4]


def test_orphans_younger_than_min_idle_are_left_alone(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    setup_group(r, keys, 3)
    read(r, keys, "busy-worker", 3)
    _, entries, _, _ = s.recover(keys=[keys.stream, keys.dead_letters],
                                 args=[G, "live", "auto", 60_000, 100, 10, "0-0", "0"])
    assert entries == []


def test_heartbeat_keeps_entries_from_being_reclaimed(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 1)
    read(r, keys, "c1")
    idle_before = r.xpending_range(keys.stream, G, "-", "+", 1)[0]["time_since_delivered"]
    deadline = time.monotonic() + 5
    while r.xpending_range(keys.stream, G, "-", "+", 1)[0]["time_since_delivered"] < 50:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert s.heartbeat(keys=[keys.stream], args=[G, "c1", 1000, keys.claim_prefix(G), ids[0], "k0"]) == 1
    after = r.xpending_range(keys.stream, G, "-", "+", 1)[0]
    assert after["time_since_delivered"] < 50 and after["times_delivered"] == 1
    assert idle_before < 50


def test_prune_removes_only_idle_consumers_without_pending(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    setup_group(r, keys, 1)
    read(r, keys, "holder")
    r.xgroup_createconsumer(keys.stream, G, "empty")
    r.xgroup_createconsumer(keys.stream, G, "me")
    removed = s.prune_consumers(keys=[keys.stream], args=[G, 0, "me"])
    assert removed == ["empty"]
    names = {c["name"] for c in r.xinfo_consumers(keys.stream, G)}
    assert names == {"holder", "me"}


def test_breaker_state_machine(r: redis.Redis, keys: Keys) -> None:
    s = register(r)

    def op(name: str, now: int, token: str = "w1") -> list[object]:
        return list(s.breaker(keys=[keys.breaker(G)], args=[name, now, 3, 1000, token]))

    assert op("failure", 0)[0] == "closed"
    assert op("success", 1)[0] == "closed"  # success resets the consecutive count
    assert op("failure", 2)[0] == "closed"
    assert op("failure", 3)[0] == "closed"
    assert op("failure", 4) == ["open", 0, 1]  # third consecutive failure opens it
    assert op("failure", 5) == ["open", 0, 0]
    assert op("check", 500)[0] == "open"  # cooling down
    probe = op("check", 1100, "w1")
    assert probe[:2] == ["half_open", 1]
    assert op("check", 1101, "w2")[:2] == ["half_open", 0]  # only one probe
    assert op("failure", 1200, "w1")[0] == "open"  # failed probe re-opens
    assert op("check", 2300, "w2")[:2] == ["half_open", 1]
    assert op("success", 2400, "w2")[:3] == ["closed", 0, 1]
    assert r.hget(keys.breaker(G), "failures") == "0"


def test_one_settle_call_applies_mixed_outcomes_in_order(r: redis.Redis, keys: Keys) -> None:
    s = register(r)
    ids = setup_group(r, keys, 5)
    read(r, keys, "c1", 5)
    result = settle(s, keys, [("ok", ids[0], "k0"), ("retry", ids[1], "k1", "1", "2", "RetryErr", "later"),
                              ("dup", ids[2], "k2"), ("dead", ids[3], "k3", "DeadErr", "never", "tb", "permanent"),
                              ("retry", ids[4], "k4", "2", "3", "OtherErr", "again")])
    assert result == [1, 1, 1, 1, 1]
    assert r.xpending(keys.stream, G)["pending"] == 0
    assert r.smembers(keys.done_bucket(G, 1)) == {"k0"}
    assert r.zrange(keys.retry_schedule(G), 0, -1, withscores=True) == [(ids[1], 1.0), (ids[4], 2.0)]
    [(_, dead)] = r.xrange(keys.dead_letters)
    assert (dead["idem"], dead["dl_error_type"], dead["dl_reason"]) == ("k3", "DeadErr", "permanent")
    flat = json.loads(r.hget(keys.retry_data(G), ids[4]))  # type: ignore[arg-type]
    assert dict(zip(flat[::2], flat[1::2], strict=True))["last_error"] == "OtherErr: again"
