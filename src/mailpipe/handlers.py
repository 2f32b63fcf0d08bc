"""Built-in handlers."""

from __future__ import annotations

from mailpipe.entry import Message
from mailpipe.handler import Context


def log_email(message: Message, ctx: Context) -> None:
    """Default handler: one structured log line per email."""
    email = message.email
    ctx.logger.info(
        "email received: %s", email.subject[:120],
        extra={
            "subject": email.subject[:200],
            "from": email.from_[:3],
            "message_id": email.message_id,
            "size": email.size,
            "attachments": len(email.attachments),
            "attempt": ctx.attempt,
        },
    )


def noop(message: Message, ctx: Context) -> None:
    """Does nothing (benchmarks, tests)."""


async def noop_async(message: Message, ctx: Context) -> None:
    """Does nothing, as a coroutine (benchmarks, tests)."""
