"""The benchmark still works: ``python -m bench ... --quick`` runs the parts that need nothing beyond the
project's own environment and a Redis server, and writes its JSON with figures in it.

Speed is never asserted here (figures on a shared machine mean nothing for pass/fail); only that every
part produced numbers, the machine and versions are recorded, and the tables were printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mailpipe.embedded import server_binary
from mailpipe.errors import ConfigError
from tests.conftest import server_missing

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_figures(tmp_path: Path) -> None:
    try:
        server_binary()
    except ConfigError as exc:
        server_missing(f"a Redis server binary ({exc})")
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "raw", "naive", "mailpipe", "latency", "memory", "--quick",
         "--no-peers", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Throughput" in result.stdout and "Targets" in result.stdout

    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["redis_server"]
    assert len(doc["machine"]["load_average_start"]) == 3
    assert doc["versions"]["mailpipe"]
    rows = {row["key"]: row for row in doc["throughput"]}
    for key in ("raw", "raw_idem", "naive", "mailpipe_1p_noop_c64", "mailpipe_1p_sleep_async_c64"):
        assert rows[key].get("rate", 0) > 0, rows[key]
        assert rows[key]["runs"][0]["exit_codes"] == [0] * len(rows[key]["runs"][0]["exit_codes"])
    assert "evalsha" in rows["mailpipe_1p_noop_c64"]["runs"][0]["redis_calls_by_command"]
    latency = {(row["system"], row["offered_rate"]): row for row in doc["latency"]["rows"]}
    for system in ("raw", "mailpipe"):
        row = latency[(system, 1_000)]
        assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"], row
    memory = doc["memory"]
    assert memory["worker_rss"]["rss_end_mb"] > 0
    assert memory["worker_rss"]["dedup"]["keys"] == memory["worker_rss"]["entries"]
    assert memory["worker_rss"]["claim_keys_left"] == 0
    assert memory["redis_per_entry"]["2-200 KB mix"]["bytes_per_entry"] > 0
