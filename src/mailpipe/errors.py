"""The error tree.

Two families: errors of mailpipe's own machinery (configuration, Redis, malformed entries) and the
exceptions a handler raises to say how its failure should be treated.
"""

from __future__ import annotations


class MailpipeError(Exception):
    """Base of every error mailpipe raises on purpose."""


class ConfigError(MailpipeError):
    """Invalid or missing configuration; the message says which setting and how to fix it."""


class RedisUnavailable(MailpipeError):
    """Redis cannot be reached or refused us; the message is one actionable line without secrets."""


class MalformedEntry(MailpipeError):
    """A stream entry that does not follow the entry format; it can never succeed (dead-lettered)."""


# --- what a handler may raise -------------------------------------------------------------------


class HandlerError(Exception):
    """Base of the exceptions a handler may raise to classify its failure."""


class PermanentError(HandlerError):
    """This email can never be processed: dead-letter it at once, no retries."""


class TransientError(HandlerError):
    """A downstream system is failing (counts towards the circuit breaker); retried with backoff."""


class RetryLater(HandlerError):
    """Retry after an explicit delay (e.g. a downstream rate limit); does not trip the breaker."""

    def __init__(self, delay_s: float, message: str = "") -> None:
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        super().__init__(message or f"retry requested in {delay_s:g}s")
        self.delay_s = delay_s
