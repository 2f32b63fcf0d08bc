"""Retry policy: exponential backoff with full jitter, as a pure function."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mailpipe import defaults


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = defaults.DEFAULT_RETRY_BASE_S
    factor: float = defaults.DEFAULT_RETRY_FACTOR
    cap_s: float = defaults.DEFAULT_RETRY_CAP_S
    max_attempts: int = defaults.DEFAULT_MAX_ATTEMPTS

    def exhausted(self, attempt: int) -> bool:
        """True when the attempt that just failed was the last one allowed."""
        return attempt >= self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return backoff_delay(attempt, self.base_s, self.factor, self.cap_s, rng)


def backoff_delay(attempt: int, base_s: float, factor: float, cap_s: float,
                  rng: random.Random | None = None) -> float:
    """Delay before retrying after failed attempt ``attempt`` (1-based): random(0, min(cap, base*factor**n)).

    Full jitter spreads a fleet's retries so a recovering downstream is not hit by a synchronized wave.
    The exponent is clamped so huge attempt numbers cannot overflow.
    """
    if attempt < 1:
        raise ValueError("attempt must be >= 1")
    ceiling = min(cap_s, base_s * factor ** min(attempt - 1, 64))
    return (rng or random).uniform(0.0, ceiling)
