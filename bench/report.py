"""Tables from a results document: plain text for the terminal, Markdown for docs/PERFORMANCE.md, and
the verdict against the targets of the issue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REFERENCES = ("raw", "raw_idem", "faststream", "taskiq")
REFERENCE_NAMES = {"raw": "raw", "raw_idem": "raw+SADD", "faststream": "FastStream", "taskiq": "taskiq"}
TARGET_RATE = 40_000
TARGET_P99_1K_MS = 1.0
TARGET_P99_10K_MS = 5.0


def _rate_of(results: dict[str, Any], key: str) -> float | None:
    for row in results.get("throughput", []):
        if row["key"] == key and row.get("rate"):
            return float(row["rate"])
    return None


def _ratio(rate: float | None, ref: float | None) -> str:
    if not rate or not ref:
        return "-"
    return f"{rate / ref:.2f}x" if rate / ref < 10 else f"{rate / ref:.0f}x"


def throughput_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    refs = {key: _rate_of(results, key) for key in REFERENCES}
    header = ["consumer", "payload", "entries/s", *(f"vs {REFERENCE_NAMES[k]}" for k in REFERENCES),
              "consumer CPU", "Redis CPU", "consumer µs/entry", "Redis cmds/entry"]
    rows = []
    for row in results.get("throughput", []):
        if not row.get("rate"):
            rows.append([row["label"], row["payload"], f"failed: {row.get('error', '?')[:60]}",
                         *["-"] * (len(header) - 3)])
            continue
        rate = float(row["rate"])
        rows.append([
            row["label"], row["payload"], f"{rate:,.0f}",
            *(_ratio(rate, refs[k]) for k in REFERENCES),
            f"{row['consumer_cpu_cores']:.2f}", f"{row['redis_cpu_cores']:.2f}",
            f"{row['consumer_cpu_us_per_entry']:.0f}", f"{row.get('redis_calls_per_entry', 0):.2f}",
        ])
    return header, rows


def latency_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["system", "offered/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "kept up", "consumer CPU"]
    rows = []
    latency = results.get("latency", {})
    for row in latency.get("rows", []):
        if "error" in row:
            rows.append([row["system"], f"{row['offered_rate']:,}", f"failed: {row['error'][:60]}", "", "", "", "",
                         ""])
            continue
        rows.append([row["system"], f"{row['offered_rate']:,}", f"{row['p50_ms']:.2f}", f"{row['p95_ms']:.2f}",
                     f"{row['p99_ms']:.2f}", f"{row['max_ms']:.2f}", "yes" if row["sustained"] else "no",
                     _cores(row)])
    for system, sat in latency.get("saturation", {}).items():
        for step in sat.get("steps", []):
            rows.append([f"{system} (saturation)", f"{step['offered_rate']:,}", f"{step.get('p50_ms', 0):.2f}",
                         f"{step.get('p95_ms', 0):.2f}", f"{step.get('p99_ms', 0):.2f}",
                         f"{step.get('max_ms', 0):.2f}", "yes" if step["sustained"] else "no", _cores(step)])
    return header, rows


def _cores(row: dict[str, Any]) -> str:
    return f"{row['consumer_cpu_cores']:.2f}" if "consumer_cpu_cores" in row else "-"


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each target of the issue that this run measured."""
    out: list[tuple[str, str, str]] = []
    one_proc = [row for row in results.get("throughput", [])
                if row.get("family") == "mailpipe" and row.get("processes") == 1 and row.get("rate")
                and row.get("payload") == "minimal" and str(row.get("handler", "")).startswith("noop")]
    if one_proc:
        best = max(one_proc, key=lambda row: float(row["rate"]))
        out.append((f">= {TARGET_RATE:,} entries/s, one worker process, no-op handler",
                    f"{float(best['rate']):,.0f}/s ({best['label']})",
                    "met" if float(best["rate"]) >= TARGET_RATE else "MISSED"))
    rows = {(row["system"], row["offered_rate"]): row for row in results.get("latency", {}).get("rows", [])
            if "error" not in row}
    for rate, limit in ((1_000, TARGET_P99_1K_MS), (10_000, TARGET_P99_10K_MS)):
        row = rows.get(("mailpipe", rate))
        if row:
            out.append((f"p99 enqueue-to-done < {limit:g} ms at {rate:,}/s", f"{row['p99_ms']:.2f} ms",
                        "met" if row["p99_ms"] < limit and row["sustained"] else "MISSED"))
    fast = rows.get(("faststream", 1_000))
    mine = rows.get(("mailpipe", 1_000))
    if fast and mine:
        out.append(("p99 at 1,000/s better than FastStream", f"{mine['p99_ms']:.2f} vs {fast['p99_ms']:.2f} ms",
                    "met" if mine["p99_ms"] < fast["p99_ms"] else "MISSED"))
    rss = results.get("memory", {}).get("worker_rss")
    if rss:
        growth = rss["rss_end_mb"] - rss["rss_after_warmup_mb"]
        out.append((f"worker RSS flat over {rss['entries']:,} entries",
                    f"{rss['rss_after_warmup_mb']} MB after warm-up -> {rss['rss_end_mb']} MB at the end",
                    "met" if growth <= max(2.0, 0.05 * rss["rss_after_warmup_mb"]) else "MISSED"))
    per_entry = results.get("memory", {}).get("redis_per_entry", {}).get("2-200 KB mix")
    if per_entry:
        out.append(("Redis memory per email entry stated", f"{per_entry['bytes_per_entry']:,} B (2-200 KB mix)",
                    "stated"))
    return out


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: dict[str, Any], markdown: bool = False) -> str:
    table: Callable[[list[str], list[list[str]]], str] = _md_table if markdown else _text_table

    def heading(title: str) -> str:
        return f"\n### {title}\n" if markdown else f"\n== {title} =="

    parts: list[str] = []
    if results.get("throughput"):
        parts += [heading("Throughput (median of runs; CPU in cores used during the run)"),
                  table(*throughput_table(results))]
    if results.get("latency"):
        parts += [heading("Latency, enqueue to handler done"), table(*latency_table(results))]
        bullet = "- " if markdown else ""
        if markdown:
            parts.append("")
        for system, sat in results["latency"].get("saturation", {}).items():
            parts.append(f"{bullet}{system}: highest offered rate sustained {sat['highest_sustained_rate']:,}/s")
    ingest = results.get("ingest")
    if ingest and "producer" in ingest:
        parts += [heading(f"IMAP ingest, first sync of {ingest['messages']:,} messages "
                          f"({ingest['bytes'] / 1e6:.0f} MB) from Dovecot"),
                  table(["tool", "messages/s", "MB/s", "CPU s (median run)"], [
                      [tool, f"{ingest[tool]['rate']:,.0f}", f"{ingest[tool]['mb_per_s']:.1f}",
                       f"{sorted(r['cpu_s'] for r in ingest[tool]['runs'])[len(ingest[tool]['runs']) // 2]:.1f}"]
                      for tool in ("mbsync", "producer")]),
                  f"producer / mbsync = {ingest['producer_vs_mbsync']:.2f}"]
    memory = results.get("memory")
    if memory:
        rss = memory.get("worker_rss", {})
        if rss:
            parts += [heading("Memory"),
                      f"worker RSS: {rss['rss_after_warmup_mb']} MB after warm-up, {rss['rss_end_mb']} MB after "
                      f"{rss['entries']:,} entries (max {rss['rss_max_mb']} MB; second-half growth "
                      f"{rss['rss_growth_second_half_kb_per_100k_entries']} KB per 100k entries)",
                      f"dedup: {rss['dedup']['bytes_per_key']} B per done key ({rss['dedup']['keys']:,} keys in "
                      f"{rss['dedup']['sets']} bucket set(s)); claim keys left: {rss['claim_keys_left']}"]
        per_entry = memory.get("redis_per_entry", {})
        if per_entry:
            parts.append(table(["email size", "Redis bytes/entry", "entry field bytes", "raw inline"], [
                [name, f"{v['bytes_per_entry']:,}",
                 f"{v['field_bytes_per_entry']:,}" if "field_bytes_per_entry" in v else "-",
                 f"{v.get('raw_inline_share', 0):.0%}" if "raw_inline_share" in v else "-"]
                for name, v in per_entry.items()]))
    verdicts = targets(results)
    if verdicts:
        parts += [heading("Targets"), table(["target", "measured", "verdict"], [list(v) for v in verdicts])]
    errors = {k: v for k, v in results.get("errors", {}).items() if v}
    if errors:
        parts += [heading("Parts that did not run"), *(f"{k}: {v}" for k, v in errors.items())]
    return "\n".join(parts)
