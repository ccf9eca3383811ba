"""The seed's "Multiple Triggers with Application Lifecycle" example, run as written (imports adapted,
`/uploads` a temporary directory): a webhook, a schedule and a file trigger start with a FastAPI
application and stop with it, and each creates jobs while the application runs."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.kits.job.job_service import JobService
from portico.ports.job_trigger import JobTrigger
from portico.sources.file import FileTrigger
from portico.sources.schedule import ScheduleConfig, ScheduleTrigger
from portico.sources.webhook import WebhookTrigger
from tests.sources.conftest import eventually

logger = structlog.get_logger()


async def test_multiple_triggers_start_and_stop_with_the_application(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    job_queue = InMemoryJobQueue()
    job_service = JobService(job_queue=job_queue)
    schedules = [
        ScheduleConfig(
            cron="0 9 * * *",
            job_type="report.daily",
            payload={"report_type": "daily_summary"},
            queue_name="reports",
            priority=5,
        ),
    ]

    # Create multiple triggers
    webhook_trigger = WebhookTrigger(job_creator=job_service)
    schedule_trigger = ScheduleTrigger(job_creator=job_service, schedules=schedules)
    file_trigger = FileTrigger(job_creator=job_service, watch_path=Path(uploads))
    running_during_app: list[bool] = []

    # Manage trigger lifecycle with application
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Application lifespan manager."""
        # Startup: Start all triggers
        triggers: list[JobTrigger] = [webhook_trigger, schedule_trigger, file_trigger]

        for trigger in triggers:
            await trigger.start()
            logger.info("trigger_started", trigger_type=type(trigger).__name__, is_running=trigger.is_running)

        yield  # Application runs

        # Shutdown: Stop all triggers
        for trigger in triggers:
            running_during_app.append(trigger.is_running)
            await trigger.stop()
            logger.info("trigger_stopped", trigger_type=type(trigger).__name__, is_running=trigger.is_running)

    app = FastAPI(lifespan=lifespan)
    app.include_router(webhook_trigger.router)

    # All triggers start with app and stop gracefully on shutdown
    async with app.router.lifespan_context(app):
        assert webhook_trigger.is_running and schedule_trigger.is_running and file_trigger.is_running
        assert schedule_trigger.get_health().source_status["nextScheduleTime"] is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.post(
                "/webhooks/jobs",
                json={"job_type": "email.send", "payload": {"recipient": "user@example.com"}},
            )
        assert answer.status_code == 202, answer.text
        (uploads / "invoice.pdf").write_bytes(b"%PDF-1.7")
        await eventually(lambda: len(job_queue.jobs) == 2)

    assert running_during_app == [True, True, True]
    assert not (webhook_trigger.is_running or schedule_trigger.is_running or file_trigger.is_running)
    assert sorted(job.job_type for job in job_queue.jobs.values()) == ["email.send", "file.process"]


@pytest.mark.parametrize("trigger_type", [WebhookTrigger, ScheduleTrigger, FileTrigger])
def test_the_triggers_are_job_triggers(trigger_type: type[JobTrigger]) -> None:
    assert issubclass(trigger_type, JobTrigger)
