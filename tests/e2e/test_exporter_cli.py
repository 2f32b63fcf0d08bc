"""``python -m mailpipe exporter`` started as a user would: --once, serving, SIGTERM, port in use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import redis

from mailpipe.embedded import free_port
from mailpipe.keys import Keys
from tests.util import sample_entry

SRC = str(Path(__file__).resolve().parents[2] / "src")


def exporter(keys: Keys, redis_url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "MAILPIPE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "mailpipe", "exporter", "--redis-url", redis_url, "--namespace",
         keys.namespace, "--stream", keys.stream_name, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
    )


def test_once_prints_the_state(r: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path) -> None:
    for n in range(3):
        r.xadd(keys.stream, sample_entry(n))
    r.xgroup_create(keys.stream, "workers", id="0")
    proc = exporter(keys, redis_url, "--once", cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert f'mailpipe_stream_entries{{stream="{keys.stream_name}"}} 3.0' in lines
    assert f'mailpipe_group_undelivered_entries{{group="workers",stream="{keys.stream_name}"}} 3.0' in lines
    assert f'mailpipe_exporter_redis_up{{stream="{keys.stream_name}"}} 1.0' in lines


def test_once_with_redis_down_is_one_line_and_exit_3(keys: Keys, tmp_path: Path) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    proc = exporter(keys, url, "--once", cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mailpipe: cannot read the pipeline state from Redis at redis://:***@127.0.0.1")
    assert "s3cret" not in err


def test_serves_until_sigterm(r: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path) -> None:
    r.xadd(keys.stream, sample_entry(1))
    proc = exporter(keys, redis_url, "--port", "0", cwd=tmp_path)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("mailpipe exporter serving http://127.0.0.1:"), first
        url = first.split()[3].removesuffix("/metrics")
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            body = response.read().decode()
        assert f'mailpipe_stream_entries{{stream="{keys.stream_name}"}} 1.0' in body
        with urllib.request.urlopen(url + "/ready", timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use_exits_2_with_one_line(keys: Keys, redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = exporter(keys, redis_url, "--port", str(port), cwd=tmp_path)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip() == (f"mailpipe: port 127.0.0.1:{port} is already in use: set MAILPIPE_METRICS_PORT to a "
                           "free port (0 picks one) or stop the process holding it")
