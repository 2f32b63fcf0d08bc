"""The shipped dashboard and alert rules against a real Prometheus scraping real mailpipe processes.

One scenario, processes started as a user would:
- Dovecot (XOAUTH2 checked against a local token server) and ``producer.py`` syncing INBOX with IDLE;
- ``worker.py`` in group ``workers`` (successes, a retry, permanent failures -> dead letters, a malformed
  entry), ``worker.py`` in group ``flaky`` whose downstream always fails (its breaker opens), group
  ``archive`` that nobody reads (backlog, no live consumer), a ghost consumer holding an hour-old entry;
- ``python -m mailpipe exporter``;
- Prometheus scraping all four every second and evaluating a copy of config/alerts.yml whose ``for:``
  durations are 0s.
Then every query of every dashboard panel and every alert rule must return data, the alerts this scenario
causes must fire, and metric values must equal the truth in Redis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from mailpipe.embedded import free_port
from mailpipe.keys import Keys
from mailpipe.producer.token_store import StoredToken, save_token
from tests.conftest import server_missing
from tests.dovecot import DovecotServer, running_dovecot
from tests.oauth_server import OAuthTestServer
from tests.util import sample_entry, wait_until

pytestmark = [pytest.mark.prometheus, pytest.mark.imap]

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SECRET = "client-SECRET-obs"
# Alerts this scenario causes (the others are shown to fire by config/alerts_test.yml).
EXPECTED_FIRING = {
    "MailpipeDeadLettersGrowing",  # permanent failures and a malformed entry
    "MailpipeOldestPendingTooOld",  # the ghost's hour-old entry
    "MailpipeBacklogTooOld",  # group archive never reads
    "MailpipeConsumerLagGrowing",  # ... while 150 entries arrive
    "MailpipeNoLiveConsumers",  # group archive has no consumer
    "MailpipeCircuitBreakerOpen",  # group flaky
    "MailpipeHandlerFailureRatioHigh",  # group flaky: every entry retried
    "MailpipeOAuthRefreshFailing",  # one refresh answered 503
    "MailpipeOAuthTokenExpiring",  # ... and the new token lives 120 s
    "MailpipeRedisAofDisabled",  # the test Redis runs without AOF
}


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, killed if it hangs."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env=env, cwd=logs, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        try:
            data = self.api("query", query=expr)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr}: {exc.read().decode()}") from None
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"}


def with_bool(expr: str) -> str:
    """``expr`` with every comparison outside label matchers turned into a ``bool`` comparison.

    An alert expression returns nothing while its condition is false; with ``bool`` it returns 0/1 for
    every series it looks at, which shows the series it needs exist and the expression evaluates.
    """
    out: list[str] = []
    i, depth, quote = 0, 0, ""
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(c)
            if c == quote and expr[i - 1] != "\\":
                quote = ""
            i += 1
            continue
        if c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0:
            op = next((o for o in ("==", "!=", ">=", "<=", ">", "<") if expr.startswith(o, i)), None)
            if op is not None:
                out.append(f"{op} bool")
                i += len(op)
                continue
        out.append(c)
        i += 1
    return "".join(out)


def dashboard_queries(stream: str) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target, the dashboard variables filled in as Grafana would."""
    board = json.loads((ROOT / "config" / "grafana" / "mailpipe-dashboard.json").read_text())
    values = {"$__rate_interval": "15s", "$instance": ".*", "$job": "mailpipe-.*", "$stream": stream,
              "$group": ".*"}
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in values.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, expr
            queries.append((panel["title"], expr))
    for variable in board["templating"]["list"]:
        query = variable.get("definition", "")
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        if match:
            selector = match.group(1)
            for var, value in values.items():
                selector = selector.replace(var, value)
            queries.append((f"variable {variable['name']}", f"group by ({match.group(2)}) ({selector})"))
    return queries


