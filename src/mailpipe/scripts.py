"""The Lua scripts (``lua/*.lua``), registered on a client.

Every multi-key state change of mailpipe is one of these scripts, so it is atomic. redis-py's
``register_script`` runs them with EVALSHA and reloads them after NOSCRIPT (e.g. a Redis restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

SCRIPT_NAMES = (
    "claim", "settle", "heartbeat", "recover", "move_due_retries", "breaker", "trim",
    "prune_consumers", "replay_dead",
)


@cache
def source(name: str) -> str:
    return resources.files("mailpipe").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Scripts:
    claim: Any
    settle: Any
    heartbeat: Any
    recover: Any
    move_due_retries: Any
    breaker: Any
    trim: Any
    prune_consumers: Any
    replay_dead: Any


def register(client: Any) -> Scripts:
    """Register every script on ``client`` (sync or asyncio redis-py client)."""
    return Scripts(**{name: client.register_script(source(name)) for name in SCRIPT_NAMES})
