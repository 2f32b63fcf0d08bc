"""What every part of the benchmark shares: the run configuration, timing by observing the consumer
group from outside, CPU accounting from /proc, and the machine description written into the JSON.

Every consumer under test runs in its own process and is timed the same way: the bench polls
``XINFO GROUPS`` and takes the interval from the first delivery to the moment every entry is delivered
and acknowledged. Process start-up and imports are therefore not counted, for anyone.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def worker_root() -> Path:
    """The checkout whose ``worker.py`` the bench runs: this one, or BENCH_WORKER_ROOT (``--worker-root``)."""
    return Path(os.environ.get("BENCH_WORKER_ROOT") or ROOT)


@dataclass
class Config:
    """Sizes of one benchmark run; ``quick`` shrinks everything to a smoke run."""

    quick: bool = False
    long: bool = False
    runs: int = 3
    # Entries per run, sized so one run takes seconds at the rates seen here (the whole `all` must stay
    # under 10 minutes on 2 cores); timing starts at the first delivery, so start-up is never counted.
    entries: int = 100_000  # raw loops (~50-140k/s)
    worker_entries: int = 30_000  # mailpipe with a no-op handler at concurrency 64
    slow_entries: int = 5_000  # consumers doing a few thousand a second (naive loop, peers)
    c1_entries: int = 3_000  # mailpipe at concurrency 1
    sleep_entries_c1: int = 1_000  # a 1 ms handler at concurrency 1 (< 1,000/s by construction)
    latency_seconds: float = 3.0  # duration of one offered-load step
    latency_rates: tuple[int, ...] = (1_000, 5_000, 10_000)
    peer_latency_rates: tuple[int, ...] = (1_000,)  # the peers saturate at a few thousand a second
    saturation_rates: tuple[int, ...] = (15_000, 20_000, 30_000, 40_000, 60_000)
    ingest_messages: int = 10_000
    ingest_runs: int = 1  # a first sync of 10,000 messages takes about a minute for the slower tool
    memory_entries: int = 200_000
    processes: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))
    timeout_s: float = 300.0

    @classmethod
    def make(cls, *, quick: bool, long: bool) -> Config:
        if quick:
            return cls(
                quick=True, runs=1, entries=3_000, worker_entries=3_000, slow_entries=600, c1_entries=300,
                sleep_entries_c1=100, latency_seconds=1.0, latency_rates=(1_000,), saturation_rates=(),
                ingest_messages=200, memory_entries=3_000, timeout_s=60.0,
            )
        if long:
            return cls(long=True, memory_entries=1_000_000, ingest_runs=3)
        return cls()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


# --- timing a consumer group from outside --------------------------------------------------------

@dataclass
class GroupTiming:
    first_s: float  # monotonic time the first entry was seen delivered
    done_s: float  # monotonic time every entry was delivered and acknowledged

    @property
    def seconds(self) -> float:
        return max(self.done_s - self.first_s, 1e-9)


def _group_info(r: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    for info in r.xinfo_groups(stream):
        if info["name"] == group:
            return dict(info)
    return None


def observe_group(
    r: redis.Redis, stream: str, group: str, last_id: str, timeout_s: float,
    procs: Sequence[subprocess.Popen[bytes]] = (), on_first: Callable[[], None] | None = None,
) -> GroupTiming:
    """Wait until ``group`` has delivered and acknowledged everything up to ``last_id``.

    ``last-delivered-id`` is compared rather than ``lag``, which Redis 7.0 can over-report. Fails fast
    when every consumer process has exited before the work is done.
    """
    deadline = time.monotonic() + timeout_s
    first: float | None = None
    while True:
        now = time.monotonic()
        info = _group_info(r, stream, group)
        delivered = info["last-delivered-id"] if info else "0-0"
        if first is None and delivered != "0-0":
            first = now
            if on_first is not None:
                on_first()
        if info and delivered == last_id and info["pending"] == 0:
            assert first is not None
            return GroupTiming(first, now)
        if now > deadline:
            raise TimeoutError(f"group {group} on {stream} not done after {timeout_s:.0f}s (info: {info})")
        if procs and all(p.poll() is not None for p in procs):
            raise RuntimeError(
                f"every consumer exited before group {group} was done "
                f"(exit codes {[p.returncode for p in procs]}, info: {info})"
            )
        time.sleep(0.002 if first is None else 0.005)


# --- CPU accounting ---------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the command name may contain spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (worker pools spawn children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (each with its descendants)."""
    total = 0
    for root in pids:
        for pid in process_tree(root):
            fields = _stat_fields(pid)
            if fields:
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- processes -----------------------------------------------------------------------------------

def stop_processes(procs: Sequence[subprocess.Popen[bytes]], *, wait_s: float = 10.0) -> None:
    """Let processes that exit by themselves finish, then SIGTERM (graceful) and finally SIGKILL."""
    deadline = time.monotonic() + wait_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def terminate(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    stop_processes(procs, wait_s=10.0)


# --- machine and versions ------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(redis_url: str) -> dict[str, Any]:
    r = client(redis_url)
    server = r.info("server")
    r.close()
    mem_total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_total = int(line.split()[1]) * 1024
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": mem_total,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "redis_server": f"{server.get('redis_version')} ({'valkey' if 'valkey' in str(server) else 'redis'})",
        "load_average_start": list(os.getloadavg()),
    }


def package_versions(extra: dict[str, str | None] | None = None) -> dict[str, str | None]:
    versions = {name: _version_of(name) for name in ("mailpipe", "redis", "hiredis", "prometheus-client",
                                                      "python-json-logger")}
    versions.update(extra or {})
    return versions
