"""The Grafana dashboard: generated from scripts/gen_dashboard.py, importable, every query filtered."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "config" / "grafana" / "mailpipe-dashboard.json"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_dashboard", ROOT / "scripts" / "gen_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(COMMITTED.read_text())
    return data


def test_committed_json_is_what_the_generator_writes() -> None:
    assert COMMITTED.read_text() == generator().render(), "run: python scripts/gen_dashboard.py"


def test_datasource_and_filters_are_variables() -> None:
    board = committed()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance", "stream", "group"}
    assert variables["datasource"]["type"] == "datasource"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel["description"], panel
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            selectors = re.findall(r"(mailpipe_\w+)\{([^}]*)\}", t["expr"])
            assert selectors, t["expr"]
            for name, matchers in selectors:
                for var in ("job", "instance", "stream"):
                    assert f'{var}=~"${var}"' in matchers, f"{panel['title']}: {name} not filtered by ${var}"


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = committed()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, p["title"]
        taken |= cells


def test_the_panels_the_issue_asks_for_exist() -> None:
    text = json.dumps(committed())
    for metric in ("mailpipe_worker_entries_processed_total", "mailpipe_worker_handler_duration_seconds_bucket",
                   "mailpipe_worker_end_to_end_duration_seconds_bucket", "mailpipe_group_undelivered_entries",
                   "mailpipe_group_pending_entries", "mailpipe_group_oldest_pending_age_seconds",
                   "mailpipe_retry_scheduled_entries", "mailpipe_dead_letter_entries", "mailpipe_breaker_state",
                   "mailpipe_producer_last_sync_timestamp_seconds",
                   "mailpipe_producer_oauth_token_expiry_timestamp_seconds"):
        assert metric in text, metric
