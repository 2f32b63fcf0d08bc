"""Throughput: a stream pre-filled with N entries, one consumer set started, timed from outside.

Each run copies a template stream (filled once per payload and format) to a fresh pipeline, creates the
consumer group at 0, starts the consumer process(es) and times them with :func:`observe_group`. CPU used
by the consumer processes and by redis-server in that interval is read from /proc, which tells whether
the consumer or Redis is the bottleneck. Runs are interleaved across scenarios (run 1 of each, then run 2
of each, ...) so that load from elsewhere on the machine spreads over all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import venv
from bench.common import (
    ROOT,
    Config,
    GroupTiming,
    client,
    cpu_seconds,
    median,
    observe_group,
    stop_processes,
    worker_root,
)
from bench.emails import payload_entry
from mailpipe.embedded import RedisServerProcess, free_port
from mailpipe.keys import Keys

NAMESPACE = "bench"
GROUP = "bench"
PEERS_DIR = ROOT / "bench" / "peers"


@dataclass
class RunSpec:
    """Where one run happens: its pipeline in Redis and a directory for logs."""

    url: str
    keys: Keys
    group: str
    work_dir: Path

    @property
    def stream(self) -> str:
        return self.keys.stream


Starter = Callable[[RunSpec], list[subprocess.Popen[bytes]]]


@dataclass
class Scenario:
    key: str
    label: str
    family: str  # raw | naive | mailpipe | peer
    entries: int
    start: Starter
    payload: str = "minimal"
    fmt: str = "mailpipe"  # how the template entries are encoded: mailpipe | faststream | taskiq
    params: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Runs scenarios against one Redis server; keeps template streams between runs."""

    def __init__(self, server: RedisServerProcess, work_dir: Path) -> None:
        self.server = server
        self.url = server.url
        self.r = client(server.url)
        self.rb = redis.Redis.from_url(server.url)
        self.work_dir = work_dir
        self.templates: dict[tuple[str, str, int], str] = {}
        self.seq = 0

    def template(self, fmt: str, payload: str, count: int) -> str:
        key = (fmt, payload, count)
        if key not in self.templates:
            name = f"bench:template:{fmt}:{payload}:{count}"
            self.r.delete(name)
            entry: dict[Any, Any] = payload_entry(payload)
            if fmt == "mailpipe":
                for start in range(0, count, 1000):
                    pipe = self.r.pipeline(transaction=False)
                    for n in range(start, min(start + 1000, count)):
                        pipe.xadd(name, {**entry, "idem": f"bench:{n}"})
                    pipe.execute()
            else:
                payload_file = self.work_dir / f"payload-{payload}.json"
                payload_file.write_text(json.dumps(entry))
                script = PEERS_DIR / f"{fmt}_app.py"
                subprocess.run(
                    [str(venv.python()), str(script), "fill", str(count), str(payload_file)],
                    env={**os.environ, "BENCH_REDIS_URL": self.url, "BENCH_STREAM": name},
                    check=True, cwd=PEERS_DIR,
                )
            self.templates[key] = name
        return self.templates[key]

    def _last_id(self, stream: str) -> str:
        # Through a bytes client: peers store binary payloads that must not be decoded.
        newest: Any = self.rb.xrevrange(stream, count=1)
        return str(newest[0][0].decode())

    def new_spec(self) -> RunSpec:
        self.seq += 1
        run_dir = self.work_dir / f"run{self.seq}"
        run_dir.mkdir(parents=True, exist_ok=True)
        return RunSpec(self.url, Keys(NAMESPACE, f"r{self.seq}"), GROUP, run_dir)

    def drop(self, spec: RunSpec) -> None:
        for key in self.r.scan_iter(match=spec.keys.pattern(), count=1000):
            self.r.unlink(key)

    def run_once(self, scenario: Scenario, timeout_s: float) -> dict[str, Any]:
        spec = self.new_spec()
        template = self.template(scenario.fmt, scenario.payload, scenario.entries)
        self.r.copy(template, spec.stream)
        self.r.xgroup_create(spec.stream, spec.group, id="0")
        last_id = self._last_id(spec.stream)
        calls_before = command_calls(self.r)
        started = time.monotonic()
        procs = scenario.start(spec)
        pids = [p.pid for p in procs]
        redis_pid = self.server.proc.pid if self.server.proc else 0
        marks: dict[str, float] = {}

        def on_first() -> None:
            marks["worker"] = cpu_seconds(pids)
            marks["redis"] = cpu_seconds([redis_pid])

        try:
            timing: GroupTiming = observe_group(self.r, spec.stream, spec.group, last_id, timeout_s, procs,
                                                on_first=on_first)
            worker_cpu = cpu_seconds(pids) - marks["worker"]
            redis_cpu = cpu_seconds([redis_pid]) - marks["redis"]
        finally:
            stop_processes(procs, wait_s=5.0)
            calls = command_calls(self.r, since=calls_before)
            self.drop(spec)
        return {
            "entries": scenario.entries,
            "seconds": round(timing.seconds, 4),
            "rate": round(scenario.entries / timing.seconds, 1),
            "startup_s": round(timing.first_s - started, 3),
            "consumer_cpu_cores": round(worker_cpu / timing.seconds, 3),
            "redis_cpu_cores": round(redis_cpu / timing.seconds, 3),
            "consumer_cpu_us_per_entry": round(worker_cpu / scenario.entries * 1e6, 2),
            "redis_cpu_us_per_entry": round(redis_cpu / scenario.entries * 1e6, 2),
            "redis_calls_per_entry": round(sum(calls.values()) / scenario.entries, 3),
            "redis_calls_by_command": calls,
            "exit_codes": [p.returncode for p in procs],
            "load_average": round(os.getloadavg()[0], 2),
        }

    def run_all(self, scenarios: Sequence[Scenario], cfg: Config) -> list[dict[str, Any]]:
        """Every scenario ``cfg.runs`` times, interleaved; one summary per scenario (median rate)."""
        runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in scenarios}
        errors: dict[str, str] = {}
        for round_no in range(cfg.runs):
            for scenario in scenarios:
                if scenario.key in errors:
                    continue
                print(f"  [{round_no + 1}/{cfg.runs}] {scenario.label} ...", end="", file=sys.stderr,
                      flush=True)
                try:
                    result = self.run_once(scenario, cfg.timeout_s)
                except Exception as exc:  # one broken scenario must not lose the others' figures
                    errors[scenario.key] = f"{type(exc).__name__}: {exc}"[:500]
                    print(f" FAILED: {errors[scenario.key]}", file=sys.stderr, flush=True)
                    continue
                runs[scenario.key].append(result)
                print(f" {result['rate']:,.0f}/s", file=sys.stderr, flush=True)
        return [summarize(s, runs[s.key], errors.get(s.key)) for s in scenarios]


