"""End-to-end latency (XADD to handler done) at steady offered loads, and the saturation point.

The bench process is the producer: every millisecond it XADDs, in one pipeline, the entries due by then
at the offered rate, each stamped with the wall clock (``t_ns``) at the moment it is queued. The consumer
records ``now - t_ns`` when its handler finishes and writes the values out when it is stopped (SIGTERM,
graceful). The first 10% of each run is warm-up and left out. At 10,000/s an entry is one of a burst of
10 per millisecond, which is how a steady load looks to Redis from a single producer anyway.

A rate is *sustained* when, at the end of the offered window, the backlog (entries not yet handled) is
under 100 ms of work and p99 is under 100 ms; the saturation point is the highest sustained rate tried.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from bench import venv
from bench.common import Config, cpu_seconds, median, observe_group, terminate, worker_root
from bench.emails import minimal_entry
from bench.throughput import PEERS_DIR, Runner, RunSpec, _popen
from mailpipe.embedded import free_port

Starter = Callable[[RunSpec, Path], list[subprocess.Popen[bytes]]]


def raw_starter(spec: RunSpec, latency_file: Path) -> list[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "bench.raw_consumer", "raw", "--url", spec.url, "--stream", spec.stream,
            "--group", spec.group, "--latency-file", str(latency_file)]
    return [_popen(argv, spec, "raw")]


def mailpipe_starter(spec: RunSpec, latency_file: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        "MAILPIPE_REDIS_URL": spec.url, "MAILPIPE_NAMESPACE": spec.keys.namespace,
        "MAILPIPE_STREAM": spec.keys.stream_name, "MAILPIPE_LOG_LEVEL": "INFO", "MAILPIPE_LOG_FORMAT": "json",
        "MAILPIPE_METRICS_PORT": str(free_port()), "BENCH_LATENCY_FILE": str(latency_file),
    }
    argv = [sys.executable, str(worker_root() / "worker.py"), "--consumer", "c1", "--group", spec.group, "--stream",
            spec.keys.stream_name, "--handler", "bench.handlers:record_latency"]
    return [_popen(argv, spec, "worker", env)]


def faststream_starter(spec: RunSpec, latency_file: Path) -> list[subprocess.Popen[bytes]]:
    argv = [str(venv.python()), "-m", "faststream", "run", "faststream_app:app", "--log-level", "warning"]
    env = {"BENCH_REDIS_URL": spec.url, "BENCH_STREAM": spec.stream, "BENCH_GROUP": spec.group,
           "BENCH_LATENCY_FILE": str(latency_file)}
    return [_popen(argv, spec, "faststream", env, cwd=PEERS_DIR)]


SYSTEMS: dict[str, Starter] = {"raw": raw_starter, "mailpipe": mailpipe_starter,
                               "faststream": faststream_starter}


def offer(r: redis.Redis, stream: str, rate: int, seconds: float) -> tuple[int, float]:
    """XADD at ``rate`` entries/s for ``seconds``; returns (entries sent, seconds taken)."""
    entry: dict[Any, Any] = minimal_entry()
    sent = 0
    start = time.monotonic()
    tick = 0.001
    next_tick = start
    while True:
        now = time.monotonic()
        elapsed = now - start
        if elapsed >= seconds:
            break
        due = min(int(rate * elapsed) + 1, int(rate * seconds)) - sent
        if due > 0:
            pipe = r.pipeline(transaction=False)
            for i in range(due):
                pipe.xadd(stream, {**entry, "idem": f"lat:{sent + i}", "t_ns": str(time.time_ns())})
            pipe.execute()
            sent += due
        next_tick += tick
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_tick = time.monotonic()
    return sent, time.monotonic() - start


def percentiles(values_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(values_ns)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": round(at(0.50), 3), "p95_ms": round(at(0.95), 3), "p99_ms": round(at(0.99), 3),
            "max_ms": round(ordered[-1] / 1e6, 3), "samples": len(ordered)}


def run_once(runner: Runner, system: str, rate: int, seconds: float, timeout_s: float) -> dict[str, Any]:
    spec = runner.new_spec()
    r = runner.r
    r.xgroup_create(spec.stream, spec.group, id="0", mkstream=True)
    latency_file = spec.work_dir / "latency.txt"
    procs = SYSTEMS[system](spec, latency_file)
    try:
        _wait_for_consumer(r, spec, procs, timeout_s)
        pids = [p.pid for p in procs]
        redis_pid = runner.server.proc.pid if runner.server.proc else 0
        cpu0, redis0 = cpu_seconds(pids), cpu_seconds([redis_pid])
        sent, took = offer(runner.rb, spec.stream, rate, seconds)
        consumer_cpu, redis_cpu = cpu_seconds(pids) - cpu0, cpu_seconds([redis_pid]) - redis0
        behind = _backlog(r, spec)
        last_id = runner._last_id(spec.stream)
        observe_group(r, spec.stream, spec.group, last_id, timeout_s, procs)
    finally:
        terminate(procs)
        runner.drop(spec)
    values = [int(line) for line in latency_file.read_text().split()] if latency_file.exists() else []
    values = values[len(values) // 10:]
    result: dict[str, Any] = {"offered_rate": rate, "sent": sent, "achieved_offer_rate": round(sent / took, 1),
                              "backlog_at_end": behind, "consumer_cpu_cores": round(consumer_cpu / took, 3),
                              "redis_cpu_cores": round(redis_cpu / took, 3),
                              "load_average": round(os.getloadavg()[0], 2), **percentiles(values)}
    result["sustained"] = bool(values) and behind <= rate * 0.1 and result["p99_ms"] < 100
    return result


def _wait_for_consumer(r: redis.Redis, spec: RunSpec, procs: Sequence[subprocess.Popen[bytes]],
                       timeout_s: float) -> None:
    """One warm-up entry, handled and acknowledged: the consumer is up (Redis 7.0 lists a consumer only
    once it has read something, so the group cannot tell)."""
    fields: dict[Any, Any] = {**minimal_entry(), "idem": "lat:warm-up", "t_ns": str(time.time_ns())}
    warm_up = r.xadd(spec.stream, fields)
    observe_group(r, spec.stream, spec.group, str(warm_up), timeout_s, procs)


def _backlog(r: redis.Redis, spec: RunSpec) -> int:
    """Entries added but not yet handled: undelivered ones plus delivered-but-unacknowledged ones."""
    info = next(g for g in r.xinfo_groups(spec.stream) if g["name"] == spec.group)
    after: Any = r.xrange(spec.stream, min=f"({info['last-delivered-id']}", count=1_000_000)
    undelivered = len(after) \
        if info["last-delivered-id"] != "0-0" else int(r.xlen(spec.stream))
    return undelivered + int(info["pending"])


def run(runner: Runner, cfg: Config, systems: Sequence[str]) -> dict[str, Any]:
    """Latency at each offered rate (median of ``cfg.runs`` runs) and the saturation point per system."""
    rows: list[dict[str, Any]] = []
    for system in systems:
        for rate in cfg.peer_latency_rates if system == "faststream" else cfg.latency_rates:
            runs = []
            for n in range(cfg.runs):
                print(f"  [{n + 1}/{cfg.runs}] latency {system} at {rate:,}/s ...", end="", file=sys.stderr,
                      flush=True)
                try:
                    runs.append(run_once(runner, system, rate, cfg.latency_seconds, cfg.timeout_s))
                except Exception as exc:  # keep the other figures
                    print(f" FAILED: {exc}", file=sys.stderr, flush=True)
                    rows.append({"system": system, "offered_rate": rate, "error": str(exc)[:300]})
                    break
                print(f" p99 {runs[-1].get('p99_ms')} ms", file=sys.stderr, flush=True)
            if runs:
                rows.append(_median_row(system, rate, runs))
    saturation: dict[str, Any] = {}
    for system in systems:
        if system == "faststream":
            continue  # its throughput (a few thousand a second) is its saturation point
        best = max((row["offered_rate"] for row in rows
                    if row["system"] == system and row.get("sustained")), default=0)
        tried = []
        for rate in cfg.saturation_rates:
            print(f"  saturation {system} at {rate:,}/s ...", end="", file=sys.stderr, flush=True)
            try:
                result = run_once(runner, system, rate, cfg.latency_seconds, cfg.timeout_s)
            except Exception as exc:
                print(f" FAILED: {exc}", file=sys.stderr, flush=True)
                break
            print(f" sustained={result['sustained']} p99 {result.get('p99_ms')} ms", file=sys.stderr, flush=True)
            tried.append(result)
            if not result["sustained"]:
                break
            best = rate
        saturation[system] = {"highest_sustained_rate": best, "steps": tried}
    return {"rows": rows, "saturation": saturation}


def _median_row(system: str, rate: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"system": system, "offered_rate": rate}
    for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "achieved_offer_rate", "backlog_at_end",
                 "consumer_cpu_cores", "redis_cpu_cores"):
        row[name] = round(median([float(run[name]) for run in runs if name in run]), 3)
    row["sustained"] = sum(bool(run["sustained"]) for run in runs) * 2 > len(runs)
    row["runs"] = runs
    return row
