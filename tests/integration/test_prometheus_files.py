"""config/prometheus.yml and config/alerts.yml pass promtool; every alert is unit-tested and documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import server_missing

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"

pytestmark = pytest.mark.prometheus


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        server_missing("promtool (Debian package prometheus)")
    assert binary is not None
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=CONFIG)


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", (CONFIG / "alerts.yml").read_text(), flags=re.M)


def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_alert_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_a_unit_test() -> None:
    tests = (CONFIG / "alerts_test.yml").read_text()
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:", tests))
    assert set(alert_names()) == firing


def test_every_alert_links_its_runbook_and_is_documented() -> None:
    rules = (CONFIG / "alerts.yml").read_text()
    blocks = re.split(r"^\s*- alert: ", rules, flags=re.M)[1:]
    docs = (ROOT / "docs" / "OBSERVABILITY.md").read_text()
    for block in blocks:
        name = block.split()[0]
        assert f"runbook_url: docs/runbooks/{name}.md" in block, name
        assert f"(runbooks/{name}.md)" in docs, f"{name} missing from docs/OBSERVABILITY.md"