# The bench's own commands while it watches a run; not the consumer's.
OBSERVER_COMMANDS = {"xinfo|groups", "xinfo|stream", "info", "xrevrange", "scan", "unlink", "copy",
                     "xgroup|create"}


def command_calls(r: redis.Redis, since: dict[str, int] | None = None) -> dict[str, int]:
    """Calls per command (INFO commandstats), minus ``since``; the bench's own commands left out."""
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in r.info("commandstats").items()}
    if since is None:
        return calls
    delta = {name: count - since.get(name, 0) for name, count in calls.items()
             if name not in OBSERVER_COMMANDS}
    return {name: count for name, count in sorted(delta.items()) if count > 0}


def summarize(scenario: Scenario, runs: list[dict[str, Any]], error: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "key": scenario.key, "label": scenario.label, "family": scenario.family,
        "payload": scenario.payload, "entries": scenario.entries, **scenario.params,
    }
    if runs:
        ordered = sorted(runs, key=lambda run: float(run["rate"]))
        mid = ordered[len(ordered) // 2]
        summary.update({
            "rate": median([float(run["rate"]) for run in runs]),
            "rates": [run["rate"] for run in runs],
            "consumer_cpu_cores": mid["consumer_cpu_cores"],
            "redis_cpu_cores": mid["redis_cpu_cores"],
            "consumer_cpu_us_per_entry": mid["consumer_cpu_us_per_entry"],
            "redis_cpu_us_per_entry": mid["redis_cpu_us_per_entry"],
            "redis_calls_per_entry": mid["redis_calls_per_entry"],
            "runs": runs,
        })
    if error:
        summary["error"] = error
    return summary


# --- scenario builders -------------------------------------------------------------------------------

def _popen(argv: list[str], spec: RunSpec, name: str, env: dict[str, str] | None = None,
           cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    log = open(spec.work_dir / f"{name}.log", "wb")  # noqa: SIM115  (closed when the process ends)
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})})
    finally:
        log.close()


