"""Shared fixtures: a real Redis server per test session, a clean pipeline per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from mailpipe.embedded import RedisServerProcess
from mailpipe.errors import ConfigError
from mailpipe.keys import Keys

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--skip-slow", action="store_true", help="skip tests marked slow (chaos/soak runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--skip-slow"):
        skip = pytest.mark.skip(reason="--skip-slow given")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


def server_missing(what: str) -> None:
    """A needed real server is unavailable: fail in CI, skip locally."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but unavailable", pytrace=False)
    pytest.skip(f"{what} unavailable")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServerProcess]:
    server = RedisServerProcess(data_dir=tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except ConfigError as exc:
        server_missing(f"a Redis server ({exc})")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServerProcess) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace="mailpipe", stream_name=f"t{uuid.uuid4().hex[:8]}")
