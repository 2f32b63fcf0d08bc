"""The handler contract.

A handler is a plain function or a coroutine function ``handler(message, ctx)``:

* returning normally means success: the entry is acknowledged and its idempotency key recorded as done,
  in one atomic step;
* raising means failure: :class:`~mailpipe.errors.PermanentError` dead-letters at once,
  :class:`~mailpipe.errors.RetryLater` retries after its delay, anything else retries with exponential
  backoff until the attempts run out, then dead-letters.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mailpipe.entry import Message
from mailpipe.errors import ConfigError

Handler = Callable[[Message, "Context"], Awaitable[None] | None]


@dataclass(frozen=True)
class Context:
    """What a handler knows about the delivery it is running for."""

    idempotency_key: str
    attempt: int
    stream_id: str
    consumer: str
    correlation_id: str
    logger: logging.LoggerAdapter[logging.Logger]


def load_handler(spec: str) -> Handler:
    """Import ``package.module:callable``; a clear ConfigError if it is not there or not callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"invalid handler {spec!r}: expected 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import handler module {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"handler {spec!r}: {module_name} has no attribute {attr!r}")
    if not callable(target):
        raise ConfigError(f"handler {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def is_async_handler(handler: Handler) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004  (callable objects with async __call__)
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)
