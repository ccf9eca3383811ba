import asyncio

import pytest

from portico.sources.common.backoff import SharedBackoff


@pytest.mark.looptime
async def test_failures_within_one_window_share_it_and_the_next_window_doubles() -> None:
    backoff = SharedBackoff(1.0, 10.0)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(backoff.wait(stopping) for _ in range(100)))
    assert loop.time() - started == pytest.approx(1.0)
    assert backoff.failures == 1
    await backoff.wait(stopping)
    assert loop.time() - started == pytest.approx(3.0)
    for _ in range(5):
        await backoff.wait(stopping)
    assert backoff.failed() == pytest.approx(10.0)  # capped at the maximum


@pytest.mark.looptime
async def test_success_resets_and_stopping_interrupts_the_wait() -> None:
    backoff = SharedBackoff(4.0, 60.0)
    stopping = asyncio.Event()
    backoff.failed()
    backoff.failed()
    backoff.succeeded()
    assert backoff.failures == 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    loop.call_later(1.0, stopping.set)
    assert await backoff.wait(stopping) is True
    assert loop.time() - started == pytest.approx(1.0)


def test_a_backoff_needs_a_sane_window() -> None:
    with pytest.raises(ValueError, match="backoff"):
        SharedBackoff(5.0, 1.0)
