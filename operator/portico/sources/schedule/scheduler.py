"""The one process-wide `Scheduler` that wakes up when any schedule of the operator is due: a heap of
wake-up times and a single sleeper task, instead of a task (and a timer) per schedule."""

import asyncio
import heapq
import itertools
import logging
import weakref
from collections.abc import Callable
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
"""The wall clock: returns the current time as an aware UTC datetime. Injectable so that tests can tie
wall time to a fast-forwarded event loop."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


class ScheduledCall:
    """A pending wake-up in the scheduler. `cancel()` is O(1): the entry stays in the heap, ignored,
    until it reaches the top or the heap is compacted."""

    __slots__ = ("callback", "cancelled", "scheduler", "when")

    def __init__(self, scheduler: "Scheduler", when: float, callback: Callable[[], object]) -> None:
        self.scheduler = scheduler
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.scheduler._forget(self)


_default_schedulers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Scheduler]" = (
    weakref.WeakKeyDictionary()
)


class Scheduler:
    """One heap of wake-up times and one sleeper task for every schedule of the process.

    The sleeper computes how long to sleep from the wall clock (cron times are wall times) but sleeps on
    the event loop's monotonic timer, and re-reads the wall clock when it wakes: a clock stepped back
    makes it sleep again, a clock stepped forward (or a host that was suspended, which the monotonic
    clock does not count) is noticed within `recheck_interval`. With nothing due it sleeps until the
    earliest entry; with no entries at all the sleeper task ends, so an idle process spends no CPU.

    Callbacks run on the sleeper and must not block: they only compute the next time and start a task.
    `fire_slots` bounds how many job creations run at once across all schedules.
    """

    def __init__(
        self,
        *,
        clock: Clock = wall_clock,
        recheck_interval: float = 30.0,
        max_concurrent_fires: int = 256,
        batch_size: int = 512,
    ) -> None:
        self.clock = clock
        self.recheck_interval = recheck_interval
        self.max_concurrent_fires = max_concurrent_fires
        self.batch_size = batch_size
        self._heap: list[tuple[float, int, ScheduledCall]] = []
        self._sequence = itertools.count()
        self._live = 0
        self._cancelled = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleeper: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._wake_at: float | None = None
        self._fire_slots: asyncio.Semaphore | None = None
        self.closed = False

    @classmethod
    def for_running_loop(cls) -> "Scheduler":
        """The default scheduler of the running event loop, for triggers used without a source."""
        loop = asyncio.get_running_loop()
        scheduler = _default_schedulers.get(loop)
        if scheduler is None or scheduler.closed:
            scheduler = _default_schedulers[loop] = cls()
        return scheduler

    def __len__(self) -> int:
        """Live (not cancelled) entries."""
        return self._live

    @property
    def fire_slots(self) -> asyncio.Semaphore:
        if self._fire_slots is None:
            self._fire_slots = asyncio.Semaphore(self.max_concurrent_fires)
        return self._fire_slots

    def now(self) -> datetime:
        return self.clock()

    def call_at(self, when: datetime, callback: Callable[[], object]) -> ScheduledCall:
        """Run `callback` on the event loop once the wall clock reaches `when`. O(log n)."""
        if self.closed:
            raise RuntimeError("the scheduler is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None or self._sleeper is None or self._sleeper.done():
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("the scheduler is bound to another event loop")
        call = ScheduledCall(self, when.timestamp(), callback)
        heapq.heappush(self._heap, (call.when, next(self._sequence), call))
        self._live += 1
        if self._sleeper is None or self._sleeper.done():
            self._sleeper = loop.create_task(self._run(), name="portico schedule sleeper")
        elif self._wake_at is not None and call.when < self._wake_at:
            self._wake()
        return call

    async def close(self) -> None:
        self.closed = True
        sleeper, self._sleeper = self._sleeper, None
        self._heap.clear()
        self._live = self._cancelled = 0
        if sleeper is not None and not sleeper.done():
            sleeper.cancel()
            try:
                await sleeper
            except asyncio.CancelledError:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise

    def _forget(self, call: ScheduledCall) -> None:
        self._live -= 1
        self._cancelled += 1
        if self._live == 0:
            self._heap.clear()
            self._cancelled = 0
            self._wake()
        elif self._cancelled > 1024 and self._cancelled > self._live:
            self._heap[:] = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
                self._cancelled -= 1
            if not heap:
                return
            now = self.clock().timestamp()
            when = heap[0][0]
            if when > now:
                await self._sleep(loop, min(when - now, self.recheck_interval), when)
                continue
            for _ in range(self.batch_size):
                if not heap or heap[0][0] > now:
                    break
                _, _, call = heapq.heappop(heap)
                if call.cancelled:
                    self._cancelled -= 1
                    continue
                call.cancelled = True
                self._live -= 1
                try:
                    call.callback()
                except Exception:
                    logger.exception("schedule callback failed")
            else:
                await asyncio.sleep(0)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, delay: float, until: float) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._wakeup, self._wake_at = waiter, until
        handle = loop.call_at(loop.time() + delay, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._wakeup = self._wake_at = None


def _resolve(waiter: "asyncio.Future[None]") -> None:
    """End a sleep unless a wake-up (an earlier entry) ended it first."""
    if not waiter.done():
        waiter.set_result(None)
