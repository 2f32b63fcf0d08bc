"""The HTTP endpoints every long-running process serves: /metrics, /health, /ready, /status."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailpipe.errors import ConfigError
from mailpipe.metrics import HealthServer, WorkerMetrics


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class Readiness:
    def __init__(self) -> None:
        self.answer: tuple[bool, str] = (True, "ready")
        self.raise_: Exception | None = None

    def __call__(self) -> tuple[bool, str]:
        if self.raise_ is not None:
            raise self.raise_
        return self.answer


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics(stream="mail", group="workers", consumer="w1")


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def server(metrics: WorkerMetrics, readiness: Readiness) -> Iterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, metrics.registry, ready=readiness,
                       status=lambda: {"consumer": "w1", "inflight": 3, "last_error": None})
    srv.start()
    yield srv
    srv.stop()


def test_binds_a_free_port_on_loopback(server: HealthServer) -> None:
    assert server.port != 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_metrics_in_prometheus_text_format(server: HealthServer, metrics: WorkerMetrics) -> None:
    metrics.processed("success", 2)
    code, content_type, body = get(server.url + "/metrics")
    assert code == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {(s.name, s.labels.get("outcome")): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("mailpipe_worker_entries_processed_total", "success")] == 2


def test_metrics_negotiates_openmetrics(server: HealthServer) -> None:
    code, content_type, body = get(server.url + "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert code == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_health_is_200_while_alive_even_when_not_ready(server: HealthServer, readiness: Readiness) -> None:
    readiness.answer = (False, "circuit breaker open")
    assert get(server.url + "/health")[0] == 200


def test_ready_and_not_ready_with_reason(server: HealthServer, readiness: Readiness) -> None:
    assert get(server.url + "/ready")[::2] == (200, "ready\n")
    readiness.answer = (False, "Redis unreachable")
    assert get(server.url + "/ready")[::2] == (503, "Redis unreachable\n")


def test_a_failing_readiness_check_reads_as_not_ready(server: HealthServer, readiness: Readiness) -> None:
    readiness.raise_ = RuntimeError("password=hunter2 leaked")
    code, _, body = get(server.url + "/ready")
    assert code == 503
    assert "RuntimeError" in body and "hunter2" not in body
    assert get(server.url + "/metrics")[0] == 200  # the server survives


def test_status_is_the_process_view_as_json(server: HealthServer, readiness: Readiness) -> None:
    readiness.answer = (False, "draining")
    code, content_type, body = get(server.url + "/status")
    assert (code, content_type) == (200, "application/json")
    assert json.loads(body) == {"consumer": "w1", "inflight": 3, "last_error": None, "ready": False}


def test_status_absent_and_unknown_paths_are_404(metrics: WorkerMetrics) -> None:
    with HealthServer("127.0.0.1", 0, metrics.registry, ready=lambda: (True, "")) as srv:
        assert get(srv.url + "/status")[0] == 404
        assert get(srv.url + "/nope")[0] == 404
        assert get(srv.url + "/ready")[::2] == (200, "ready\n")


def test_port_in_use_is_a_one_line_config_error(metrics: WorkerMetrics) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        srv = HealthServer("127.0.0.1", port, metrics.registry, ready=lambda: (True, ""))
        with pytest.raises(ConfigError) as err:
            srv.start()
    message = str(err.value)
    assert message.startswith(f"port 127.0.0.1:{port} is already in use: set MAILPIPE_METRICS_PORT")
    assert "\n" not in message


def test_unbindable_address_is_a_config_error(metrics: WorkerMetrics) -> None:
    srv = HealthServer("192.0.2.1", 0, metrics.registry, ready=lambda: (True, ""))  # TEST-NET, not ours
    with pytest.raises(ConfigError, match="MAILPIPE_METRICS_HOST"):
        srv.start()


def test_stop_releases_the_port(metrics: WorkerMetrics) -> None:
    srv = HealthServer("127.0.0.1", 0, metrics.registry, ready=lambda: (True, ""))
    srv.start()
    port = srv.port
    srv.stop()
    again = HealthServer("127.0.0.1", port, metrics.registry, ready=lambda: (True, ""))
    again.start()
    assert get(again.url + "/health")[0] == 200
    again.stop()
