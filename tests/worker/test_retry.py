"""The retry backoff: exponential, capped, with half of each pause fixed and half random."""

import random

import pytest

from portico.worker.retry import RetryBackoff


def test_pauses_double_stay_within_half_and_all_of_the_ceiling_and_are_capped() -> None:
    backoff = RetryBackoff(base=2.0, maximum=30.0, rng=random.Random(7))
    assert [backoff.ceiling(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    for attempt in range(1, 200):
        ceiling = backoff.ceiling(attempt)
        assert ceiling / 2 <= backoff.delay(attempt) <= ceiling
    assert backoff.ceiling(10_000) == 30.0 and backoff.ceiling(0) == 2.0


def test_pauses_are_spread() -> None:
    backoff = RetryBackoff(base=10.0, rng=random.Random(1))
    assert len({round(backoff.delay(3), 6) for _ in range(50)}) == 50


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryBackoff(base=5, maximum=1)
    with pytest.raises(ValueError):
        RetryBackoff(base=-1)
