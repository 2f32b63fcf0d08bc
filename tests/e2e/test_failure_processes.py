"""Failure handling proven with real worker processes: long handlers are never stolen, poison that kills
workers ends in the dead-letter stream, a lagging group keeps its entries through trimming."""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path

import redis

from mailpipe.keys import Keys
from tests.e2e.workers import ROOT, done_keys, executions, finish, start_worker, successes_per_key, wait_for
from tests.util import sample_entry

G = "workers"


def test_long_running_handler_is_not_reclaimed_by_another_process(
        r: redis.Redis, keys: Keys, redis_url: str) -> None:
    for i in range(4):
        r.xadd(keys.stream, sample_entry(i))
    fast_reclaim = {"MAILPIPE_RECLAIM_IDLE_MS": "400", "MAILPIPE_CLAIM_TTL_MS": "400",
                    "MAILPIPE_HOUSEKEEPING_INTERVAL_S": "0.05"}
    owner = start_worker(redis_url, keys, "owner", "--exit-when-idle",
                         env={**fast_reclaim, "MAILPIPE_TEST_DELAY_S": "2.5"})  # 6x the reclaim idle time
    wait_for(lambda: r.exists(keys.stream) and r.xinfo_groups(keys.stream)
             and r.xpending(keys.stream, G)["pending"] == 4, what="owner holds all four")
    thief = start_worker(redis_url, keys, "thief", "--block-ms", "50", env=fast_reclaim)
    code, err = finish(owner)
    assert code == 0, err
    thief.terminate()
    code, err = finish(thief)
    assert code == 0, err
    assert "processed 0" in err  # the second worker never got them
    assert collections.Counter(k for k, _, _ in executions(r)) == {f"k{i}": 1 for i in range(4)}


def test_poison_that_kills_workers_is_dead_lettered(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    for i in range(5):
        r.xadd(keys.stream, sample_entry(i, key="poison-1" if i == 2 else f"k{i}"))
    env = {"MAILPIPE_MAX_DELIVERIES": "3", "PYTHONPATH": str(ROOT)}
    codes = []
    for _ in range(6):  # a supervisor restarting the worker after every crash
        proc = start_worker(redis_url, keys, "w1", "--exit-when-idle", "--concurrency", "1",
                            "--handler", "tests.handlers:kill_on_poison", env=env)
        code, _ = finish(proc)
        codes.append(code)
        if code == 0:
            break
    assert codes[-1] == 0 and codes[0] == -9
    dead = {f["idem"]: f for _, f in r.xrange(keys.dead_letters)}
    assert set(dead) == {"poison-1"} and dead["poison-1"]["dl_reason"] == "poison"
    assert done_keys(r, keys) == {"k0", "k1", "k3", "k4"}
    assert r.xpending(keys.stream, G)["pending"] == 0
    # a handler that finished just before the poison killed the process may run again (its settle was
    # under way): at most a couple per kill with one handler at a time
    kills = codes.count(-9)
    extra = sum(n - 1 for n in successes_per_key(r).values())
    assert extra <= 2 * kills, (extra, kills)


def test_worker_help_explains_every_option() -> None:
    venv = ROOT / ".venv" / "bin" / "python"
    out = subprocess.run([str(venv), str(ROOT / "worker.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for option in ["--consumer", "--group", "--stream", "--handler", "--concurrency", "--batch-size",
                   "--block-ms", "--exit-when-idle", "--redis-url", "--shutdown-timeout", "--metrics-port"]:
        assert option in out.stdout


def test_missing_consumer_name_fails_fast(tmp_path: Path) -> None:
    venv = ROOT / ".venv" / "bin" / "python"
    out = subprocess.run([str(venv), str(ROOT / "worker.py")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "--consumer" in out.stderr and "Traceback" not in out.stderr
