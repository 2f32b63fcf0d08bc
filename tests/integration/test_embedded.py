"""The embedded server: Debian's redis-server when installed, else the valkey-server in the wheel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from mailpipe import embedded
from mailpipe.embedded import RedisServerProcess, answers_ping, ensure_embedded, free_port, stop_embedded
from mailpipe.keys import Keys
from tests.e2e.workers import finish, start_worker
from tests.util import sample_entry


def test_valkey_from_the_wheel_is_used_when_no_redis_server_is_installed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: Keys) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    binary = embedded.server_binary()
    assert binary.endswith("valkey-server") and os.access(binary, os.X_OK)
    server = RedisServerProcess(data_dir=tmp_path).start()
    try:
        assert "valkey" in str(redis.Redis.from_url(server.url).info("server").get("server_name", "valkey"))
        r = redis.Redis.from_url(server.url, decode_responses=True)
        for i in range(20):
            r.xadd(keys.stream, sample_entry(i, key=f"k{i % 15}"))
        code, err = finish(start_worker(server.url, keys, "c1", "--exit-when-idle"))
        assert code == 0, err
        assert "processed 15, skipped as duplicate 5" in err
    finally:
        server.stop()


def test_ensure_embedded_starts_once_reuses_and_stops(tmp_path: Path) -> None:
    port = free_port()
    url = ensure_embedded(port, str(tmp_path / "data"))
    try:
        assert url == f"redis://127.0.0.1:{port}/0" and answers_ping(port)
        redis.Redis.from_url(url).set("kept", "1")
        assert ensure_embedded(port, str(tmp_path / "data")) == url  # reused, not restarted
        assert redis.Redis.from_url(url).get("kept") == b"1"
    finally:
        assert stop_embedded(str(tmp_path / "data"))
    assert not answers_ping(port)
    # data survives a restart (append-only file)
    ensure_embedded(port, str(tmp_path / "data"))
    try:
        assert redis.Redis.from_url(url).get("kept") == b"1"
    finally:
        stop_embedded(str(tmp_path / "data"))
