#!/usr/bin/env python3
"""Generate config/grafana/mailpipe-dashboard.json, the Grafana dashboard of a mailpipe deployment.

    python scripts/gen_dashboard.py           # rewrite the committed JSON
    python scripts/gen_dashboard.py --check   # exit 1 if the committed JSON is stale

Plain dicts rather than a dashboard SDK: no extra dependency, and the JSON stays reviewable. Every panel
query filters on the dashboard variables ($job, $instance, $stream, $group); the datasource is a variable
too, so the file imports into any Grafana. tests/ run every query of every panel against a real
Prometheus; docs/OBSERVABILITY.md describes each panel in words.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "config" / "grafana" / "mailpipe-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
P = 'job=~"$job", instance=~"$instance", stream=~"$stream"'  # every mailpipe series
G = P + ', group=~"$group"'  # series of a consumer group
RI = "$__rate_interval"

Panel = dict[str, Any]


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref,
            "range": True, "instant": False}


def timeseries(title: str, description: str, targets: list[tuple[str, str]], *, unit: str = "short",
               stack: bool = False, w: int = 8, h: int = 8, overrides: list[Any] | None = None) -> Panel:
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "targets": [target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(targets)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if stack else 0,
                           "showPoints": "never", "spanNulls": False,
                           "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
            },
            "overrides": overrides or [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, expr: str, legend: str, *, unit: str = "short",
         thresholds: list[tuple[float | None, str]] | None = None, w: int = 6, h: int = 4) -> Panel:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "gridPos": {"w": w, "h": h}, "targets": [target(expr, legend)],
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "value_and_name",
                    "justifyMode": "auto", "orientation": "auto"},
    }


def breaker_timeline() -> Panel:
    mappings = [{"type": "value", "options": {
        "0": {"text": "closed", "color": "green", "index": 0},
        "1": {"text": "half open", "color": "yellow", "index": 1},
        "2": {"text": "open", "color": "red", "index": 2},
    }}]
    expr = (f'max by (stream, group) (mailpipe_breaker_state{{{G}, state="open"}}) * 2 '
            f'+ max by (stream, group) (mailpipe_breaker_state{{{G}, state="half_open"}})')
    return {
        "type": "state-timeline", "title": "Circuit breaker state",
        "description": "State of each group's shared circuit breaker as stored in Redis: closed (mail "
                       "flows), open (downstream failing, no new mail taken), half open (one probe entry).",
        "datasource": DS, "gridPos": {"w": 16, "h": 6},
        "targets": [target(expr, "{{group}}")],
        "fieldConfig": {"defaults": {"mappings": mappings, "thresholds": {"mode": "absolute", "steps": [
            {"value": None, "color": "green"}]}, "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
                    "legend": {"showLegend": False}},
    }


def percentiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    extra = f", {by}" if by else ""
    sel = G if metric.startswith("mailpipe_worker") else P
    return [(f"histogram_quantile({q}, sum by (le{extra}) (rate({metric}_bucket{{{sel}}}[{RI}])))",
             f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else "")) for q in (0.5, 0.95, 0.99)]


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def panels() -> list[Panel]:
    return [
        row("Overview"),
        stat("Pending entries", "Entries delivered to a worker and not yet acknowledged, per group "
             "(XPENDING). High and rising: handlers are slow or stuck.",
             f"sum by (group) (mailpipe_group_pending_entries{{{G}}})", "{{group}}",
             thresholds=[(None, "green"), (1000, "orange")]),
        stat("Oldest pending entry", "Age since enqueue of the oldest unacknowledged entry, per group.",
             f"max by (group) (mailpipe_group_oldest_pending_age_seconds{{{G}}})", "{{group}}", unit="s",
             thresholds=[(None, "green"), (300, "orange"), (900, "red")]),
        stat("Dead letters", "Entries in the dead-letter stream: mail that failed for good, kept for "
             "inspection and replay.", f"sum by (stream) (mailpipe_dead_letter_entries{{{P}}})", "{{stream}}",
             thresholds=[(None, "green"), (1, "red")]),
        stat("Live consumers", "Consumers per group that talked to Redis recently. 0 means nobody "
             "processes the mail of that group.",
             f"sum by (group) (mailpipe_group_live_consumers{{{G}}})", "{{group}}",
             thresholds=[(None, "red"), (1, "green")]),
        timeseries("Throughput by outcome", "Entries settled per second by all workers, split by outcome "
                   "(success, duplicate skipped, retried, dead-lettered), with the producer's publish rate "
                   "for comparison.", [
                       (f"sum by (outcome) (rate(mailpipe_worker_entries_processed_total{{{G}}}[{RI}]))",
                        "{{outcome}}"),
                       (f"sum (rate(mailpipe_producer_emails_published_total{{{P}}}[{RI}]))", "published"),
                   ], unit="ops", w=12),
        timeseries("Handlers in flight", "Handlers running right now, per worker instance.",
                   [(f"sum by (instance) (mailpipe_worker_inflight_handlers{{{G}}})", "{{instance}}")],
                   stack=True, w=12),
        row("Latency"),
        timeseries("Handler duration", "50th, 95th and 99th percentile of one handler call, all workers.",
                   percentiles("mailpipe_worker_handler_duration_seconds"), unit="s"),
        timeseries("End-to-end latency", "Percentiles from enqueue (the entry's stream id) to settlement, "
                   "retries included: what a sender experiences.",
                   percentiles("mailpipe_worker_end_to_end_duration_seconds"), unit="s"),
        timeseries("Publish latency", "Percentiles of the producer's publish step (XADD and checkpoint).",
                   percentiles("mailpipe_producer_publish_duration_seconds"), unit="s"),
        row("Backlog"),
        timeseries("Consumer lag", "Entries not yet delivered to each group, derived from last-delivered-id "
                   "(exact when caught up), and the lag XINFO GROUPS reports (dashed; it can stay too high "
                   "after an AOF rewrite and restart).", [
                       (f"max by (group) (mailpipe_group_undelivered_entries{{{G}}})", "{{group}}"),
                       (f"max by (group) (mailpipe_group_lag_entries{{{G}}})", "{{group}} (reported)"),
                   ], overrides=[{"matcher": {"id": "byRegexp", "options": ".*reported.*"}, "properties": [
                       {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}]),
        timeseries("Oldest undelivered entry", "How long the oldest entry not yet read by each group has "
                   "been waiting (0 when caught up).",
                   [(f"max by (group) (mailpipe_group_oldest_undelivered_age_seconds{{{G}}})", "{{group}}")],
                   unit="s"),
        timeseries("Pending and oldest pending age", "Unacknowledged entries per group (left) and the age "
                   "of the oldest one (right axis).", [
                       (f"sum by (group) (mailpipe_group_pending_entries{{{G}}})", "{{group}} pending"),
                       (f"max by (group) (mailpipe_group_oldest_pending_age_seconds{{{G}}})",
                        "{{group}} oldest age"),
                   ], overrides=[{"matcher": {"id": "byRegexp", "options": ".*oldest age"}, "properties": [
                       {"id": "unit", "value": "s"}, {"id": "custom.axisPlacement", "value": "right"}]}]),
        timeseries("Pending delivery counts", "Delivery counts of the oldest pending entries (a bounded "
                   "sample): mass in 4+ means entries keep failing or killing their worker.",
                   [(f"sum by (deliveries) (mailpipe_group_pending_sampled_entries{{{G}}})",
                     "{{deliveries}} deliveries")], stack=True),
        timeseries("Consumer idle time", "Time since each consumer last read or claimed; a consumer past "
                   "the reclaim idle time is considered dead and its entries are taken over.",
                   [(f"max by (group, consumer) (mailpipe_consumer_idle_seconds{{{G}}})",
                     "{{group}}/{{consumer}}")], unit="s"),
        timeseries("Stream length", "Entries kept in the stream (trimmed once every group acknowledged "
                   "them) and the rate at which entries are added.", [
                       (f"max by (stream) (mailpipe_stream_entries{{{P}}})", "entries"),
                       (f"sum by (stream) (rate(mailpipe_stream_entries_added_total{{{P}}}[{RI}]))",
                        "added/s"),
                   ]),
        row("Retries and dead letters"),
        timeseries("Retries", "Retries scheduled and due retries moved back to the stream per second, and "
                   "the size of the retry schedule (right axis).", [
                       (f"sum (rate(mailpipe_worker_retries_scheduled_total{{{G}}}[{RI}]))", "scheduled/s"),
                       (f"sum (rate(mailpipe_worker_retries_republished_total{{{G}}}[{RI}]))",
                        "republished/s"),
                       (f"sum by (group) (mailpipe_retry_scheduled_entries{{{G}}})", "{{group}} waiting"),
                       (f"sum by (group) (mailpipe_retry_due_entries{{{G}}})", "{{group}} overdue"),
                   ], overrides=[{"matcher": {"id": "byRegexp", "options": ".*(waiting|overdue)"},
                                  "properties": [{"id": "custom.axisPlacement", "value": "right"}]}]),
        timeseries("Dead letters", "Dead-letter stream length and dead letters added per second, and the "
                   "causes seen by workers: poison entries (too many deliveries) and malformed entries.", [
                       (f"max by (stream) (mailpipe_dead_letter_entries{{{P}}})", "in dead-letter stream"),
                       (f"sum (rate(mailpipe_dead_letter_entries_added_total{{{P}}}[{RI}]))", "added/s"),
                       (f"sum (rate(mailpipe_worker_poison_entries_total{{{G}}}[{RI}]))", "poison/s"),
                       (f"sum (rate(mailpipe_worker_malformed_entries_total{{{G}}}[{RI}]))", "malformed/s"),
                   ]),
        timeseries("Recovery", "Orphaned entries reclaimed from silent consumers, reclaimed entries whose "
                   "payload was already gone, and entries trimmed from the stream, per second.", [
                       (f"sum (rate(mailpipe_worker_reclaimed_entries_total{{{G}}}[{RI}]))", "reclaimed/s"),
                       (f"sum (rate(mailpipe_worker_reclaimed_deleted_entries_total{{{G}}}[{RI}]))",
                        "payload gone/s"),
                       (f"sum (rate(mailpipe_worker_trimmed_entries_total{{{G}}}[{RI}]))", "trimmed/s"),
                   ]),
        row("Circuit breaker"),
        breaker_timeline(),
        timeseries("Breaker transitions", "Breaker state changes seen by the workers, by state entered.",
                   [(f"sum by (state) (increase(mailpipe_worker_breaker_transitions_total{{{G}}}[{RI}]))",
                     "to {{state}}")], w=8, h=6),
        row("Producer"),
        timeseries("Published by mailbox", "Emails published per second, per account and mailbox.",
                   [(f"sum by (account, mailbox) (rate(mailpipe_producer_emails_published_total{{{P}}}[{RI}]))",
                     "{{account}} {{mailbox}}")], unit="ops"),
        timeseries("Mailbox checks", "Polls, IDLE wake-ups (the server announced mail) and IDLE renewals "
                   "per second.", [(f"sum by (kind) (rate(mailpipe_producer_polls_total{{{P}}}[{RI}]))",
                                    "{{kind}}")], unit="ops"),
        timeseries("IMAP errors and reconnects", "Fetch errors by kind and reconnections per second.", [
            (f"sum by (kind) (rate(mailpipe_producer_fetch_errors_total{{{P}}}[{RI}]))", "{{kind}} errors"),
            (f"sum by (account) (rate(mailpipe_producer_reconnects_total{{{P}}}[{RI}]))",
             "{{account}} reconnects"),
        ], unit="ops"),
        timeseries("Time since last successful sync", "Per mailbox (counted from when the producer started "
                   "watching it if it never synced); the NoImapSync alert fires past 15 minutes.",
                   [(f"time() - max by (account, mailbox) (mailpipe_producer_last_sync_timestamp_seconds{{{P}}} "
                     f"or mailpipe_producer_mailbox_watch_start_timestamp_seconds{{{P}}})",
                     "{{account}} {{mailbox}}")], unit="s"),
        timeseries("OAuth2 token expiry", "Seconds until the current access token of each account expires "
                   "(refreshed before use with a safety margin), and failed refreshes (right axis).", [
                       (f"min by (account) (mailpipe_producer_oauth_token_expiry_timestamp_seconds{{{P}}}) "
                        "- time()", "{{account}} expires in"),
                       (f"sum by (account) (increase(mailpipe_producer_oauth_refresh_failures_total{{{P}}}"
                        f"[{RI}]))", "{{account}} refresh failures"),
                   ], unit="s", overrides=[{"matcher": {"id": "byRegexp", "options": ".*failures"},
                                           "properties": [{"id": "unit", "value": "short"},
                                                          {"id": "custom.axisPlacement", "value": "right"}]}]),
        timeseries("Producer flow", "Bytes fetched from IMAP per second, backpressure pauses (consumers too "
                   "far behind), UIDVALIDITY changes and MIME defects.", [
                       (f"sum (rate(mailpipe_producer_fetched_bytes_total{{{P}}}[{RI}]))", "bytes/s"),
                       (f"sum (increase(mailpipe_producer_backpressure_pauses_total{{{P}}}[{RI}]))", "pauses"),
                       (f"sum (increase(mailpipe_producer_uidvalidity_changes_total{{{P}}}[{RI}]))",
                        "UIDVALIDITY changes"),
                       (f"sum (increase(mailpipe_producer_parse_defects_total{{{P}}}[{RI}]))", "MIME defects"),
                   ], overrides=[{"matcher": {"id": "byName", "options": "bytes/s"}, "properties": [
                       {"id": "unit", "value": "Bps"}, {"id": "custom.axisPlacement", "value": "right"}]}]),
        timeseries("Checkpoints", "Highest IMAP UID published per mailbox, as stored in Redis.",
                   [(f"max by (account, mailbox) (mailpipe_checkpoint_last_uid{{{P}}})",
                     "{{account}} {{mailbox}}")]),
        row("Redis"),
        timeseries("Redis memory", "Memory used by Redis against maxmemory (0: no limit), and the sampled "
                   "size of the stream and dead-letter stream.", [
                       (f"max (mailpipe_redis_memory_used_bytes{{{P}}})", "used"),
                       (f"max (mailpipe_redis_memory_max_bytes{{{P}}})", "maxmemory"),
                       (f"max by (key) (mailpipe_redis_key_memory_bytes{{{P}}})", "{{key}}"),
                   ], unit="bytes"),
        timeseries("Dedup memory", "Idempotency keys remembered as done per group (bounded by the dedup "
                   "retention).", [(f"sum by (group) (mailpipe_dedup_keys{{{G}}})", "{{group}}")]),
        timeseries("Redis health", "Whether the exporter reads Redis (1 = yes), the time one scrape of the "
                   "stream state takes, and Redis errors seen by workers.", [
                       (f"min (mailpipe_exporter_redis_up{{{P}}})", "exporter reads Redis"),
                       (f"max (mailpipe_exporter_collect_duration_seconds{{{P}}})", "scrape seconds"),
                       (f"sum (rate(mailpipe_worker_redis_errors_total{{{G}}}[{RI}]))", "worker errors/s"),
                   ]),
    ]


def variable(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query, "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2, "sort": 1, "multi": multi, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0,
    }


def layout(items: list[Panel]) -> list[Panel]:
    """Place panels left to right, wrapping at 24 columns; rows start a new line."""
    x = y = line_h = 0
    for pid, panel in enumerate(items, start=1):
        panel["id"] = pid
        grid = panel["gridPos"]
        if panel["type"] == "row" or x + grid["w"] > 24:
            x, y, line_h = 0, y + line_h, 0
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        line_h = max(line_h, grid["h"])
        if panel["type"] == "row":
            x, y, line_h = 0, y + grid["h"], 0
    return items


def dashboard() -> dict[str, Any]:
    return {
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": "mailpipe", "title": "mailpipe", "description": "Email through Redis Streams: throughput, "
        "latency, backlog, retries, dead letters, circuit breaker, producer and Redis health.",
        "tags": ["mailpipe", "redis", "email"], "timezone": "browser", "editable": True,
        "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
        "links": [], "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
            "type": "dashboard"}]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            variable("job", "Job", "label_values(up, job)"),
            variable("instance", "Instance", 'label_values(up{job=~"$job"}, instance)'),
            variable("stream", "Stream", "label_values(mailpipe_stream_entries, stream)"),
            variable("group", "Group", 'label_values(mailpipe_group_pending_entries{stream=~"$stream"}, group)'),
        ]},
        "panels": layout(panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.name} is stale: run python scripts/gen_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
