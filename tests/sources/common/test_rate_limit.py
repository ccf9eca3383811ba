"""The token bucket on a fast-forwarded clock."""

import asyncio

import pytest

from portico.sources.common.rate_limit import TokenBucket


@pytest.mark.looptime
async def test_a_burst_then_the_sustained_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.5)
    await asyncio.sleep(0.5)
    assert bucket.try_take() == 0.0
    await asyncio.sleep(100)
    assert [bucket.try_take() == 0.0 for _ in range(4)] == [True, True, True, False]


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)
