"""The process-wide scheduler: one heap, one sleeper, no polling."""

import asyncio
import random
from datetime import timedelta

import pytest

from portico.sources.schedule.scheduler import Scheduler
from tests.sources.schedule.conftest import MONDAY_0859, LoopClock


class CountingClock(LoopClock):
    def __init__(self) -> None:
        super().__init__(MONDAY_0859)
        self.reads = 0

    def __call__(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().__call__()


@pytest.mark.looptime
async def test_callbacks_run_in_time_order_at_their_time() -> None:
    clock = LoopClock(MONDAY_0859)
    scheduler = Scheduler(clock=clock, recheck_interval=10**9)
    rng = random.Random(7)
    offsets = [rng.randrange(0, 3600 * 1000) / 1000 for _ in range(2000)]
    fired: list[tuple[float, float]] = []
    for offset in offsets:
        when = MONDAY_0859 + timedelta(seconds=offset)
        scheduler.call_at(when, lambda o=offset: fired.append((o, (clock() - MONDAY_0859).total_seconds())))
    assert len(scheduler) == 2000
    await asyncio.sleep(3601)
    assert [o for o, _ in fired] == sorted(offsets)
    assert all(0 <= at - o < 0.001 for o, at in fired)
    assert len(scheduler) == 0
    await scheduler.close()


@pytest.mark.looptime
async def test_cancelled_calls_do_not_run_and_the_heap_is_compacted() -> None:
    clock = LoopClock(MONDAY_0859)
    scheduler = Scheduler(clock=clock, recheck_interval=10**9)
    fired: list[int] = []
    calls = [
        scheduler.call_at(MONDAY_0859 + timedelta(seconds=i + 1), lambda i=i: fired.append(i))
        for i in range(6000)
    ]
    for call in calls[:5000]:
        call.cancel()
        call.cancel()
    assert len(scheduler) == 1000
    assert len(scheduler._heap) < 4000  # lazily deleted entries are compacted away
    await asyncio.sleep(6001)
    assert fired == list(range(5000, 6000))
    await scheduler.close()


@pytest.mark.looptime
async def test_an_earlier_entry_wakes_the_sleeper() -> None:
    clock = LoopClock(MONDAY_0859)
    scheduler = Scheduler(clock=clock, recheck_interval=10**9)
    fired: list[str] = []
    scheduler.call_at(MONDAY_0859 + timedelta(hours=5), lambda: fired.append("late"))
    await asyncio.sleep(10)
    scheduler.call_at(
        MONDAY_0859 + timedelta(seconds=20), lambda: fired.append(f"early at {clock():%H:%M:%S}")
    )
    await asyncio.sleep(15)
    assert fired == ["early at 08:59:20"]
    await scheduler.close()


@pytest.mark.looptime
async def test_idle_means_no_wake_ups_beyond_the_recheck_interval() -> None:
    clock = CountingClock()
    scheduler = Scheduler(clock=clock, recheck_interval=60)
    scheduler.call_at(MONDAY_0859 + timedelta(days=1), lambda: None)
    await asyncio.sleep(3600)
    assert 55 <= clock.reads <= 65  # one wall-clock read per recheck, nothing else
    await scheduler.close()


@pytest.mark.looptime
async def test_the_sleeper_ends_when_nothing_is_scheduled() -> None:
    clock = LoopClock(MONDAY_0859)
    scheduler = Scheduler(clock=clock)
    call = scheduler.call_at(MONDAY_0859 + timedelta(days=1), lambda: None)
    await asyncio.sleep(0)
    assert scheduler._sleeper is not None and not scheduler._sleeper.done()
    call.cancel()
    await asyncio.sleep(0.001)
    assert scheduler._sleeper.done()
    fired: list[int] = []
    scheduler.call_at(MONDAY_0859 + timedelta(seconds=5), lambda: fired.append(1))
    await asyncio.sleep(10)
    assert fired == [1]
    await scheduler.close()


@pytest.mark.looptime
async def test_a_failing_callback_does_not_stop_the_others() -> None:
    clock = LoopClock(MONDAY_0859)
    scheduler = Scheduler(clock=clock)
    fired: list[int] = []
    scheduler.call_at(MONDAY_0859 + timedelta(seconds=1), lambda: 1 / 0)
    scheduler.call_at(MONDAY_0859 + timedelta(seconds=2), lambda: fired.append(2))
    await asyncio.sleep(3)
    assert fired == [2]
    await scheduler.close()


@pytest.mark.looptime
async def test_many_due_at_once_run_in_batches_without_starving_the_loop() -> None:
    clock = LoopClock(MONDAY_0859)
    scheduler = Scheduler(clock=clock, batch_size=100)
    fired: list[int] = []
    interleaved: list[int] = []
    first = asyncio.Event()

    def callback(i: int) -> None:
        fired.append(i)
        first.set()

    async def other_task() -> None:
        await first.wait()
        while len(fired) < 1000:
            interleaved.append(len(fired))
            await asyncio.sleep(0)

    for i in range(1000):
        scheduler.call_at(MONDAY_0859 + timedelta(seconds=1), lambda i=i: callback(i))
    task = asyncio.create_task(other_task())
    await asyncio.sleep(2)
    await task
    assert fired == list(range(1000))
    assert len({n for n in interleaved if 0 < n < 1000}) >= 5
    await scheduler.close()


async def test_closed_scheduler_refuses_new_calls() -> None:
    scheduler = Scheduler()
    await scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.call_at(MONDAY_0859, lambda: None)


async def test_each_event_loop_has_one_default_scheduler() -> None:
    assert Scheduler.for_running_loop() is Scheduler.for_running_loop()