def raw_email(n: int, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "ops@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<obs-{n}-{os.getpid()}@example.com>"
    msg["Date"] = "Mon, 02 Jun 2025 10:00:00 +0000"
    msg.set_content(f"body of message {n}\n")
    return bytes(msg)


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        server_missing("Prometheus (Debian package prometheus)")
    assert binary is not None
    return binary


@pytest.fixture
def token_server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer(access_lifetime_s=120) as srv:  # refreshed tokens expire within the alert margin
        srv.add_client("test-client", CLIENT_SECRET)
        yield srv


@pytest.fixture
def dovecot(token_server: OAuthTestServer) -> Iterator[DovecotServer]:
    with running_dovecot(oauth2_introspection_url=token_server.introspection_url) as server:
        yield server


def test_dashboard_and_alerts_against_real_prometheus(
    prometheus_binary: str, dovecot: DovecotServer, token_server: OAuthTestServer, r: redis.Redis,
    redis_url: str, keys: Keys, tmp_path: Path,
) -> None:
    stream = keys.stream_name
    account = f"ops-{os.getpid()}@example.com"
    dovecot.add_user(account)
    refresh, access, expires_at = token_server.issue(account, lifetime_s=3600)
    token_file = tmp_path / "token.json"
    save_token(token_file, StoredToken(
        provider="google", client_id="test-client", client_secret=SecretStr(CLIENT_SECRET),
        token_uri=token_server.token_uri, revoke_uri=token_server.revoke_uri, refresh_token=SecretStr(refresh),
        access_token=SecretStr(access), expiry=datetime.fromtimestamp(expires_at, UTC), account=account,
        scopes=("https://mail.google.com/",)))

    # An entry enqueued an hour ago, delivered to a consumer that never acknowledges it.
    seconds, _ = r.time()
    r.xadd(keys.stream, sample_entry(0, key="ghost-0"), id=f"{(int(seconds) - 3600) * 1000}-0")
    r.xgroup_create(keys.stream, "workers", id="0")
    r.xgroup_create(keys.stream, "archive", id="0")
    # From the end: flaky's first failures must come after Prometheus scraped its counters at 0.
    r.xgroup_create(keys.stream, "flaky", id="$")
    r.xreadgroup("workers", "ghost", {keys.stream: ">"}, count=1)

    ports = {name: free_port() for name in ("exporter", "producer", "worker", "flaky", "prometheus")}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "MAILPIPE_REDIS_URL": redis_url,
           "MAILPIPE_NAMESPACE": keys.namespace, "MAILPIPE_STREAM": stream, "MAILPIPE_LOG_FORMAT": "text",
           "MAILPIPE_LOG_LEVEL": "INFO"}
    rules = (ROOT / "config" / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(re.sub(r"(?m)^(\s+for: )\S+$", r"\g<1>0s", rules))
    jobs = "".join(
        f"  - job_name: mailpipe-{job}\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(f'127.0.0.1:{ports[n]}') for n in names)}]\n"
        for job, names in (("exporter", ["exporter"]), ("producer", ["producer"]),
                           ("worker", ["worker", "flaky"])))
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - alerts.yml\nscrape_configs:\n" + jobs)

    py = sys.executable
    processes: list[Process] = []

    def start(name: str, args: list[str], **extra: str) -> Process:
        proc = Process(name, args, {**env, **extra}, tmp_path)
        processes.append(proc)
        return proc

    def diagnose() -> str:
        return "\n".join(p.tail() for p in processes)

    try:
        start("prometheus", [prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn",
                             f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])
        prom = Prometheus(f"http://127.0.0.1:{ports['prometheus']}")
        wait_until(prom.ready, 60, interval=0.1, what=f"Prometheus ready\n{diagnose()}")
        start("exporter", [py, "-m", "mailpipe", "exporter", "--port", str(ports["exporter"])])
        worker_env = {"MAILPIPE_RECLAIM_IDLE_MS": "600000", "MAILPIPE_HOUSEKEEPING_INTERVAL_S": "0.2"}
        start("worker", [py, str(ROOT / "worker.py"), "--consumer", "w1", "--group", "workers",
                         "--handler", "tests.e2e.obs_handlers:by_subject", "--block-ms", "200",
                         "--metrics-port", str(ports["worker"])], **worker_env)
        start("flaky", [py, str(ROOT / "worker.py"), "--consumer", "f1", "--group", "flaky",
                        "--handler", "tests.e2e.obs_handlers:always_transient", "--block-ms", "200",
                        "--metrics-port", str(ports["flaky"])], **worker_env,
              MAILPIPE_BREAKER_THRESHOLD="3", MAILPIPE_BREAKER_COOLDOWN_S="600", MAILPIPE_RETRY_BASE_S="0.1",
              MAILPIPE_RETRY_CAP_S="0.2")
        start("producer", [py, str(ROOT / "producer.py"), "--start", "all",
                           "--metrics-port", str(ports["producer"])],
              MAILPIPE_IMAP_HOST=dovecot.host, MAILPIPE_IMAP_PORT=str(dovecot.port), MAILPIPE_IMAP_TLS="none",
              MAILPIPE_USERNAME=account, MAILPIPE_AUTH="xoauth2", MAILPIPE_TOKEN_FILE=str(token_file),
              MAILPIPE_RECONNECT_MAX_S="1", MAILPIPE_LEASE_TTL_S="3")

        # Baselines first: a counter Prometheus first sees at 1 hides that increase from increase().
        for what, expr in (
            ("all targets up", 'count(up{job=~"mailpipe-.*"} == 1) == 4'),
            ("dead letters counted from 0", "mailpipe_dead_letter_entries_added_total == 0"),
            ("producer logged in with XOAUTH2", "mailpipe_producer_oauth_refresh_failures_total == 0"),
            ("backlog of group archive", 'mailpipe_group_undelivered_entries{group="archive"} >= 1'),
        ):
            wait_until(lambda e=expr: prom.query(e), 90, interval=0.25, what=f"{what}\n{diagnose()}")

        subjects = ["hello"] * 8 + ["permanent failure"] * 2 + ["retry-once please"] * 2
        dovecot.append(account, [raw_email(n, s) for n, s in enumerate(subjects, start=1)])
        r.xadd(keys.stream, {"v": "1", "garbage": "not an entry"})  # malformed: dead-lettered
        pipe = r.pipeline(transaction=False)
        for n in range(150):  # a bulk import: the archive backlog grows past the lag alert's floor
            pipe.xadd(keys.stream, sample_entry(1000 + n))
        pipe.execute()

        def settled() -> bool:
            groups = {g["name"]: g for g in r.xinfo_groups(keys.stream)}
            last = r.xinfo_stream(keys.stream)["last-generated-id"]
            return (groups["workers"]["last-delivered-id"] == last and groups["workers"]["pending"] == 1
                    and r.zcard(keys.retry_schedule("workers")) == 0 and r.xlen(keys.dead_letters) >= 3
                    and r.hget(keys.breaker("flaky"), "state") == "open")

        wait_until(settled, 120, interval=0.2, what=f"mail processed, breaker of flaky open\n{diagnose()}")

        # A reconnect whose token refresh fails once (503), then succeeds with a short-lived token.
        token_server.fail_next(1, 503)
        subprocess.run([dovecot.doveadm_binary, "-c", str(dovecot.conf), "kick", account], check=True,
                       capture_output=True, timeout=30)
        wait_until(lambda: prom.query("mailpipe_producer_oauth_refresh_failures_total >= 1")
                   and prom.query("mailpipe_producer_oauth_token_expiry_timestamp_seconds - time() < 300"),
                   90, interval=0.25, what=f"a failed then a successful refresh\n{diagnose()}")

        try:
            wait_until(lambda: prom.firing() >= EXPECTED_FIRING, 60, interval=0.5, what="alerts firing")
        except AssertionError:
            rules_now = {rule["name"]: rule for group in prom.api("rules")["groups"] for rule in group["rules"]}
            details = [f"{name}: {with_bool(rules_now[name]['query'])} -> "
                       f"{prom.query(with_bool(rules_now[name]['query']))}"
                       for name in sorted(EXPECTED_FIRING - prom.firing())]
            raise AssertionError("not firing:\n" + "\n".join(details) + "\n" + diagnose()) from None

        # Every panel query returns data.
        empty = [f"{title}: {expr}" for title, expr in dashboard_queries(stream) if not prom.query(expr)]
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        # Every alert rule's expression evaluates over existing series.
        loaded = [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]
        assert {rule["name"] for rule in loaded} == set(re.findall(r"- alert: (\w+)", rules))
        silent = [f"{rule['name']}: {with_bool(rule['query'])}" for rule in loaded
                  if not prom.query(with_bool(rule["query"]))]
        assert not silent, "alert expressions without data:\n" + "\n".join(silent)
        assert all(rule["health"] == "ok" for rule in loaded), [r["lastError"] for r in loaded]

        # Metric values equal the truth in Redis (polled: the last scrape may be up to a second old).
        sel = f'stream="{stream}"'
        truths = {
            f'mailpipe_group_pending_entries{{{sel},group="workers"}}':
                lambda: r.xpending(keys.stream, "workers")["pending"],
            f"mailpipe_dead_letter_entries{{{sel}}}": lambda: r.xlen(keys.dead_letters),
            f"mailpipe_stream_entries{{{sel}}}": lambda: r.xlen(keys.stream),
            f'mailpipe_group_undelivered_entries{{{sel},group="archive"}}': lambda: r.xlen(keys.stream),
            f'mailpipe_breaker_state{{{sel},group="flaky",state="open"}}': lambda: 1,
            f'mailpipe_worker_breaker_state{{{sel},group="flaky",state="open"}}': lambda: 1,
            f'sum(mailpipe_producer_emails_published_total{{{sel}}})': lambda: len(subjects),
        }
        for expr, truth in truths.items():
            wait_until(lambda e=expr, t=truth: prom.value(e) == t(), 30, interval=0.25,  # type: ignore[misc]
                       what=f"{expr} == {truth()} (Prometheus says {prom.value(expr)})")
        age = prom.value(f'mailpipe_group_oldest_pending_age_seconds{{{sel},group="workers"}}')
        assert age is not None and 3600 <= age < 3600 + 300
        processed = f'mailpipe_worker_entries_processed_total{{{sel},group="workers"'
        assert prom.value(processed + ',outcome="dead_lettered"}') == 3  # 2 permanent failures + malformed
        assert prom.value(processed + ',outcome="retried"}') == 2
        assert prom.value(f'mailpipe_worker_malformed_entries_total{{{sel},group="workers"}}') == 1
    finally:
        for proc in reversed(processes):
            proc.stop()
