"""Handlers for worker processes started by e2e tests, configured through the environment.

MAILPIPE_TEST_RECORD_URL    Redis URL where every execution is RPUSHed to ``test:executions``
MAILPIPE_TEST_DELAY_S       seconds each execution takes (simulated I/O)
MAILPIPE_TEST_FAIL_PERCENT  transient failure rate, deterministic per (key, attempt)
Keys starting with ``perm-`` raise PermanentError on every attempt.
"""

from __future__ import annotations

import hashlib
import os
import time

import redis

from mailpipe.entry import Message
from mailpipe.errors import PermanentError, TransientError
from mailpipe.handler import Context

EXECUTIONS = "test:executions"
_client: redis.Redis | None = None


def _recorder() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["MAILPIPE_TEST_RECORD_URL"], decode_responses=True)
    return _client


def transient_failure(key: str, attempt: int, percent: int) -> bool:
    digest = hashlib.sha256(f"{key}/{attempt}".encode()).digest()
    return digest[0] * 100 // 256 < percent


def record(message: Message, ctx: Context) -> None:
    delay = float(os.environ.get("MAILPIPE_TEST_DELAY_S", "0"))
    if delay:
        time.sleep(delay)
    key = ctx.idempotency_key
    if key.startswith("perm-"):
        outcome = "permanent"
    elif transient_failure(key, ctx.attempt, int(os.environ.get("MAILPIPE_TEST_FAIL_PERCENT", "0"))):
        outcome = "transient"
    else:
        outcome = "ok"
    # the side effect whose duplication the tests look for
    _recorder().rpush(EXECUTIONS, f"{key} {ctx.attempt} {outcome} {ctx.consumer} {os.getpid()}")
    if outcome == "permanent":
        raise PermanentError("this email can never be handled")
    if outcome == "transient":
        raise TransientError("downstream hiccup")


def kill_on_poison(message: Message, ctx: Context) -> None:
    """Records like :func:`record`, but an email keyed ``poison-*`` crashes the whole worker process."""
    if ctx.idempotency_key.startswith("poison-"):
        os.kill(os.getpid(), 9)
    record(message, ctx)
