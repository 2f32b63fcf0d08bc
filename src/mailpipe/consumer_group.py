"""Creating the consumer group, and recreating it when Redis lost it (restart without data, FLUSHALL)."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)


def is_nogroup(exc: BaseException) -> bool:
    """The group (or the whole stream) is gone: deleted, FLUSHALL, or Redis restarted without its data.
    A read blocked at that moment is woken with UNBLOCKED."""
    return isinstance(exc, ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED"))


async def ensure_group(client: aioredis.Redis, stream: str, group: str, start_id: str) -> bool:
    """Create ``group`` on ``stream`` (and the stream) unless it exists; True if it was created."""
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise
    log.info("consumer group created", extra={"stream": stream, "group": group, "start_id": start_id})
    return True
