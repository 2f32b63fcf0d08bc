"""The HTTP side of a long-running process: ``/metrics``, ``/health``, ``/ready`` and ``/status``.

Runs the standard library's threading HTTP server in a daemon thread, so a slow scrape or a stuck client
never blocks the asyncio loop of the worker. The callables handed in (``ready``, ``status``) are called on
that HTTP thread: they must be cheap and thread-safe (read state the main loop keeps, do not await it).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from mailpipe.errors import ConfigError
from mailpipe.logs import redact

__all__ = ["HealthServer", "ReadyCheck", "StatusView"]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str]]
StatusView = Callable[[], dict[str, object]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted process must be able to bind again at once, but never share a port held by a live one:
    # on Linux SO_REUSEADDR allows the former and still refuses the latter with EADDRINUSE.
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves the process's metrics and health endpoints on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        ready: ReadyCheck,
        status: StatusView | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.registry = registry
        self._ready = ready
        self._status = status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises ConfigError when the address cannot be bound."""
        if self._server is not None:
            return
        server_cls = _Server6 if ":" in self.host else _Server
        try:
            server = server_cls((self.host, self._requested_port), _handler_class(self))
        except OSError as exc:
            where = f"{self.host}:{self._requested_port}"
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {where} is already in use: set MAILPIPE_METRICS_PORT to a free port "
                    "(0 picks one) or stop the process holding it"
                ) from None
            raise ConfigError(
                f"cannot serve metrics on {where} ({exc.strerror or exc}): "
                "check MAILPIPE_METRICS_HOST and MAILPIPE_METRICS_PORT"
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2},
            name=f"mailpipe-http-{self.port}", daemon=True,
        )
        self._thread.start()
        log.info("serving /metrics /health /ready /status", extra={"url": self.url})

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the endpoints answer (called on HTTP threads) ---------------------------------------

    def readiness(self) -> tuple[bool, str]:
        try:
            ok, reason = self._ready()
        except Exception as exc:  # a broken check must read as "not ready", never kill the server
            log.warning("readiness check failed: %s", redact(f"{type(exc).__name__}: {exc}"))
            return False, f"readiness check failed ({type(exc).__name__})"
        return bool(ok), str(reason)

    def status_json(self) -> bytes | None:
        if self._status is None:
            return None
        try:
            view: dict[str, Any] = dict(self._status())
        except Exception as exc:
            view = {"error": f"status view failed ({type(exc).__name__})"}
        view.setdefault("ready", self.readiness()[0])
        return (json.dumps(view, default=str, sort_keys=True) + "\n").encode()


def _handler_class(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mailpipe"
        sys_version = ""

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                try:
                    body = encoder(owner.registry)
                except Exception as exc:
                    log.warning("metrics collection failed: %s", redact(f"{type(exc).__name__}: {exc}"))
                    self._send(500, b"metrics collection failed\n")
                    return
                self._send(200, body, content_type)
            elif path == "/health":
                self._send(200, b"ok\n")
            elif path == "/ready":
                ok, reason = owner.readiness()
                text = (reason or ("ready" if ok else "not ready")) + "\n"
                self._send(200 if ok else 503, text.encode())
            elif path == "/status":
                status = owner.status_json()
                if status is None:
                    self._send(404, b"no status view in this process\n")
                else:
                    self._send(200, status, "application/json")
            elif path == "/":
                self._send(200, b"mailpipe: /metrics /health /ready /status\n")
            else:
                self._send(404, b"not found: try /metrics /health /ready /status\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    return Handler
