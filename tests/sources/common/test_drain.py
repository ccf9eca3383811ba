import asyncio

import pytest

from portico.sources.common.drain import InFlight


@pytest.mark.looptime
async def test_drain_lets_tasks_finish_within_the_grace_period() -> None:
    in_flight = InFlight()
    finished: list[int] = []

    async def work(seconds: int) -> None:
        await asyncio.sleep(seconds)
        finished.append(seconds)

    in_flight.start(work(1))
    in_flight.start(work(3))
    assert len(in_flight) == 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await in_flight.drain(10) == 0
    assert sorted(finished) == [1, 3]
    assert loop.time() - started == pytest.approx(3)
    assert len(in_flight) == 0


@pytest.mark.looptime
async def test_drain_cancels_what_outlives_the_grace_period() -> None:
    in_flight = InFlight()
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        raise RuntimeError("reported by the task itself")

    in_flight.start(stuck())
    failed = in_flight.start(failing())
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await in_flight.drain(2) == 1
    assert cancelled.is_set()
    assert loop.time() - started == pytest.approx(2)
    assert isinstance(failed.exception(), RuntimeError)


async def test_drain_skips_the_task_that_calls_it() -> None:
    in_flight = InFlight()

    async def handler() -> int:
        current = asyncio.current_task()
        assert current is not None
        in_flight.add(current)
        return await in_flight.drain(1)

    assert await handler() == 0
