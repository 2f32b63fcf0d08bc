"""The start/stop/health scripts a supervisor calls, run as a supervisor would, against a real Redis;
and the example systemd units, checked by systemd itself."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mailpipe.embedded import free_port
from mailpipe.keys import Keys
from tests.ops_seed import publish
from tests.util import wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


@pytest.fixture
def env(redis_url: str, keys: Keys, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MAILPIPE_REDIS_URL": redis_url, "MAILPIPE_NAMESPACE": keys.namespace,
            "MAILPIPE_STREAM": keys.stream_name, "MAILPIPE_RUN_DIR": str(tmp_path / "run"),
            "MAILPIPE_LOG_LEVEL": "WARNING", "MAILPIPE_METRICS_PORT": ""}


def sh(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPTS / args[0]), *args[1:]], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def background_worker(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    started = sh(env, "start-worker.sh", "--background", "bg-1", "--metrics-port", str(port))
    assert started.returncode == 0, started.stderr
    yield "bg-1", port
    sh(env, "stop-worker.sh", "bg-1", "10")


def test_background_worker_health_and_warm_stop(env: dict[str, str], background_worker: tuple[str, int],
                                                r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    name, port = background_worker
    pidfile = tmp_path / "run" / f"worker-{name}.pid"
    pid = int(pidfile.read_text())
    assert oct(pidfile.parent.stat().st_mode & 0o777) == "0o700"

    wait_until(lambda: sh(env, "health.sh", "--port", str(port)).returncode == 0, timeout=30, what="/health")
    ready = sh(env, "health.sh", "--ready", "--port", str(port))
    assert ready.returncode == 0 and ready.stdout.startswith("ok:")

    again = sh(env, "start-worker.sh", "--background", name)
    assert again.returncode == 1 and f"already running (pid {pid})" in again.stderr

    publish(r, keys, ["a", "b"])  # the worker is really consuming
    wait_until(lambda: r.xinfo_groups(keys.stream) and r.xinfo_groups(keys.stream)[0]["entries-read"] == 2,
               timeout=30, what="the background worker to read")

    # a breaker opened by the fleet makes the worker not ready: supervisors and balancers see it
    r.hset(keys.breaker("workers"), mapping={"state": "open", "opened_at_ms": 9_999_999_999_999})
    wait_until(lambda: sh(env, "health.sh", "--ready", "--port", str(port)).returncode == 1, timeout=30,
               what="/ready to report the open breaker")
    not_ready = sh(env, "health.sh", "--ready", "--port", str(port))
    assert "HTTP 503" in not_ready.stdout and "circuit breaker open" in not_ready.stdout

    stopped = sh(env, "stop-worker.sh", name)
    assert stopped.returncode == 0 and f"stopped worker-{name} (pid {pid})" in stopped.stdout
    assert not pidfile.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    log = (tmp_path / "run" / f"worker-{name}.log").read_text()
    assert f"worker {name}: processed 2" in log  # the warm stop ran the worker's own shutdown
    unreachable = sh(env, "health.sh", "--port", str(port), "--timeout", "2")
    assert unreachable.returncode == 2 and unreachable.stdout.startswith("unreachable")
    assert sh(env, "stop-worker.sh", name).stdout.strip() == f"worker-{name} is not running"


def test_start_reports_a_worker_that_dies_at_start(env: dict[str, str], tmp_path: Path) -> None:
    bad = {**env, "MAILPIPE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    res = sh(bad, "start-worker.sh", "--background", "doomed")
    assert res.returncode == 1
    assert "exited at start (exit 3)" in res.stderr and "cannot connect to Redis" in res.stderr
    assert not (tmp_path / "run" / "worker-doomed.pid").exists()


def test_foreground_worker_is_the_process_the_supervisor_signals(env: dict[str, str], r: redis.Redis,
                                                                 keys: Keys) -> None:
    publish(r, keys, ["x"])
    drained = sh(env, "start-worker.sh", "fg-1", "--exit-when-idle")
    assert drained.returncode == 0, drained.stderr
    assert "worker fg-1: processed 1" in drained.stderr

    proc = subprocess.Popen([str(SCRIPTS / "start-worker.sh"), "fg-2"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publish(r, keys, ["y"])
    wait_until(lambda: any(c["name"] == "fg-2" for c in r.xinfo_consumers(keys.stream, "workers")), timeout=30,
               what="the foreground worker to read")
    proc.send_signal(signal.SIGTERM)  # what systemd does (KillSignal=SIGTERM, KillMode=mixed)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "worker fg-2: processed 1" in err


def test_script_usage_errors(env: dict[str, str]) -> None:
    assert sh(env, "start-worker.sh").returncode == 2
    assert sh(env, "start-worker.sh", "bad/name").returncode == 2
    assert sh(env, "stop-worker.sh").returncode == 2
    assert sh(env, "stop-worker.sh", "w", "soon").returncode == 2
    assert sh(env, "stop-producer.sh", "x", "y").returncode == 2
    assert sh(env, "health.sh").returncode == 64
    assert sh(env, "health.sh", "--bogus").returncode == 64
    assert "Exit codes" in sh(env, "health.sh", "--help").stdout


def test_producer_scripts_run_a_local_import(env: dict[str, str], r: redis.Redis, keys: Keys) -> None:
    samples = ROOT / "src" / "mailpipe" / "samples"
    once = sh(env, "start-producer.sh", "--source", f"eml:{samples}", "--once")
    assert once.returncode == 0, once.stderr
    assert r.xlen(keys.stream) >= 7
    assert sh(env, "stop-producer.sh").stdout.strip() == "producer is not running"


def test_systemd_units_pass_systemd_analyze(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (no systemd here)")
    for unit in (ROOT / "config" / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/mailpipe", str(ROOT))
        name = unit.name.replace("@.service", "@w1.service")
        (tmp_path / name).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(p.name for p in tmp_path.iterdir())],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if line.strip() and not re.search(r"(Failed to (create|set up)|cgroup|bus|not booted)", line)]
    assert res.returncode == 0 and problems == [], res.stdout + res.stderr
    worker = (ROOT / "config" / "systemd" / "mailpipe-worker@.service").read_text()
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)", worker, re.M).group(1))  # type: ignore[union-attr]
    assert timeout > 2 * 30  # handlers' shutdown timeout + the final settle, both 30 s by default
    assert "KillSignal=SIGTERM" in worker and "Restart=on-failure" in worker and "ExecStart=" in worker
