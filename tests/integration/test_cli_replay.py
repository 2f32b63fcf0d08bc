"""`mailpipe replay` against a real Redis, with real workers of two groups processing the copies."""

from __future__ import annotations

import collections

import pytest
import redis

from mailpipe.entry import Message
from mailpipe.errors import PermanentError
from mailpipe.handler import Context
from mailpipe.keys import Keys
from tests.cli_util import drain, run_cli
from tests.ops_seed import publish


class Recorder:
    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.failing = failing

    def __call__(self, message: Message, ctx: Context) -> None:
        self.runs[message.idempotency_key] += 1
        if message.idempotency_key in self.failing:
            raise PermanentError("broken until the fix")


@pytest.fixture
def ids(redis_url: str, keys: Keys, r: redis.Redis) -> list[str]:
    """k0..k9 processed by groups workers and audit; k3 failed for good in workers (dead-lettered)."""
    stream_ids = publish(r, keys, [f"k{i}" for i in range(10)])
    for group in ("workers", "audit"):
        r.xgroup_create(keys.stream, group, id="0")
    drain(redis_url, keys, Recorder(frozenset({"k3"})), group="workers")
    drain(redis_url, keys, Recorder(), group="audit")
    assert r.xlen(keys.dead_letters) == 1
    return stream_ids


def test_dry_run_reports_and_changes_nothing(redis_url: str, keys: Keys, ids: list[str], r: redis.Redis) -> None:
    res = run_cli(redis_url, keys, "replay", "--from-id", ids[0], "--dry-run", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["dry_run"] is True and doc["selected"] == 10 and doc["copies"] == []
    assert doc["already_done"] == {"workers": 9, "audit": 10}
    assert r.xlen(keys.stream) == 10
    human = run_cli(redis_url, keys, "replay", "--since", "1h", "--dry-run")
    assert human.code == 0 and "would re-publish 10 entries" in human.out
    assert "group workers: 9 of 10 keys are already done" in human.out


def test_plain_replay_runs_only_what_never_succeeded(redis_url: str, keys: Keys, ids: list[str],
                                                     r: redis.Redis) -> None:
    refused = run_cli(redis_url, keys, "replay", "--since", "1h")
    assert refused.code == 2 and r.xlen(keys.stream) == 10
    res = run_cli(redis_url, keys, "replay", "--since", "1h", "--yes", "--json")
    assert res.code == 0, res.err
    copies = res.json()["copies"]
    assert [c["source_id"] for c in copies] == ids
    for c in copies:
        [(_, fields)] = r.xrange(keys.stream, c["stream_id"], c["stream_id"])
        assert fields["attempt"] == "1" and fields["grp"] == "" and fields["replay_of"] == c["source_id"]
        assert "replay" not in fields

    workers, audit = Recorder(), Recorder()
    summary = drain(redis_url, keys, workers, group="workers")
    drain(redis_url, keys, audit, group="audit")
    assert workers.runs == {"k3": 1}  # the one that failed before; the fixed handler now succeeds
    assert summary.duplicates == 9
    assert audit.runs == {}


def test_forced_replay_reruns_done_keys_in_one_group_only(redis_url: str, keys: Keys, ids: list[str],
                                                          r: redis.Redis) -> None:
    ambiguous = run_cli(redis_url, keys, "replay", "--since", "1h", "--bypass-idempotency", "--yes")
    assert ambiguous.code == 2 and "--group" in ambiguous.err
    res = run_cli(redis_url, keys, "replay", "--from-id", ids[2], "--until", ids[4], "--group", "workers",
                  "--bypass-idempotency", "--yes")
    assert res.code == 0, res.err
    assert "replay=force" in res.out and "including 2 already done" in res.out
    workers, audit = Recorder(), Recorder()
    drain(redis_url, keys, workers, group="workers")
    drain(redis_url, keys, audit, group="audit")
    assert workers.runs == {"k2": 1, "k3": 1, "k4": 1}
    assert audit.runs == {}


def test_one_copy_per_key_and_range_bounds(redis_url: str, keys: Keys, ids: list[str], r: redis.Redis) -> None:
    again = publish(r, keys, ["k0", "k1", "k10"])  # k0 and k1 a second time (e.g. re-published mail)
    res = run_cli(redis_url, keys, "replay", "--from-id", ids[0], "--dry-run", "--json")
    doc = res.json()
    assert doc["selected"] == 11 and doc["skipped"]["same_key_again"] == 2
    limited = run_cli(redis_url, keys, "replay", "--from-id", ids[0], "--limit", "4", "--dry-run", "--json")
    assert limited.json()["selected"] == 4
    tail = run_cli(redis_url, keys, "replay", "--from-id", again[2], "--dry-run", "--json")
    assert tail.json()["selected"] == 1


def test_nothing_to_replay_and_bad_ranges(redis_url: str, keys: Keys, ids: list[str], r: redis.Redis) -> None:
    future = run_cli(redis_url, keys, "replay", "--from-id", "99999999999999-0", "--yes")
    assert future.code == 1 and "no entries" in future.err
    backwards = run_cli(redis_url, keys, "replay", "--from-id", ids[5], "--until", ids[1], "--yes")
    assert backwards.code == 2
    bad_time = run_cli(redis_url, keys, "replay", "--since", "yesterday-ish", "--yes")
    assert bad_time.code == 2
    r.xtrim(keys.stream, maxlen=5, approximate=False)
    trimmed = run_cli(redis_url, keys, "replay", "--from-id", "0-1", "--dry-run")
    assert trimmed.code == 0 and "the stream was trimmed" in trimmed.out
