"""The seed's schedule examples, run as written with only their imports adapted: "2. Scheduled Trigger for
Cron Jobs", the schedules of the FAQ on priorities, and the FAQ classes on duplicate scheduled jobs and
on trigger failures (where the seed shows a class with one method, a subclass adds the lifecycle of the
best-practice examples, which the method does not use). The seed's structured logger is structlog's.

Time is fast-forwarded (looptime): the default scheduler a library `ScheduleTrigger` uses reads a wall
clock tied to the loop, so a test lets a night pass in milliseconds. Then the seed's best practices for a
schedule trigger (graceful shutdown, idempotent start) are checked on the real `ScheduleTrigger`."""

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock
from uuid import NAMESPACE_DNS, uuid5

import pytest
import structlog

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.kits.job.job_service import JobService
from portico.ports.job_creator import Job, JobCreationError, JobCreator, JobStatus
from portico.ports.job_trigger import JobTrigger
from portico.sources.schedule import ScheduleConfig, Scheduler, ScheduleTrigger
from tests.ports.test_seed_examples import _Lifecycle
from tests.sources.schedule.conftest import LoopClock, utc

logger = structlog.get_logger()

SUNDAY_0159 = utc(2026, 3, 8, 1, 59)


@pytest.fixture(autouse=True)
def _structlog_to_capture(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(), cache_logger_on_first_use=False)
    caplog.set_level(logging.DEBUG)
    yield
    structlog.reset_defaults()


@pytest.fixture
def job_service() -> JobService:
    return JobService(job_queue=InMemoryJobQueue())


def loop_clock(monkeypatch: pytest.MonkeyPatch, start: datetime) -> LoopClock:
    """Wall time that starts at `start` and moves with the fast-forwarded loop, read by the scheduler that
    a `ScheduleTrigger` built without one uses."""
    clock = LoopClock(start)
    scheduler = Scheduler(clock=clock, recheck_interval=10.0**9)
    monkeypatch.setattr(Scheduler, "for_running_loop", classmethod(lambda cls: scheduler))
    return clock


def jobs_in(job_service: JobService) -> list[Job]:
    queue = job_service.job_queue
    assert isinstance(queue, InMemoryJobQueue)
    return list(queue.jobs.values())


def scheduled_jobs_in(job_service: JobService) -> list[Job]:
    """The jobs in the order of their scheduled time (then job type)."""
    return sorted(jobs_in(job_service), key=lambda job: (job.metadata["scheduled_time"], job.job_type))


# --- 2. Scheduled Trigger for Cron Jobs ----------------------------------------------------------------


