"""The README's run command and the example handler, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from mailpipe.embedded import answers_ping, free_port
from tests.e2e.workers import ROOT


def test_run_command_with_embedded_redis(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MAILPIPE_EMBEDDED_PORT": str(port), "MAILPIPE_EMBEDDED_DIR": str(tmp_path / "redis")}
    env.pop("MAILPIPE_REDIS_URL", None)
    result = subprocess.run(["bash", "scripts/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(embedded server)" in result.stdout
    assert "processed 7, skipped as duplicate 1 (producer 1, worker 0), failed 0" in result.stdout
    assert not answers_ping(port)  # it stopped the server it started
    assert (tmp_path / "redis" / "appendonlydir").is_dir()  # and kept the data


def test_demo_against_a_configured_redis_is_repeatable(redis_url: str) -> None:
    env = {**os.environ, "MAILPIPE_REDIS_URL": redis_url}
    outputs = [subprocess.run([sys.executable, "-m", "mailpipe", "demo"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120) for _ in range(2)]
    for out in outputs:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "processed 7, skipped as duplicate 1" in out.stdout
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.xlen("mailpipe:{demo}:stream") == 7


def test_example_handler_classifies_every_sample(redis_url: str, tmp_path: Path) -> None:
    out_file = tmp_path / "classified.jsonl"
    env = {**os.environ, "MAILPIPE_REDIS_URL": redis_url, "MAILPIPE_EXAMPLE_OUT": str(out_file),
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "mailpipe", "demo", "--handler", "examples.classify:handle"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(lines) == 7 and len({x["idempotency_key"] for x in lines}) == 7
    assert {x["label"] for x in lines} <= {"invoice", "newsletter", "notification", "personal"}
    assert "invoice" in {x["label"] for x in lines}
