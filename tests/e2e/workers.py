"""Starting real ``worker.py`` processes and reading back what they did."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from mailpipe.keys import Keys
from tests.handlers import EXECUTIONS

ROOT = Path(__file__).resolve().parents[2]


def start_worker(redis_url: str, keys: Keys, consumer: str, *extra: str, env: dict[str, str] | None = None,
                 stderr_file: Path | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(ROOT / "worker.py"), "--consumer", consumer, "--redis-url", redis_url,
           "--namespace", keys.namespace, "--stream", keys.stream_name, "--handler", "tests.handlers:record",
           "--log-level", "WARNING", *extra]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "MAILPIPE_TEST_RECORD_URL": redis_url, **(env or {})}
    stderr = open(stderr_file, "wb") if stderr_file else subprocess.PIPE  # noqa: SIM115  (owned by the child)
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=stderr)


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"worker did not finish within {timeout}s: {err.decode()[-2000:]}") from None
    return proc.returncode, (err or b"").decode()


def executions(r: redis.Redis) -> list[tuple[str, int, str]]:
    """(key, attempt, outcome) of every handler execution, in order."""
    out = []
    for line in r.lrange(EXECUTIONS, 0, -1):
        key, attempt, outcome, *_ = str(line).split()
        out.append((key, int(attempt), outcome))
    return out


def successes_per_key(r: redis.Redis) -> collections.Counter[str]:
    return collections.Counter(k for k, _, outcome in executions(r) if outcome == "ok")


def done_keys(r: redis.Redis, keys: Keys, group: str = "workers") -> set[str]:
    found: set[str] = set()
    for name in r.scan_iter(match=f"{keys.prefix}:g:{group}:done:*"):
        found |= {str(m) for m in r.smembers(name)}  # type: ignore[union-attr]
    return found


def wait_for(condition: object, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
