"""Deterministic waiting and small builders shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from mailpipe.entry import Email, Source, build_entry

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def sample_entry(n: int, *, key: str | None = None, subject: str | None = None) -> dict[str, str]:
    email = Email(message_id=f"<m{n}@example.com>", subject=subject or f"message {n}",
                  from_=["a@example.com"], to=["b@example.com"], text=f"body {n}", size=100)
    return build_entry(email, idempotency_key=key or f"k{n}", source=Source(kind="api"))