def raw_scenarios(cfg: Config) -> list[Scenario]:
    def starter(mode: str) -> Starter:
        def start(spec: RunSpec) -> list[subprocess.Popen[bytes]]:
            argv = [sys.executable, "-m", "bench.raw_consumer", mode, "--url", spec.url, "--stream",
                    spec.stream, "--group", spec.group, "--exit-when-idle"]
            return [_popen(argv, spec, f"raw-{mode}")]
        return start

    return [
        Scenario("raw", "raw loop: XREADGROUP 100 + pipelined XACK", "raw", cfg.entries, starter("raw")),
        Scenario("raw_idem", "raw loop + idempotency SADD in the pipeline", "raw", cfg.entries,
                 starter("idem")),
        Scenario("raw_email", "raw loop, 9 KB email entries", "raw", cfg.entries // 4, starter("raw"),
                 payload="email"),
    ]


def naive_scenarios(cfg: Config) -> list[Scenario]:
    def start(spec: RunSpec) -> list[subprocess.Popen[bytes]]:
        argv = [sys.executable, "-m", "bench.raw_consumer", "naive", "--url", spec.url, "--stream",
                spec.stream, "--group", spec.group, "--exit-when-idle"]
        return [_popen(argv, spec, "naive")]

    return [Scenario("naive", "naive loop: SISMEMBER, handle, SADD, XACK per entry", "naive",
                     cfg.slow_entries, start)]


def mailpipe_worker_starter(processes: int, handler: str, concurrency: int,
                            extra_env: dict[str, str] | None = None, root: Path | None = None) -> Starter:
    """``python worker.py`` processes, as a user runs them: metrics served, JSON logs at INFO. ``root`` is
    the checkout whose worker runs (another one gives before/after figures in the same run)."""
    def start(spec: RunSpec) -> list[subprocess.Popen[bytes]]:
        procs = []
        for i in range(processes):
            env = {
                "MAILPIPE_REDIS_URL": spec.url, "MAILPIPE_NAMESPACE": spec.keys.namespace,
                "MAILPIPE_STREAM": spec.keys.stream_name, "MAILPIPE_LOG_LEVEL": "INFO",
                "MAILPIPE_LOG_FORMAT": "json", "MAILPIPE_METRICS_PORT": str(free_port()),
                **(extra_env or {}),
            }
            script = (root or worker_root()) / "worker.py"
            argv = [sys.executable, str(script), "--consumer", f"c{i + 1}", "--group", spec.group, "--stream",
                    spec.keys.stream_name, "--handler", handler, "--concurrency", str(concurrency),
                    "--batch-size", "100", "--block-ms", "500", "--exit-when-idle"]
            procs.append(_popen(argv, spec, f"worker{i + 1}", env))
        return procs
    return start


MAILPIPE_HANDLERS = {
    "noop": "mailpipe.handlers:noop",
    "noop_async": "mailpipe.handlers:noop_async",
    "sleep_async": "bench.handlers:sleep_async",
    "sleep_sync": "bench.handlers:sleep_sync",
}


