"""Backup of a live pipeline in mid-run, restore into a fresh Redis, workers continue there.

Source: a real worker process has processed some mail, dead-lettered some, scheduled retries for
others and holds two entries in flight (handlers that never return); undelivered mail and duplicates
of processed mail wait in the stream; a publisher keeps writing while the backup runs. The worker is
frozen (SIGSTOP, so it changes nothing after the snapshot) and the backup is taken with
``scripts/backup.py``; then the worker is killed. Target: ``scripts/restore.py`` into a second server and
a worker process with ``--exit-when-idle``. Every email must have been handled exactly once overall
(source + target), the in-flight ones recovered, the retries run, the dead letters intact.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mailpipe.embedded import RedisServerProcess
from mailpipe.errors import ConfigError
from mailpipe.keys import Keys
from tests.conftest import server_missing
from tests.ops_handlers import EXECUTIONS, STARTED
from tests.ops_seed import publish
from tests.util import wait_until

ROOT = Path(__file__).resolve().parents[2]
KEYS = Keys("mailpipe", "mail")
OK = [f"ok-{i}" for i in range(20)]
PERM = [f"perm-{i}" for i in range(3)]
FLAKY = [f"flaky-{i}" for i in range(3)]
HANG = ["hang-0"]
FRESH = [f"fresh-{i}" for i in range(5)]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServerProcess, RedisServerProcess]]:
    source = RedisServerProcess(data_dir=tmp_path / "source")
    target = RedisServerProcess(data_dir=tmp_path / "target")
    try:
        source.start()
        target.start()
    except ConfigError as exc:
        server_missing(f"a Redis server ({exc})")
    yield source, target
    source.stop()
    target.stop()


def start_worker(url: str, record_url: str, phase: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAILPIPE_TEST_RECORD_URL": record_url,
           "MAILPIPE_TEST_PHASE": phase, "MAILPIPE_HOUSEKEEPING_INTERVAL_S": "5"}
    cmd = [sys.executable, str(ROOT / "worker.py"), "--consumer", "w1", "--redis-url", url,
           "--handler", "tests.ops_handlers:handle", "--log-level", "WARNING", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MAILPIPE_REDIS_URL": ""})


def test_workers_continue_where_the_backup_left_off(servers: tuple[RedisServerProcess, RedisServerProcess],
                                                    redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    source_server, target_server = servers
    src = redis.Redis.from_url(source_server.url, decode_responses=True)
    dst = redis.Redis.from_url(target_server.url, decode_responses=True)
    # the hanging one last: a sync handler that never returns must not hold back mail queued behind it
    # on the same handler thread
    publish(src, KEYS, OK[:10] + PERM + FLAKY + OK[10:] + HANG)

    worker = start_worker(source_server.url, redis_url, "source")
    try:
        def quiescent() -> bool:
            return (r.llen(EXECUTIONS) == len(OK) and r.llen(STARTED) == len(HANG)
                    and src.xlen(KEYS.dead_letters) == len(PERM)
                    and src.zcard(KEYS.retry_schedule("workers")) == len(FLAKY)
                    and src.xpending(KEYS.stream, "workers")["pending"] == len(HANG))

        try:
            wait_until(quiescent, timeout=30, what="the source worker to reach its mid-run state")
        except AssertionError:
            raise AssertionError(
                f"executions {r.llen(EXECUTIONS)}/{len(OK)}, started {r.lrange(STARTED, 0, -1)}, dead "
                f"{src.xlen(KEYS.dead_letters)}, retries {src.zcard(KEYS.retry_schedule('workers'))}, pending "
                f"{src.xpending(KEYS.stream, 'workers')['pending']}") from None
        worker.send_signal(signal.SIGSTOP)  # frozen: nothing it does can land after the snapshot
        publish(src, KEYS, OK[:5] + FRESH)  # duplicates of processed mail, and new mail, undelivered

        stop = threading.Event()

        def keep_publishing() -> None:  # a producer writing while the backup runs
            n = 0
            while not stop.is_set():
                publish(src, KEYS, [f"late-{n}"])
                n += 1

        writer = threading.Thread(target=keep_publishing)
        writer.start()
        archive = tmp_path / "mail.tar.gz"
        try:
            backup = script("backup.py", "--redis-url", source_server.url, str(archive), "--json")
        finally:
            stop.set()
            writer.join()
        assert backup.returncode == 0, backup.stderr
        summary = json.loads(backup.stdout)
        assert summary["by_kind"]["retry_schedule"]["size"] == len(FLAKY)
        assert summary["by_kind"]["dead_letters"]["size"] == len(PERM)
        # hang-* in flight, plus whatever the worker's blocked XREADGROUP was served after the freeze
        assert summary["groups"][0]["pending"] >= len(HANG)
    finally:
        worker.kill()
        worker.wait(30)
        for pipe in (worker.stdout, worker.stderr):
            if pipe:
                pipe.close()

    restored = script("restore.py", "--redis-url", target_server.url, str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "verified" in restored.stdout
    dead_at_backup = dst.xrange(KEYS.dead_letters)
    late_in_backup = {f["idem"] for _, f in dst.xrange(KEYS.stream) if f["idem"].startswith("late-")}
    assert late_in_backup, "the publisher wrote nothing before the snapshot"

    target = start_worker(target_server.url, redis_url, "target", "--exit-when-idle")
    try:
        _, err = target.communicate(timeout=120)
    finally:
        if target.poll() is None:
            target.kill()
            target.wait()
    assert target.returncode == 0, err.decode()[-2000:]

    runs = [line.split() for line in r.lrange(EXECUTIONS, 0, -1)]
    per_key = collections.Counter(key for key, *_ in runs)
    expected = set(OK + FLAKY + HANG + FRESH) | late_in_backup
    assert {k for k, n in per_key.items() if n != 1} == set(), per_key
    assert set(per_key) == expected  # nothing of the source's later writes ran, nothing was lost
    phase = {key: p for key, p, *_ in runs}
    assert {k for k in OK if phase[k] == "target"} == set()  # done before the backup: never again
    assert {phase[k] for k in HANG + FRESH + FLAKY} == {"target"}  # in flight / undelivered / scheduled
    assert {int(attempt) for key, _, _, attempt in runs if key in FLAKY} == {2}

    assert dst.xpending(KEYS.stream, "workers")["pending"] == 0
    assert dst.zcard(KEYS.retry_schedule("workers")) == 0 and dst.hlen(KEYS.retry_data("workers")) == 0
    assert dst.xrange(KEYS.dead_letters) == dead_at_backup == src.xrange(KEYS.dead_letters)
    assert {f["idem"] for _, f in dead_at_backup} == set(PERM)
