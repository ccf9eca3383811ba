"""The seed's `JobService` examples, run with only their imports adapted (and the webhook served on
its own port instead of a FastAPI router), against the real queue service through `HttpJobQueue`."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from unittest.mock import AsyncMock
from uuid import NAMESPACE_DNS, UUID, uuid4, uuid5

import aiohttp
import pytest

from portico.adapters.job_queue.http import HttpJobQueue
from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.kits.job import JobService as JobServiceFromKit
from portico.kits.job.job_service import JobService
from portico.ports.job_creator import Job, JobCreator, JobStatus
from portico.ports.job_trigger import JobTrigger
from portico.sources.schedule.trigger import ScheduleConfig, ScheduleTrigger
from portico.sources.webhook.trigger import WebhookConfig, WebhookTrigger
from tests.conftest import RunningQueueService


@pytest.fixture
async def job_queue_adapter(queue_service: RunningQueueService) -> AsyncIterator[HttpJobQueue]:
    async with HttpJobQueue(queue_service.url) as queue:
        yield queue


async def test_the_kit_exports_job_service() -> None:
    assert JobServiceFromKit is JobService
    assert issubclass(JobService, JobCreator)


async def test_seed_webhook_trigger_over_job_service(
    job_queue_adapter: HttpJobQueue, queue_service: RunningQueueService
) -> None:
    # Create job service (implements JobCreator)
    job_service = JobService(job_queue=job_queue_adapter)

    # Create webhook trigger
    webhook_config = WebhookConfig(
        prefix="/webhooks", allowed_job_types=["email.send", "report.generate", "data.import"], port=0
    )
    webhook_trigger = WebhookTrigger(job_creator=job_service, config=webhook_config)

    # Start trigger
    await webhook_trigger.start()
    try:
        # External systems can now create jobs via HTTP POST
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                webhook_trigger.url,
                json={
                    "job_type": "email.send",
                    "payload": {"recipient": "user@example.com"},
                    "queue_name": "emails",
                    "priority": 5,
                },
            ) as response,
        ):
            assert response.status == 202, await response.text()
            job_id = (await response.json())["job_id"]
    finally:
        await webhook_trigger.stop()
    [stored] = await queue_service.list_jobs(queue_name="emails")
    assert (stored.id, stored.job_type, stored.priority, stored.payload) == (
        job_id,
        "email.send",
        5,
        {"recipient": "user@example.com"},
    )
    assert (await job_service.get_job(job_id)) == stored


async def test_seed_schedule_trigger_over_job_service(job_queue_adapter: HttpJobQueue) -> None:
    job_service = JobService(job_queue=job_queue_adapter)
    schedules = [
        ScheduleConfig(
            cron="0 9 * * *",
            job_type="report.daily",
            payload={"report_type": "daily_summary"},
            queue_name="reports",
            priority=5,
        ),
        ScheduleConfig(
            cron="0 * * * *",
            job_type="cleanup.temp_files",
            payload={"max_age_hours": 24},
            queue_name="maintenance",
            priority=1,
        ),
    ]
    schedule_trigger = ScheduleTrigger(job_creator=job_service, schedules=schedules)
    await schedule_trigger.start()
    assert schedule_trigger.is_running
    await schedule_trigger.stop()
    assert not schedule_trigger.is_running


async def test_seed_faq_mock_job_creator_returns_a_job_with_a_uuid() -> None:
    mock_creator = AsyncMock(spec=JobCreator)
    mock_creator.create_job.return_value = Job(
        id=uuid4(), job_type="test.job", queue_name="default", payload={}
    )
    job = await mock_creator.create_job(job_type="test.job", payload={"data": "test"})
    assert UUID(job.id) and isinstance(job.created_at, datetime)
    mock_creator.create_job.assert_called_once_with(job_type="test.job", payload={"data": "test"})


class ScheduleDeduplicator:
    """The seed's "prevent duplicate scheduled jobs" FAQ, as written there (inside a trigger class)."""

    def __init__(self, job_creator: JobCreator) -> None:
        self.job_creator = job_creator

    async def _create_scheduled_job(self, config: ScheduleConfig) -> None:
        # Option 1: Use deterministic job ID
        job_id = uuid5(NAMESPACE_DNS, f"{config.job_type}:{config.cron}")

        # Check if job already exists
        existing = await self.job_creator.get_job(job_id)  # type: ignore[arg-type]
        if existing and existing.status in [JobStatus.PENDING, JobStatus.SCHEDULED]:
            return

        # Create job with deterministic ID
        await self.job_creator.create_job(
            job_type=config.job_type,
            payload={**config.payload, "scheduled_run": datetime.now().isoformat()},
            metadata={"idempotency_key": str(job_id)},
        )


async def test_seed_faq_duplicate_check_runs_on_job_service(
    job_queue_adapter: HttpJobQueue, queue_service: RunningQueueService
) -> None:
    job_service = JobService(job_queue=job_queue_adapter)
    config = ScheduleConfig(cron="*/5 * * * *", job_type="health.check", payload={}, priority=1)
    await ScheduleDeduplicator(job_service)._create_scheduled_job(config)
    [job] = await queue_service.list_jobs()
    assert job.job_type == "health.check"
    assert job.metadata["idempotency_key"] == str(uuid5(NAMESPACE_DNS, "health.check:*/5 * * * *"))


class DatabasePollingTrigger(JobTrigger):
    """The seed's custom trigger that depends on the JobCreator port (its database stands in as a list)."""

    def __init__(self, job_creator: JobCreator, database: Any, poll_interval_seconds: int = 60) -> None:
        self.job_creator = job_creator
        self.database = database
        self.poll_interval = poll_interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._task = asyncio.create_task(self._poll_loop())

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def is_running(self) -> bool:
        return self._running

    async def _poll_loop(self) -> None:
        while self._running:
            for item in [row for row in self.database if row["status"] == "pending"]:
                await self.job_creator.create_job(
                    job_type="item.process",
                    payload={"item_id": str(item["id"]), "data": item["data"]},
                    queue_name="processing",
                )
                item["status"] = "queued"
            await asyncio.sleep(self.poll_interval)


@pytest.mark.looptime
async def test_seed_custom_trigger_depends_on_the_port_and_runs_on_job_service() -> None:
    job_queue = InMemoryJobQueue(clock=lambda: asyncio.get_running_loop().time())
    job_service = JobService(job_queue=job_queue)
    database = [{"id": 1, "data": "a", "status": "pending"}, {"id": 2, "data": "b", "status": "done"}]
    trigger = DatabasePollingTrigger(job_creator=job_service, database=database, poll_interval_seconds=60)
    await trigger.start()
    await asyncio.sleep(1)
    database.append({"id": 3, "data": "c", "status": "pending"})
    await asyncio.sleep(60)
    await trigger.stop()
    assert [job.payload for job in job_queue.jobs.values()] == [
        {"item_id": "1", "data": "a"},
        {"item_id": "3", "data": "c"},
    ]
    assert all(job.queue_name == "processing" for job in job_queue.jobs.values())


async def test_job_service_keeps_idempotency_and_max_attempts(job_queue_adapter: HttpJobQueue) -> None:
    job_service = JobService(job_queue=job_queue_adapter, max_attempts=7)
    first = await job_service.create_job("a.b", {"x": 1}, idempotency_key="key-1")
    again = await job_service.create_job("a.b", {"x": 1}, idempotency_key="key-1")
    assert (first.existing, again.existing, again.id) == (False, True, first.id)
    assert first.max_attempts == 7
    assert await job_service.get_job(uuid4()) is None
