"""Where the worker's CPU goes: ``python -m bench profile [--handler H] [--concurrency N] [--entries N]``.

Runs ``python worker.py`` under py-spy (from the bench venv) on a pre-filled stream, then prints the
share of on-CPU samples per function (self and inclusive) and per area of the code (Redis client,
entry parsing/JSON, logging, metrics, asyncio, thread-pool hand-off, ...). The collapsed stacks are kept
next to the results for a flame graph (``flamegraph.pl`` or speedscope.app read them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench import venv
from bench.common import ROOT, observe_group
from bench.throughput import MAILPIPE_HANDLERS, Runner, Scenario
from mailpipe.embedded import RedisServerProcess

# Areas of the code, by file (py-spy writes paths relative to sys.path). A stack is charged to the first
# library area found walking from the innermost frame outwards (so asyncio socket writes made by the Redis
# client count as Redis client), else to asyncio when the innermost frame is the event loop's, else to
# the worker's own logic.
LIBRARY_AREAS: list[tuple[str, re.Pattern[str]]] = [
    ("handler (user code)", re.compile(r"\((bench|mailpipe)/handlers\.py")),
    ("logging", re.compile(r"\((logging|pythonjsonlogger)/|mailpipe/logs\.py")),
    ("metrics (prometheus_client)", re.compile(r"\(prometheus_client/|mailpipe/(worker_)?metrics")),
    ("entry parsing + JSON", re.compile(r"\(mailpipe/entry\.py|\(json/")),
    ("redis client (commands, parsing, socket)", re.compile(r"\((redis|hiredis)/")),
    ("thread-pool hand-off", re.compile(r"\((concurrent/futures|threading\.py|queue\.py)|run_in_executor")),
]
ASYNCIO = re.compile(r"\((asyncio|selectors\.py)")
MAILPIPE = re.compile(r"\(mailpipe/|\(worker\.py")


def area_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, pattern in LIBRARY_AREAS:
            if pattern.search(frame):
                return name
    if stack and ASYNCIO.search(stack[-1]):
        return "asyncio machinery (event loop, tasks, futures)"
    if any(MAILPIPE.search(frame) for frame in stack):
        return "mailpipe worker logic"
    return "other (interpreter, stdlib)"


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:]*):?(?P<line>\d*)\)$")


def summarize(collapsed: Path, top: int = 20) -> dict[str, Any]:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_stack = stack_text.split(";")
        stack = [_short(f) for f in raw_stack]
        total += count
        self_counts[stack[-1]] += count
        for frame in set(stack):
            inclusive[frame] += count
        areas[area_of(raw_stack)] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / max(total, 1), 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "areas": share(areas), "self": share(self_counts), "inclusive": share(inclusive)}


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path.split('/', 1)[-1] if path.startswith('.') else path})"


def run(handler: str, concurrency: int, entries: int, out_dir: Path | None = None,
        root: Path = ROOT) -> dict[str, Any]:
    py_spy = venv.VENV / "bin" / "py-spy"
    if not py_spy.exists():
        venv.ensure()
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    collapsed = out_dir / f"profile-{handler}-c{concurrency}.txt"
    with RedisServerProcess() as server:
        runner = Runner(server, out_dir)
        scenario = Scenario("profile", "profile", "mailpipe", entries, lambda spec: [])
        spec = runner.new_spec()
        runner.r.copy(runner.template(scenario.fmt, scenario.payload, entries), spec.stream)
        runner.r.xgroup_create(spec.stream, spec.group, id="0")
        last_id = runner._last_id(spec.stream)
        env = {"MAILPIPE_REDIS_URL": spec.url, "MAILPIPE_NAMESPACE": spec.keys.namespace,
               "MAILPIPE_LOG_LEVEL": "INFO", "MAILPIPE_LOG_FORMAT": "json"}
        argv = [sys.executable, str(root / "worker.py"), "--consumer", "c1", "--group", spec.group,
                "--stream", spec.keys.stream_name, "--handler", MAILPIPE_HANDLERS.get(handler, handler),
                "--concurrency", str(concurrency), "--metrics-port", "0", "--block-ms", "500",
                "--exit-when-idle"]
        with open(out_dir / "profile-worker.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **env})
        spies: list[subprocess.Popen[bytes]] = []

        def attach() -> None:
            # Attached at the first delivery, so start-up and imports are not in the profile.
            # --gil: only the thread holding the GIL is sampled (CPU spent in Python, not idle pool threads);
            # --nonblocking: the worker is not paused for each sample, so it runs at nearly full speed.
            spies.append(subprocess.Popen(
                [str(py_spy), "record", "--rate", "250", "--gil", "--nonblocking", "--format", "raw",
                 "--output", str(collapsed), "--pid", str(proc.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        timing = observe_group(runner.r, spec.stream, spec.group, last_id, 600, [proc], on_first=attach)
        proc.wait(60)
        for spy in spies:
            spy.wait(60)
    result = summarize(collapsed)
    result.update({"worker_root": str(root), "handler": handler, "concurrency": concurrency, "entries": entries,
                   "rate_under_profiler": round(entries / timing.seconds, 1), "collapsed_stacks": str(collapsed)})
    return result


def print_report(result: dict[str, Any]) -> None:
    print(f"\nworker profile ({result['worker_root']}): handler {result['handler']}, "
          f"concurrency {result['concurrency']}, "
          f"{result['entries']:,} entries, {result['rate_under_profiler']:,.0f}/s under py-spy, "
          f"{result['samples']:,} samples")
    for title, key in (("by area", "areas"), ("self time", "self"), ("inclusive time", "inclusive")):
        print(f"  {title}:")
        for name, pct in result[key]:
            print(f"    {pct:5.1f}%  {name}")
    print(f"  collapsed stacks: {result['collapsed_stacks']}")
