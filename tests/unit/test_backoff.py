from __future__ import annotations

import random

import pytest

from mailpipe.retries import RetryPolicy, backoff_delay


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)]:
        delays = [backoff_delay(attempt, 1.0, 2.0, 300.0, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # jitter really spans the range
        assert min(delays) < ceiling * 0.1


def test_cap_bounds_the_delay_and_huge_attempts_do_not_overflow() -> None:
    rng = random.Random(2)
    assert all(backoff_delay(10_000, 1.0, 2.0, 30.0, rng) <= 30.0 for _ in range(100))


def test_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, 1.0, 2.0, 5.0)


def test_policy_exhaustion() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert not policy.exhausted(2)
    assert policy.exhausted(3)
