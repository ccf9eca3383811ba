"""What the schedule tests share: wall time tied to a fast-forwarded event loop, an in-memory queue that
records when each job was asked for, and timetable helpers."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.ports.job_creator import Job, JobCreationError
from portico.sources.schedule.timetable import parse_timetable

MONDAY_0859 = datetime(2026, 3, 2, 8, 59, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class LoopClock:
    """Wall time that moves with the (fast-forwarded) event loop; `jump` steps it like NTP would."""

    def __init__(self, start: datetime) -> None:
        self._loop = asyncio.get_running_loop()
        self._origin = self._loop.time()
        self.start = start

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=self._loop.time() - self._origin)

    def jump(self, delta: timedelta) -> None:
        self.start += delta

    async def until(self, moment: datetime) -> None:
        """Let the loop run until the wall clock shows `moment`."""
        await asyncio.sleep((moment - self()).total_seconds())


class RecordingJobCreator(InMemoryJobCreator):
    """The in-memory queue, recording the wall time and idempotency key of every call; fails the first
    `failures` calls (all of them with None) with a `JobCreationError(retryable=...)`."""

    def __init__(self, clock: LoopClock, *, failures: int | None = 0, retryable: bool = True) -> None:
        super().__init__()
        self.clock = clock
        self.failures = failures
        self.retryable = retryable
        self.calls: list[tuple[datetime, str | None]] = []

    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        metadata, idempotency_key = self.with_context(metadata, idempotency_key)
        self.calls.append((self.clock(), idempotency_key))
        if self.failures is None or len(self.calls) <= self.failures:
            raise JobCreationError("queue service unavailable (503)", retryable=self.retryable, status=503)
        return await super().create_job(job_type, payload, queue_name, priority, metadata, idempotency_key)

    def scheduled_times(self) -> list[str]:
        return sorted(job.metadata["scheduled_time"] for job in self.jobs.values())

    def keys_called(self) -> list[str | None]:
        return [key for _, key in self.calls]


def fires(
    expression: str, after: datetime, count: int, time_zone: str = "UTC", **kwargs: object
) -> list[datetime]:
    """The next `count` fire times of a schedule after `after`."""
    timetable = parse_timetable(expression, time_zone, **kwargs)  # type: ignore[arg-type]
    out = []
    moment = after
    for _ in range(count):
        moment = timetable.next_after(moment)
        out.append(moment)
    return out