@pytest.mark.looptime
async def test_scheduled_trigger_for_cron_jobs(
    job_service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = loop_clock(monkeypatch, SUNDAY_0159)

    # Define schedule configurations
    schedules = [
        # Daily report at 9 AM
        ScheduleConfig(
            cron="0 9 * * *",
            job_type="report.daily",
            payload={"report_type": "daily_summary"},
            queue_name="reports",
            priority=5,
        ),
        # Cleanup every hour
        ScheduleConfig(
            cron="0 * * * *",
            job_type="cleanup.temp_files",
            payload={"max_age_hours": 24},
            queue_name="maintenance",
            priority=1,
        ),
        # Weekly backup on Sundays at 2 AM
        ScheduleConfig(
            cron="0 2 * * 0",
            job_type="backup.full",
            payload={"backup_type": "weekly"},
            queue_name="backups",
            priority=10,
        ),
    ]

    # Create schedule trigger
    schedule_trigger = ScheduleTrigger(job_creator=job_service, schedules=schedules)

    # Start scheduler
    await schedule_trigger.start()

    # Jobs will now be created automatically on schedule
    await clock.until(utc(2026, 3, 8, 9, 0, 1))
    await schedule_trigger.stop()

    created = [
        (job.metadata["scheduled_time"], job.job_type, job.queue_name, job.priority)
        for job in scheduled_jobs_in(job_service)
    ]
    assert created[:3] == [
        ("2026-03-08T02:00:00Z", "backup.full", "backups", 10),
        ("2026-03-08T02:00:00Z", "cleanup.temp_files", "maintenance", 1),
        ("2026-03-08T03:00:00Z", "cleanup.temp_files", "maintenance", 1),
    ]
    assert created[-1] == ("2026-03-08T09:00:00Z", "report.daily", "reports", 5)
    assert [job_type for _, job_type, _, _ in created].count("cleanup.temp_files") == 8
    assert len(created) == 10
    [report] = [job for job in scheduled_jobs_in(job_service) if job.job_type == "report.daily"]
    assert report.payload == {"report_type": "daily_summary"}
    health = schedule_trigger.get_health()
    assert (health.jobs_created_count, health.errors_count, health.is_running) == (10, 0, False)


# --- FAQ: Can triggers create jobs with different priorities? --------------------------------------------


@pytest.mark.looptime
async def test_schedules_with_configured_priorities(
    job_service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = loop_clock(monkeypatch, utc(2026, 3, 2, 8, 59))

    # Schedule trigger with configured priorities
    schedules = [
        ScheduleConfig(
            cron="*/5 * * * *",
            job_type="health.check",
            payload={},
            priority=1,  # Low priority
        ),
        ScheduleConfig(
            cron="0 9 * * *",
            job_type="report.daily",
            payload={},
            priority=10,  # High priority
        ),
    ]

    trigger = ScheduleTrigger(job_creator=job_service, schedules=schedules)
    await trigger.start()
    await clock.until(utc(2026, 3, 2, 9, 0, 1))
    await trigger.stop()
    assert {(job.job_type, job.priority) for job in scheduled_jobs_in(job_service)} == {
        ("health.check", 1),
        ("report.daily", 10),
    }
    # Both came due at 09:00 in the same queue: a worker gets the high-priority one first.
    [first] = await job_service.job_queue.claim("default", worker="w", lease_seconds=30)
    assert first.job_type == "report.daily"


# --- FAQ: How do I prevent duplicate scheduled jobs? ------------------------------------------------------


def duplicate_checking_trigger() -> type[JobTrigger]:
    """The FAQ's class as written, runnable: its name is the real trigger's, so it is made in here."""

    class ScheduleTrigger(JobTrigger):
        async def _create_scheduled_job(self, config: ScheduleConfig):
            # Option 1: Use deterministic job ID
            job_id = uuid5(NAMESPACE_DNS, f"{config.job_type}:{config.cron}")

            # Check if job already exists
            existing = await self.job_creator.get_job(job_id)
            if existing and existing.status in [JobStatus.PENDING, JobStatus.SCHEDULED]:
                logger.debug("scheduled_job_already_exists", job_id=str(job_id))
                return

            # Create job with deterministic ID
            await self.job_creator.create_job(
                job_type=config.job_type,
                payload={**config.payload, "scheduled_run": datetime.now().isoformat()},
                metadata={"idempotency_key": str(job_id)},
            )

    class DuplicateChecking(_Lifecycle, ScheduleTrigger):
        pass

    return DuplicateChecking


async def test_duplicate_check_creates_the_job_with_a_deterministic_key(job_service: JobService) -> None:
    config = ScheduleConfig(cron="*/5 * * * *", job_type="health.check", payload={"deep": True}, priority=1)
    await duplicate_checking_trigger()(job_service)._create_scheduled_job(config)  # type: ignore[call-arg,attr-defined]
    [job] = jobs_in(job_service)
    assert job.job_type == "health.check"
    assert job.payload["deep"] is True and "scheduled_run" in job.payload
    assert job.metadata["idempotency_key"] == str(uuid5(NAMESPACE_DNS, "health.check:*/5 * * * *"))


async def test_duplicate_check_skips_while_the_job_is_pending(caplog: pytest.LogCaptureFixture) -> None:
    job_creator = AsyncMock(spec=JobCreator)
    job_creator.get_job.return_value = Job(id="j-1", job_type="health.check", status=JobStatus.SCHEDULED)
    config = ScheduleConfig(cron="*/5 * * * *", job_type="health.check", payload={})
    await duplicate_checking_trigger()(job_creator)._create_scheduled_job(config)  # type: ignore[call-arg,attr-defined]
    job_creator.get_job.assert_called_once_with(uuid5(NAMESPACE_DNS, "health.check:*/5 * * * *"))
    job_creator.create_job.assert_not_called()
    assert "scheduled_job_already_exists" in caplog.text


# --- FAQ: How do I handle trigger failures? ---------------------------------------------------------------


class ResilientScheduleTrigger(JobTrigger):
    async def _create_scheduled_job(self, config: ScheduleConfig):
        max_retries = 3

        for attempt in range(max_retries):
            try:
                job = await self.job_creator.create_job(job_type=config.job_type, payload=config.payload)

                logger.info("scheduled_job_created", job_id=str(job.id), attempt=attempt + 1)

                return

            except Exception as e:
                logger.warning(
                    "scheduled_job_creation_failed",
                    job_type=config.job_type,
                    attempt=attempt + 1,
                    error=str(e),
                )

                if attempt < max_retries - 1:
                    await asyncio.sleep(2**attempt)  # Exponential backoff
                else:
                    # All retries exhausted, send alert
                    logger.error(
                        "scheduled_job_creation_failed_permanently",
                        job_type=config.job_type,
                        error=str(e),
                        exc_info=True,
                    )

                    await self.alert_service.send_alert(
                        level="error",
                        message=f"Failed to create scheduled job: {config.job_type}",
                        context={"error": str(e)},
                    )


class Resilient(_Lifecycle, ResilientScheduleTrigger):
    pass


class RecordingAlerts:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    async def send_alert(self, **alert: Any) -> None:
        self.alerts.append(alert)


def flaky(job_service: JobService, failures: int) -> AsyncMock:
    """A creator over `job_service` whose first `failures` calls fail like an unavailable queue service."""
    creator = AsyncMock(spec=JobCreator)
    remaining = [failures]

    async def create_job(**kwargs: Any) -> Job:
        if remaining[0] > 0:
            remaining[0] -= 1
            raise JobCreationError("queue service unavailable (503)", retryable=True)
        return await job_service.create_job(**kwargs)

    creator.create_job.side_effect = create_job
    return creator


@pytest.mark.looptime
async def test_resilient_trigger_retries_with_backoff(
    job_service: JobService, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = RecordingAlerts()
    trigger = Resilient(flaky(job_service, failures=2))
    trigger.alert_service = alerts
    loop = asyncio.get_running_loop()
    started = loop.time()
    await trigger._create_scheduled_job(ScheduleConfig(cron="0 9 * * *", job_type="report.daily"))
    assert loop.time() - started == pytest.approx(1 + 2)
    [job] = jobs_in(job_service)
    assert job.job_type == "report.daily"
    assert alerts.alerts == []
    assert caplog.text.count("scheduled_job_creation_failed") == 2
    assert "scheduled_job_created" in caplog.text


@pytest.mark.looptime
async def test_resilient_trigger_alerts_when_retries_are_exhausted(
    job_service: JobService, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = RecordingAlerts()
    trigger = Resilient(flaky(job_service, failures=3))
    trigger.alert_service = alerts
    await trigger._create_scheduled_job(ScheduleConfig(cron="0 9 * * *", job_type="report.daily"))
    assert jobs_in(job_service) == []
    assert alerts.alerts == [
        {
            "level": "error",
            "message": "Failed to create scheduled job: report.daily",
            "context": {"error": "queue service unavailable (503)"},
        }
    ]
    assert "scheduled_job_creation_failed_permanently" in caplog.text


# --- Best practices 2 and 3, on the real ScheduleTrigger --------------------------------------------------


class SlowJobService(JobService):
    """Takes `delay` seconds to accept a job, like a queue service under load."""

    def __init__(self, delay: float) -> None:
        super().__init__(job_queue=InMemoryJobQueue())
        self.delay = delay

    async def create_job(self, *args: Any, **kwargs: Any) -> Job:
        await asyncio.sleep(self.delay)
        return await super().create_job(*args, **kwargs)


@pytest.mark.looptime
async def test_stop_waits_for_the_job_creation_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "Implement Graceful Shutdown": stop() lets the run being created finish (within a grace period)."""
    clock = loop_clock(monkeypatch, utc(2026, 3, 2, 8, 59, 59))
    job_service = SlowJobService(delay=2.0)
    schedule_trigger = ScheduleTrigger(
        job_creator=job_service, schedules=[ScheduleConfig(cron="0 9 * * *", job_type="report.daily")]
    )
    await schedule_trigger.start()
    await clock.until(utc(2026, 3, 2, 9, 0, 0, 500_000))  # the 09:00 run is being created
    assert jobs_in(job_service) == []
    await schedule_trigger.stop()
    assert clock() == utc(2026, 3, 2, 9, 0, 2)
    [job] = jobs_in(job_service)
    assert job.job_type == "report.daily"
    assert schedule_trigger.get_health().source_status["lastScheduleTime"] == "2026-03-02T09:00:00Z"
    assert not schedule_trigger.is_running


@pytest.mark.looptime
async def test_a_second_start_does_not_start_a_second_schedule(
    job_service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Prevent Duplicate Starts": start() on a running trigger changes nothing, so no run fires twice."""
    clock = loop_clock(monkeypatch, utc(2026, 3, 2, 8, 59))
    schedule_trigger = ScheduleTrigger(
        job_creator=job_service, schedules=[ScheduleConfig(cron="*/10 * * * *", job_type="report.daily")]
    )
    await schedule_trigger.start()
    await schedule_trigger.start()
    assert len(schedule_trigger.scheduler) == 1
    await clock.until(utc(2026, 3, 2, 9, 30, 1))
    await schedule_trigger.stop()
    assert [job.metadata["scheduled_time"] for job in scheduled_jobs_in(job_service)] == [
        "2026-03-02T09:00:00Z",
        "2026-03-02T09:10:00Z",
        "2026-03-02T09:20:00Z",
        "2026-03-02T09:30:00Z",
    ]
    assert timedelta(0) <= clock() - utc(2026, 3, 2, 9, 30, 1) < timedelta(seconds=1)
