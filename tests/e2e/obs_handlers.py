"""Handlers for the observability scenario: outcomes chosen by the email's subject, nothing random.

``permanent`` in the subject: PermanentError (dead-lettered at once); ``retry-once``: RetryLater on the
first attempt, success on the second; anything else: success. ``always_transient`` fails every email
as a downstream outage would, so its group's circuit breaker opens.
"""

from __future__ import annotations

from mailpipe.entry import Message
from mailpipe.errors import PermanentError, RetryLater, TransientError
from mailpipe.handler import Context


def by_subject(message: Message, ctx: Context) -> None:
    subject = message.email.subject
    if "permanent" in subject:
        raise PermanentError("this email can never be handled")
    if "retry-once" in subject and ctx.attempt == 1:
        raise RetryLater(0.2, "downstream asked to come back later")


def always_transient(message: Message, ctx: Context) -> None:
    raise TransientError("downstream is down")
