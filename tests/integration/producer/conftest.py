"""Fixtures for producer tests: a real Dovecot per session, a fresh IMAP user per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from mailpipe.keys import Keys
from mailpipe.metrics import ProducerMetrics
from mailpipe.producer.settings import ProducerSettings
from mailpipe.settings import load_settings
from tests.dovecot import PASSWORD, DovecotServer, running_dovecot


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    with running_dovecot() as server:
        yield server


@pytest.fixture
def imap_user(dovecot: DovecotServer) -> str:
    return dovecot.add_user(f"u{uuid.uuid4().hex[:10]}@example.com")


@pytest.fixture
def make_settings(dovecot: DovecotServer, imap_user: str, redis_url: str, keys: Keys
                  ) -> Callable[..., ProducerSettings]:
    def make(**overrides: Any) -> ProducerSettings:
        values: dict[str, Any] = {
            "redis_url": redis_url, "namespace": keys.namespace, "stream": keys.stream_name,
            "imap_host": dovecot.host, "imap_port": dovecot.port, "imap_tls": "none",
            "username": imap_user, "imap_password": PASSWORD, "start": "all",
            "lease_ttl_s": 3, "idle_refresh_s": 30, "poll_interval_s": 0.5, "reconnect_max_s": 2,
            "imap_timeout_s": 10,
        }
        values.update(overrides)
        return load_settings(ProducerSettings, **values)

    return make


@pytest.fixture
def metrics(keys: Keys) -> ProducerMetrics:
    return ProducerMetrics(CollectorRegistry(), stream=keys.stream_name)


def metric(m: ProducerMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def stream_entries(r: redis.Redis, keys: Keys) -> list[tuple[str, dict[str, str]]]:
    return r.xrange(keys.stream)  # type: ignore[return-value]
