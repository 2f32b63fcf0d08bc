"""Prometheus metrics of the worker and producer processes, and their HTTP endpoints.

Every series is prefixed ``mailpipe_`` and carries its unit in its name. Labels are bounded: outcomes,
states and error kinds come from fixed sets, accounts and mailboxes from configuration; never a label per
email, stream id or error message. Children of fixed label sets are bound once, so the hot path is a
plain ``.inc()`` / ``.observe()``.

The state of the stream itself (length, lag, pending, oldest pending age, ...) is not here: it is read from
Redis at scrape time by :mod:`mailpipe.stream_state`, exported by ``python -m mailpipe exporter`` only.
See docs/OBSERVABILITY.md for every series.
"""

from __future__ import annotations

from mailpipe.health import HealthServer
from mailpipe.metrics_base import (
    BREAKER_STATES,
    FETCH_ERROR_KINDS,
    OUTCOMES,
    POLL_KINDS,
    new_registry,
)
from mailpipe.producer_metrics import ProducerMetrics
from mailpipe.worker_metrics import WorkerMetrics

__all__ = [
    "BREAKER_STATES",
    "FETCH_ERROR_KINDS",
    "OUTCOMES",
    "POLL_KINDS",
    "HealthServer",
    "ProducerMetrics",
    "WorkerMetrics",
    "new_registry",
]
