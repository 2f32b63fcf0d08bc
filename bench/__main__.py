"""``python -m bench all|PART... [--quick] [--long] [--json PATH]``: mailpipe's benchmarks, side by side
with the raw redis-py limit and the peers, in one run.

Parts: raw naive mailpipe peers latency ingest memory; ``profile`` runs the worker under py-spy.
It starts its own Redis on a free port, runs the parts asked for, prints the tables (ratios against the
raw loop and each peer, the targets of the issue) and writes every figure, the machine and the versions
to a JSON file (default ``bench/results/bench-<time>.json`` and ``bench/results/latest.json``).
``python -m bench report PATH [--markdown]`` prints the tables of an earlier run again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report, venv
from bench.common import RESULTS_DIR, ROOT, Config, machine_info, package_versions, worker_root

PARTS = ("raw", "naive", "mailpipe", "peers", "latency", "ingest", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="+", help=f"all, one or more of {', '.join(PARTS)}, profile, or "
                        "report PATH")
    parser.add_argument("--no-peers", action="store_true", help="leave the peers out (no bench venv needed)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one run each (seconds)")
    parser.add_argument("--long", action="store_true", help="the 1,000,000-entry memory run")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3; the median is reported)")
    parser.add_argument("--json", dest="json_path", help="where to write the results")
    parser.add_argument("--baseline-worker", type=Path, metavar="CHECKOUT",
                        help="also run the headline mailpipe scenarios with the worker.py of another checkout "
                        "(with profile: profile that worker instead); e.g. `git archive <commit>` unpacked, "
                        "with a COMMIT file naming the commit: before/after figures in one run")
    parser.add_argument("--worker-root", type=Path, metavar="CHECKOUT",
                        help="run the worker.py of another checkout everywhere (default: this one)")
    parser.add_argument("--markdown", action="store_true", help="with report: Markdown tables")
    parser.add_argument("--handler", default="noop", help="with profile: noop, noop_async, sleep_async, "
                        "sleep_sync or module:callable")
    parser.add_argument("--concurrency", type=int, default=64, help="with profile")
    parser.add_argument("--entries", type=int, default=100_000, help="with profile")
    args = parser.parse_args(argv)
    # SIGTERM (or SIGINT in a background job, where it is ignored) must still stop the Redis, Dovecot and
    # consumer processes the bench started: turn it into an exception that unwinds through their cleanup.
    signal.signal(signal.SIGTERM, _interrupted)

    if args.part[0] == "report":
        if len(args.part) != 2:
            parser.error("report needs the results JSON path")
        print(report.render(json.loads(Path(args.part[1]).read_text()), markdown=args.markdown))
        return 0
    if args.part == ["profile"]:
        from bench import profile

        root = args.baseline_worker.resolve() if args.baseline_worker else ROOT
        profile.print_report(profile.run(args.handler, args.concurrency, args.entries, root=root))
        return 0

    if args.worker_root:
        os.environ["BENCH_WORKER_ROOT"] = str(args.worker_root.resolve())
    cfg = Config.make(quick=args.quick, long=args.long)
    if args.runs:
        cfg.runs = cfg.ingest_runs = args.runs
    unknown = set(args.part) - {*PARTS, "all"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}")
    parts = PARTS if "all" in args.part else tuple(args.part)
    results = run(parts, cfg, peers=not args.no_peers, baseline=args.baseline_worker)
    print(report.render(results))
    path = Path(args.json_path) if args.json_path else RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, default=str)
    path.write_text(text)
    if not args.json_path:
        (RESULTS_DIR / "latest.json").write_text(text)
    print(f"\nresults: {path}")
    return 0


def run(parts: tuple[str, ...], cfg: Config, *, peers: bool = True, baseline: Path | None = None) -> dict[str, Any]:
    from bench import ingest, latency, memory, throughput
    from mailpipe.embedded import RedisServerProcess

    work = Path(tempfile.mkdtemp(prefix="mailpipe-bench-"))
    started = time.time()
    results: dict[str, Any] = {"errors": {}}
    with RedisServerProcess(data_dir=work / "redis") as server:
        results["machine"] = machine_info(server.url)
        results["config"] = {**vars(cfg), "worker_root": str(worker_root())}
        results["redis"] = {"url": server.url, "persistence": "none (--save '' --appendonly no)"}
        runner = throughput.Runner(server, work)
        peers_ok = False
        if peers and ("peers" in parts or "latency" in parts):
            try:
                venv.ensure()
                peers_ok = True
            except Exception as exc:  # no network: the peers are left out, the rest still runs
                results["errors"]["peers"] = str(exc)
        scenarios: list[throughput.Scenario] = []
        if "raw" in parts or "mailpipe" in parts or "peers" in parts:
            scenarios += throughput.raw_scenarios(cfg)  # the reference every ratio is taken against
        if "naive" in parts:
            scenarios += throughput.naive_scenarios(cfg)
        if "mailpipe" in parts:
            scenarios += throughput.mailpipe_scenarios(cfg)
            if baseline is not None:
                scenarios += throughput.baseline_scenarios(cfg, baseline.resolve())
        if "peers" in parts and peers_ok:
            scenarios += throughput.peer_scenarios(cfg)
        if scenarios:
            _section("throughput")
            results["throughput"] = runner.run_all(scenarios, cfg)
        if "latency" in parts:
            _section("latency")
            systems = ["raw", "mailpipe", *(["faststream"] if peers_ok else [])]
            results["latency"] = latency.run(runner, cfg, systems)
        if "ingest" in parts:
            _section("ingest")
            _guarded(results, "ingest", lambda: ingest.run(cfg, server, work))  # Dovecot/mbsync may be missing
        if "memory" in parts:
            _section("memory")
            _guarded(results, "memory", lambda: memory.run(runner, cfg))
    results["versions"] = package_versions(venv.versions())
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["seconds"] = round(time.time() - started, 1)
    results["work_dir"] = str(work)
    return results


def _guarded(results: dict[str, Any], part: str, run_part: Callable[[], dict[str, Any]]) -> None:
    """Run one part; a failure is recorded and printed, and the other parts' figures are kept."""
    try:
        results[part] = run_part()
    except Exception as exc:
        results["errors"][part] = f"{type(exc).__name__}: {exc}"[:500]
        print(f"  {part} did not run: {results['errors'][part]}", file=sys.stderr, flush=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _section(name: str) -> None:
    print(f"\n{name}:", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