def mailpipe_scenarios(cfg: Config) -> list[Scenario]:
    scenarios = []
    # A smoke run keeps one of each kind: sync and async handlers, 1 and N processes, concurrency 1 and 64.
    quick_set = {(1, "noop", 64), (1, "sleep_async", 64), (cfg.processes, "noop_async", 1)}
    for processes in (1, cfg.processes):
        for handler in MAILPIPE_HANDLERS:
            for concurrency in (1, 64):
                if cfg.quick and (processes, handler, concurrency) not in quick_set:
                    continue
                sleeping = handler.startswith("sleep")
                if sleeping and concurrency == 1:
                    entries = cfg.sleep_entries_c1 * processes
                elif sleeping:
                    entries = cfg.slow_entries * 2
                elif concurrency == 1:
                    entries = cfg.c1_entries * processes
                else:
                    entries = cfg.worker_entries
                scenarios.append(Scenario(
                    f"mailpipe_{processes}p_{handler}_c{concurrency}",
                    f"mailpipe {processes} proc, {handler}, concurrency {concurrency}", "mailpipe", entries,
                    mailpipe_worker_starter(processes, MAILPIPE_HANDLERS[handler], concurrency),
                    params={"processes": processes, "handler": handler, "concurrency": concurrency},
                ))
    for payload in () if cfg.quick else ("email", "typical"):
        scenarios.append(Scenario(
            f"mailpipe_1p_noop_c64_{payload}", f"mailpipe 1 proc, noop, concurrency 64, {payload} entries",
            "mailpipe", cfg.worker_entries // (2 if payload == "email" else 10),
            mailpipe_worker_starter(1, MAILPIPE_HANDLERS["noop"], 64), payload=payload,
            params={"processes": 1, "handler": "noop", "concurrency": 64},
        ))
    return scenarios


def baseline_scenarios(cfg: Config, root: Path) -> list[Scenario]:
    """The headline mailpipe scenarios run with the worker of another checkout (e.g. the commit before
    an optimisation), so before and after are measured side by side on the same machine state."""
    commit_file = root / "COMMIT"
    name = commit_file.read_text().strip() if commit_file.exists() else root.name
    out = []
    for handler, concurrency, entries in (("noop", 64, cfg.worker_entries), ("noop_async", 64, cfg.worker_entries),
                                          ("noop", 1, cfg.c1_entries)):
        out.append(Scenario(
            f"baseline_1p_{handler}_c{concurrency}", f"mailpipe {name} (baseline) 1 proc, {handler}, "
            f"concurrency {concurrency}", "baseline", entries,
            mailpipe_worker_starter(1, MAILPIPE_HANDLERS[handler], concurrency, root=root),
            params={"processes": 1, "handler": handler, "concurrency": concurrency, "worker_root": str(root),
                    "baseline": name},
        ))
    return out


def peer_scenarios(cfg: Config) -> list[Scenario]:
    def faststream(spec: RunSpec) -> list[subprocess.Popen[bytes]]:
        argv = [str(venv.python()), "-m", "faststream", "run", "faststream_app:app", "--log-level", "warning"]
        env = {"BENCH_REDIS_URL": spec.url, "BENCH_STREAM": spec.stream, "BENCH_GROUP": spec.group}
        return [_popen(argv, spec, "faststream", env, cwd=PEERS_DIR)]

    def taskiq(spec: RunSpec) -> list[subprocess.Popen[bytes]]:
        argv = [str(venv.python()), "-m", "taskiq", "worker", "taskiq_app:broker", "--workers", "1",
                "--log-level", "WARNING"]
        env = {"BENCH_REDIS_URL": spec.url, "BENCH_STREAM": spec.stream, "BENCH_GROUP": spec.group}
        return [_popen(argv, spec, "taskiq", env, cwd=PEERS_DIR)]

    return [
        Scenario("faststream", "FastStream Redis Streams subscriber (group, max_records 100)", "peer",
                 cfg.slow_entries, faststream, fmt="faststream"),
        Scenario("taskiq", "taskiq-redis RedisStreamBroker, 1 worker process", "peer", cfg.slow_entries,
                 taskiq, fmt="taskiq"),
    ]
