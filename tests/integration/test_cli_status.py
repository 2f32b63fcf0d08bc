"""`mailpipe status`, `mailpipe pending` and `mailpipe consumers` against a real Redis in a mid-run state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import redis

from mailpipe.cli import main
from mailpipe.embedded import free_port
from mailpipe.keys import Keys
from tests.cli_util import run_cli
from tests.ops_seed import ACCOUNT, MAILBOX, Seed, seed_pipeline
from tests.util import wait_until


@pytest.fixture
def seed(redis_url: str, keys: Keys) -> Seed:
    return seed_pipeline(redis_url, keys)


# --- status --------------------------------------------------------------------------------------


def test_status_json_describes_every_part_of_the_pipeline(redis_url: str, keys: Keys, seed: Seed,
                                                          r: redis.Redis) -> None:
    r.set(keys.lease(ACCOUNT, MAILBOX), "host-a:123:abc", px=30_000)
    res = run_cli(redis_url, keys, "status", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["stream"]["length"] == r.xlen(keys.stream)
    assert doc["dead_letters"]["length"] == len(seed.dead_ids)
    [g] = doc["groups"]
    assert g["name"] == "workers"
    assert g["undelivered"] == len(seed.undelivered_ids)
    assert g["first_undelivered_id"] == seed.undelivered_ids[0]
    assert g["pending"] == len(seed.pending_ids) and g["oldest_pending_id"] == seed.pending_ids[0]
    assert g["oldest_pending_age_ms"] >= 0
    consumers = {c["name"]: c for c in g["consumers"]}
    assert consumers[seed.dead_consumer]["pending"] == 2 and consumers[seed.worker_consumer]["pending"] == 0
    assert g["retry_scheduled"] == len(seed.retry_keys) and g["retry_due"] == 0
    assert 3_000_000 < g["next_retry_in_ms"] <= 3_600_000
    assert g["dedup_keys"] == len(seed.done)
    assert g["breaker_state"] is None
    [mb] = doc["mailboxes"]
    assert (mb["account"], mb["mailbox"]) == (ACCOUNT, MAILBOX)
    assert mb["checkpoint"]["last_uid"] == 42 and mb["checkpoint"]["uidvalidity"] == 7
    assert mb["lease"]["owner"] == "host-a:123:abc" and 0 < mb["lease"]["ttl_ms"] <= 30_000
    assert any("dead letters" in f["text"] for f in doc["findings"])


def test_status_lag_counts_entries_after_last_delivered_id(redis_url: str, keys: Keys, seed: Seed,
                                                           r: redis.Redis) -> None:
    r.xreadgroup("workers", seed.dead_consumer, {keys.stream: ">"})  # deliver everything
    doc = run_cli(redis_url, keys, "status", "--json").json()
    assert doc["groups"][0]["undelivered"] == 0
    assert doc["groups"][0]["first_undelivered_id"] is None


def test_status_human_output_and_findings(redis_url: str, keys: Keys, seed: Seed, r: redis.Redis) -> None:
    r.hset(keys.breaker("workers"), mapping={"state": "open", "opened_at_ms": int(time.time() * 1000) - 5000})
    res = run_cli(redis_url, keys, "status")
    assert res.code == 0, res.err
    out = res.out
    assert f"pipeline {keys.prefix}" in out
    for heading in ("GROUP", "UNDELIVERED", "PENDING", "OLDEST PENDING", "RETRIES", "BREAKER",
                    "consumers of workers", "producer checkpoints"):
        assert heading in out
    row = next(line for line in out.splitlines() if line.startswith("workers "))
    assert "open" in row.split()
    assert "! group workers: circuit breaker open" in out
    assert seed.dead_consumer in out and ACCOUNT in out


def test_status_check_exit_code_follows_warnings(redis_url: str, keys: Keys, seed: Seed, r: redis.Redis,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(redis_url, keys, "status", "--check").code == 0  # info findings only
    r.hset(keys.breaker("workers"), "state", "open")
    assert run_cli(redis_url, keys, "status", "--check").code == 1
    r.delete(keys.breaker("workers"))
    monkeypatch.setenv("MAILPIPE_RECLAIM_IDLE_MS", "100")  # every consumer counts as gone
    wait_until(lambda: all(int(c["idle"]) > 100 for c in r.xinfo_consumers(keys.stream, "workers")),
               what="consumers idle past the threshold")
    res = run_cli(redis_url, keys, "status", "--check")
    assert res.code == 1 and "no live consumer" in res.out


def test_status_group_filter_and_errors(redis_url: str, keys: Keys, seed: Seed, r: redis.Redis) -> None:
    r.xgroup_create(keys.stream, "audit", id="0")
    doc = run_cli(redis_url, keys, "status", "--json", "--group", "audit").json()
    assert [g["name"] for g in doc["groups"]] == ["audit"]
    assert doc["groups"][0]["undelivered"] == r.xlen(keys.stream)
    missing = run_cli(redis_url, keys, "status", "--group", "nope")
    assert missing.code == 1 and "groups: audit, workers" in missing.err
    no_stream = run_cli(redis_url, Keys(stream_name="nothere"), "status")
    assert no_stream.code == 1 and "no stream" in no_stream.err


def test_status_of_a_stream_without_groups(redis_url: str, keys: Keys, r: redis.Redis) -> None:
    r.xadd(keys.stream, {"v": "1"})
    res = run_cli(redis_url, keys, "status")
    assert res.code == 0 and "no consumer group yet" in res.out


# --- pending -------------------------------------------------------------------------------------


def test_pending_lists_entries_with_consumer_idle_and_key(redis_url: str, keys: Keys, seed: Seed) -> None:
    res = run_cli(redis_url, keys, "pending", "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["group"] == "workers" and doc["total_pending"] == 2
    assert doc["per_consumer"] == {seed.dead_consumer: 2}
    assert [e["id"] for e in doc["entries"]] == seed.pending_ids
    assert [e["idempotency_key"] for e in doc["entries"]] == ["fresh-0", "fresh-1"]
    assert all(e["consumer"] == seed.dead_consumer and e["deliveries"] == 1 and e["idle_ms"] >= 0
               for e in doc["entries"])
    assert doc["entries"][0]["subject"] == "subject of fresh-0"

    human = run_cli(redis_url, keys, "pending")
    assert human.code == 0 and "fresh-0" in human.out and "2 shown of 2 pending" in human.out


def test_pending_filters(redis_url: str, keys: Keys, seed: Seed) -> None:
    def ids(*args: str) -> list[str]:
        res = run_cli(redis_url, keys, "pending", "--json", *args)
        assert res.code == 0, res.err
        return [e["id"] for e in res.json()["entries"]]

    assert ids("--consumer", seed.dead_consumer) == seed.pending_ids
    assert ids("--consumer", seed.worker_consumer) == []
    assert ids("--min-idle", "1h") == []
    assert ids("--min-idle", "0") == seed.pending_ids
    assert ids("--limit", "1") == seed.pending_ids[:1]
    unknown = run_cli(redis_url, keys, "pending", "--consumer", "nobody")
    assert unknown.code == 1 and seed.dead_consumer in unknown.err


def test_pending_shows_deleted_payloads_and_needs_a_group_choice(redis_url: str, keys: Keys, seed: Seed,
                                                                  r: redis.Redis) -> None:
    r.xdel(keys.stream, seed.pending_ids[0])
    doc = run_cli(redis_url, keys, "pending", "--json").json()
    assert [e["payload"] for e in doc["entries"]] == [False, True]
    assert "payload deleted" in run_cli(redis_url, keys, "pending").out
    r.xgroup_create(keys.stream, "audit", id="0")
    ambiguous = run_cli(redis_url, keys, "pending")
    assert ambiguous.code == 2 and "--group" in ambiguous.err
    assert run_cli(redis_url, keys, "pending", "--group", "audit", "--json").json()["total_pending"] == 0


# --- consumers -----------------------------------------------------------------------------------


def test_consumers_list(redis_url: str, keys: Keys, seed: Seed) -> None:
    res = run_cli(redis_url, keys, "consumers", "list", "--json")
    assert res.code == 0, res.err
    rows = {c["name"]: c for c in res.json()}
    assert rows[seed.dead_consumer]["pending"] == 2 and rows[seed.worker_consumer]["pending"] == 0
    assert all(c["group"] == "workers" and c["live"] for c in rows.values())
    human = run_cli(redis_url, keys, "consumers", "list")
    assert human.code == 0 and seed.dead_consumer in human.out and "live" in human.out


def test_consumers_prune_keeps_consumers_with_pending_entries(redis_url: str, keys: Keys, seed: Seed,
                                                              r: redis.Redis) -> None:
    def names() -> set[str]:
        return {str(c["name"]) for c in r.xinfo_consumers(keys.stream, "workers")}

    refused = run_cli(redis_url, keys, "consumers", "prune", "--idle-ms", "0")
    assert refused.code == 2 and seed.worker_consumer in refused.out
    assert f"kept workers/{seed.dead_consumer}" in refused.out
    assert names() == {seed.dead_consumer, seed.worker_consumer}

    nothing = run_cli(redis_url, keys, "consumers", "prune", "--idle-ms", "1h", "--yes", "--json")
    assert nothing.code == 0 and nothing.json()["removed"] == []

    done = run_cli(redis_url, keys, "consumers", "prune", "--idle-ms", "0", "--yes", "--json")
    assert done.code == 0, done.err
    assert done.json()["removed"] == [{"group": "workers", "name": seed.worker_consumer}]
    assert [k["name"] for k in done.json()["kept"]] == [seed.dead_consumer]
    assert names() == {seed.dead_consumer}
    assert r.xpending(keys.stream, "workers")["pending"] == 2  # nothing pending was thrown away


# --- every command: help, and the console entry point as scripts call it -------------------------

HELP = [["dlq", "list"], ["dlq", "show"], ["dlq", "replay"], ["dlq", "purge"], ["status"], ["pending"],
        ["consumers", "list"], ["consumers", "prune"], ["checkpoint", "show"], ["checkpoint", "set"],
        ["checkpoint", "reset"], ["replay"]]


@pytest.mark.parametrize("argv", HELP, ids=[" ".join(a) for a in HELP])
def test_every_command_has_help_with_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--redis-url" in out and f"mailpipe {' '.join(argv)}" in out


def test_console_entry_point_exit_codes(redis_url: str, keys: Keys, seed: Seed) -> None:
    common = ["--namespace", keys.namespace, "--stream", keys.stream_name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPIPE_")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailpipe", *argv], capture_output=True, text=True, env=env,
                              timeout=60)

    ok = run("status", "--json", "--redis-url", redis_url, *common)
    assert ok.returncode == 0 and json.loads(ok.stdout)["groups"][0]["name"] == "workers"
    down = run("status", "--redis-url", f"redis://user:secret@127.0.0.1:{free_port()}/0", *common)
    assert down.returncode == 3 and down.stdout == "" and down.stderr.count("\n") == 1
    assert "secret" not in down.stderr and "user:***@" in down.stderr
    assert run("status", "--bogus").returncode == 2
    assert run("dlq", "purge", "--all", "--redis-url", redis_url, *common).returncode == 2
