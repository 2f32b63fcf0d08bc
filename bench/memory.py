"""Memory: the worker's RSS over a long run, and what Redis holds per email entry and per dedup key.

RSS: one ``python worker.py`` (no-op handler, default concurrency, metrics and JSON logs on) consumes N
entries fed by the bench in chunks, so the stream stays short while the worker's own state (dedup
bookkeeping, metrics, asyncio, logging) sees every entry. RSS is sampled from /proc twice a second.

Redis: ``MEMORY USAGE`` of streams filled with entries built by :func:`mailpipe.entry.build_entry` from
generated emails of each size class (the size policy cuts raw bytes over 64 KB to a reference), and of
the worker's done-key bucket sets after the long run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, Config, rss_bytes, stop_processes, worker_root
from bench.emails import entry_for, minimal_entry, size_mix
from bench.throughput import Runner
from mailpipe.embedded import free_port
from mailpipe.entry import Email, Source, build_entry
from mailpipe.keys import Keys

FEED_CHUNK = 5_000
MAX_UNDELIVERED = 20_000
SIZE_CLASSES = {"2 KB": 2 * 1024, "10 KB": 10 * 1024, "40 KB": 40 * 1024, "100 KB": 100 * 1024,
                "200 KB": 200 * 1024}


def worker_rss(runner: Runner, cfg: Config) -> dict[str, Any]:
    spec = runner.new_spec()
    r = runner.r
    r.xgroup_create(spec.stream, spec.group, id="0", mkstream=True)
    entry: dict[Any, Any] = minimal_entry()
    env = {"MAILPIPE_REDIS_URL": spec.url, "MAILPIPE_NAMESPACE": spec.keys.namespace,
           "MAILPIPE_LOG_LEVEL": "INFO", "MAILPIPE_LOG_FORMAT": "json", "MAILPIPE_METRICS_PORT": str(free_port())}
    argv = [sys.executable, str(worker_root() / "worker.py"), "--consumer", "c1", "--group", spec.group, "--stream",
            spec.keys.stream_name, "--handler", "mailpipe.handlers:noop"]
    with open(spec.work_dir / "worker-rss.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **env})
    samples: list[tuple[float, int, int]] = []  # (seconds, entries handled, rss bytes)
    sent = 0
    started = time.monotonic()
    next_sample = started
    used_before = int(r.info("memory")["used_memory"])
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode} (see {spec.work_dir})")
            info = next(g for g in r.xinfo_groups(spec.stream) if g["name"] == spec.group)
            handled = int(info.get("entries-read") or 0) - int(info["pending"])
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - started, 2), handled, rss_bytes(proc.pid)))
                next_sample = now + 0.5
            if handled >= cfg.memory_entries:
                break
            if sent < cfg.memory_entries and sent - handled < MAX_UNDELIVERED:
                pipe = r.pipeline(transaction=False)
                for n in range(sent, min(sent + FEED_CHUNK, cfg.memory_entries)):
                    pipe.xadd(spec.stream, {**entry, "idem": f"rss:{n}"})
                pipe.execute()
                sent = min(sent + FEED_CHUNK, cfg.memory_entries)
            else:
                time.sleep(0.05)
        samples.append((round(time.monotonic() - started, 2), cfg.memory_entries, rss_bytes(proc.pid)))
        seconds = time.monotonic() - started
        done_keys = list(r.scan_iter(match=f"{spec.keys.group_prefix(spec.group)}:done:*"))
        done_bytes = sum(int(r.memory_usage(k, samples=0) or 0) for k in done_keys)
        done_members = sum(int(r.scard(k)) for k in done_keys)
        claims_left = sum(1 for _ in r.scan_iter(match=f"{spec.keys.group_prefix(spec.group)}:claim:*"))
        used_after = int(r.info("memory")["used_memory"])
        stream_len = int(r.xlen(spec.stream))
    finally:
        proc.terminate()
        stop_processes([proc])
        runner.drop(spec)
    return {
        "entries": cfg.memory_entries, "seconds": round(seconds, 1),
        "rate": round(cfg.memory_entries / seconds, 1), **rss_summary(samples),
        "samples": samples,
        "dedup": {"keys": done_members, "bytes": done_bytes,
                  "bytes_per_key": round(done_bytes / max(done_members, 1), 1), "sets": len(done_keys)},
        "claim_keys_left": claims_left, "stream_length_at_end": stream_len,
        "redis_used_memory_growth_bytes": used_after - used_before,
    }


def rss_summary(samples: list[tuple[float, int, int]]) -> dict[str, Any]:
    """RSS after warm-up (a tenth of the run) and at the end, and the growth rate over the second half."""
    total = samples[-1][1]
    warm = next((s for s in samples if s[1] >= total * 0.1), samples[0])
    half = [s for s in samples if s[1] >= total * 0.5]
    slope = 0.0
    if len(half) >= 2 and half[-1][1] > half[0][1]:
        slope = (half[-1][2] - half[0][2]) / (half[-1][1] - half[0][1]) * 100_000
    return {
        "rss_after_warmup_mb": round(warm[2] / 2**20, 1), "rss_end_mb": round(samples[-1][2] / 2**20, 1),
        "rss_max_mb": round(max(s[2] for s in samples) / 2**20, 1),
        "rss_growth_second_half_kb_per_100k_entries": round(slope / 1024, 1),
    }


def redis_per_entry(runner: Runner, cfg: Config) -> dict[str, Any]:
    """MEMORY USAGE per entry, per size class and for the 2 KB-200 KB mix."""
    r = runner.r
    per_class = 5 if cfg.quick else 100
    results: dict[str, Any] = {}
    classes: dict[str, list[int]] = {name: [size] * per_class for name, size in SIZE_CLASSES.items()}
    classes["2-200 KB mix"] = size_mix(per_class * 5, seed=3)
    for index, (name, sizes) in enumerate(classes.items()):
        key = Keys("bench", f"mem{index}").stream
        r.delete(key)
        field_bytes = 0
        raw_inline = 0
        for n, size in enumerate(sizes, start=1):
            fields: dict[Any, Any] = entry_for(n, size)
            field_bytes += sum(len(k) + len(v.encode()) for k, v in fields.items())
            raw_inline += '"raw":null' not in fields["email"]
            r.xadd(key, fields)
        usage = int(r.memory_usage(key, samples=0) or 0)
        results[name] = {"entries": len(sizes), "bytes_per_entry": round(usage / len(sizes)),
                         "field_bytes_per_entry": round(field_bytes / len(sizes)),
                         "raw_inline_share": round(raw_inline / len(sizes), 2)}
        r.delete(key)
    # The size policy's bound: an email far over every limit (1 MB text and HTML bodies, 1 MB raw,
    # 1,000 headers) is cut to 256 K characters per body, 200 headers and a raw reference.
    huge = Email(message_id="<huge@example.com>", subject="huge", from_=["a@example.com"], to=["b@example.com"],
                 headers=[(f"X-H{i}", "v" * 200) for i in range(1_000)], text="t" * 1_000_000,
                 html="<p>" + "h" * 1_000_000 + "</p>", size=3_000_000, raw=b"r" * 1_000_000)
    key = Keys("bench", "memhuge").stream
    r.delete(key)
    r.xadd(key, build_entry(huge, idempotency_key="api:huge", source=Source(kind="api")))  # type: ignore[arg-type]
    results["policy bound (ASCII)"] = {"entries": 1, "bytes_per_entry": int(r.memory_usage(key, samples=0) or 0)}
    r.delete(key)
    key = Keys("bench", "memmin").stream
    minimal: dict[Any, Any] = minimal_entry()
    for n in range(1000):
        r.xadd(key, {**minimal, "idem": f"api:{n}"})
    usage = int(r.memory_usage(key, samples=0) or 0)
    results["minimal (one-line email)"] = {"entries": 1000, "bytes_per_entry": round(usage / 1000)}
    r.delete(key)
    return results


def run(runner: Runner, cfg: Config) -> dict[str, Any]:
    print(f"  worker RSS over {cfg.memory_entries:,} entries ...", file=sys.stderr, flush=True)
    rss = worker_rss(runner, cfg)
    print(f"  RSS {rss['rss_after_warmup_mb']} MB after warm-up, {rss['rss_end_mb']} MB at the end", file=sys.stderr)
    print("  Redis MEMORY USAGE per entry ...", file=sys.stderr, flush=True)
    return {"worker_rss": rss, "redis_per_entry": redis_per_entry(runner, cfg)}
