"""The seed's webhook examples, with only their imports adapted, run against real parts: the reference
queue service behind `JobService`, real HTTP through the FastAPI application (an ASGI client) and
through the trigger's own aiohttp server.

Where the seed's text leaves a placeholder, the test fills it in and says so: `job_queue_adapter` is
`HttpJobQueue` on the test's queue service, a request is a `WebhookJobRequest`, and the FAQ's trigger
fragments (which leave out `start`/`stop`/`is_running`) get them from `SeedLifecycle`, written as the
seed's best practices 2 and 3 write them. The seed's own trigger listens on 127.0.0.1:8080; the test
asks for a free port (`WebhookConfig(port=0)`), so tests can run side by side.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock
from uuid import uuid4

import aiohttp
import httpx
import pytest
from fastapi import FastAPI, HTTPException

from portico.adapters.job_queue.http import HttpJobQueue
from portico.kits.job.job_service import JobService
from portico.ports.job_creator import Job, JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger
from portico.sources.webhook import WebhookConfig, WebhookJobRequest, WebhookTrigger
from tests.conftest import RunningQueueService

logger = logging.getLogger(__name__)


@pytest.fixture
async def job_queue_adapter(queue_service: RunningQueueService) -> AsyncIterator[HttpJobQueue]:
    async with HttpJobQueue(queue_service.url) as queue:
        yield queue


@pytest.fixture
def job_service(job_queue_adapter: HttpJobQueue) -> JobService:
    return JobService(job_queue=job_queue_adapter)


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


async def test_1_webhook_trigger_for_api_integration(
    job_queue_adapter: HttpJobQueue, queue_service: RunningQueueService
) -> None:
    # Create job service (implements JobCreator)
    job_service = JobService(job_queue=job_queue_adapter)

    # Create webhook trigger
    webhook_config = WebhookConfig(
        prefix="/webhooks", allowed_job_types=["email.send", "report.generate", "data.import"]
    )

    webhook_trigger = WebhookTrigger(job_creator=job_service, config=webhook_config)

    # Integrate with FastAPI
    app = FastAPI()
    app.include_router(webhook_trigger.router)

    # Start trigger
    await webhook_trigger.start()

    # External systems can now create jobs via HTTP POST
    # POST /webhooks/jobs
    async with asgi_client(app) as http:
        response = await http.post(
            "/webhooks/jobs",
            json={
                "job_type": "email.send",
                "payload": {"recipient": "user@example.com"},
                "queue_name": "emails",
                "priority": 5,
            },
        )
        assert response.status_code == 202, response.text
        refused = await http.post("/webhooks/jobs", json={"job_type": "admin.wipe"})
        assert refused.status_code == 403
    await webhook_trigger.stop()
    [stored] = await queue_service.list_jobs(queue_name="emails")
    assert (stored.id, stored.job_type, stored.priority, stored.payload) == (
        response.json()["job_id"],
        "email.send",
        5,
        {"recipient": "user@example.com"},
    )


async def test_start_stop_and_is_running_on_the_triggers_own_server(
    job_service: JobService, queue_service: RunningQueueService
) -> None:
    # Create trigger
    trigger = WebhookTrigger(job_creator=job_service, config=WebhookConfig(port=0))

    # Start listening for webhook events
    await trigger.start()

    # Trigger is now running and creating jobs from webhooks
    if trigger.is_running:
        print("Trigger is active and processing events")
    else:
        print("Trigger is stopped")
    assert trigger.is_running
    url = trigger.url
    assert url.endswith("/webhooks/jobs")
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"job_type": "report.generate", "payload": {"day": "mon"}}) as answer:
            assert answer.status == 202
            job_id = (await answer.json())["job_id"]

        # Gracefully shutdown trigger
        await trigger.stop()

        # Trigger has stopped and won't create new jobs
        assert not trigger.is_running
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.post(url, json={"job_type": "report.generate"})
    assert (await queue_service.get_job(job_id)).payload == {"day": "mon"}


async def test_faq_test_job_triggers_in_isolation() -> None:
    # Mock JobCreator
    mock_creator = AsyncMock(spec=JobCreator)
    mock_creator.create_job.return_value = Job(
        id=uuid4(), job_type="test.job", queue_name="default", payload={}
    )

    # Create trigger with mock
    trigger = WebhookTrigger(job_creator=mock_creator)

    # Simulate webhook request
    await trigger._create_job_endpoint(WebhookJobRequest(job_type="test.job", payload={"data": "test"}))

    # Verify create_job was called
    mock_creator.create_job.assert_called_once_with(
        job_type="test.job", payload={"data": "test"}, queue_name="default", priority=0
    )


async def test_best_practice_7_dependency_injection_for_testing() -> None:
    request = WebhookJobRequest(job_type="email.send", payload={"recipient": "user@example.com"})

    # Testing
    mock_creator = AsyncMock(spec=JobCreator)
    trigger = WebhookTrigger(job_creator=mock_creator)

    # Can verify job_creator.create_job was called
    await trigger._create_job_endpoint(request)
    mock_creator.create_job.assert_called_once()


class PriorityWebhookTrigger(WebhookTrigger):
    # Webhook trigger with dynamic priority
    async def _create_job_endpoint(self, request: WebhookJobRequest) -> None:
        # Map job type to priority
        priority_map = {
            "payment.process": 10,  # High priority
            "email.send": 5,  # Medium priority
            "cleanup.logs": 1,  # Low priority
        }

        priority = priority_map.get(request.job_type, request.priority)

        job = await self.job_creator.create_job(
            job_type=request.job_type, payload=request.payload, priority=priority
        )
        assert job.priority == priority


async def test_faq_dynamic_priority_through_the_endpoint(
    job_service: JobService, queue_service: RunningQueueService
) -> None:
    trigger = PriorityWebhookTrigger(job_creator=job_service)
    app = FastAPI()
    app.include_router(trigger.router)
    await trigger.start()
    async with asgi_client(app) as http:
        for job_type in ("payment.process", "cleanup.logs"):
            answer = await http.post("/webhooks/jobs", json={"job_type": job_type, "priority": 3})
            assert (answer.status_code, answer.json()) == (202, {"status": "accepted"})
        assert (await http.post("/webhooks/jobs", json={"job_type": ""})).status_code == 400
    await trigger.stop()
    stored = {job.job_type: job.priority for job in await queue_service.list_jobs()}
    assert stored == {"payment.process": 10, "cleanup.logs": 1}


class SeedLifecycle:
    """`start`/`stop`/`is_running` as the seed's best practices 2 and 3 write them."""

    _running = False

    async def start(self) -> None:
        if self._running:
            logger.warning("trigger_already_running")
            return  # Don't start again
        logger.info("starting_trigger")
        self._running = True

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False

    @property
    def is_running(self) -> bool:
        return self._running


class RateLimitedWebhookTrigger(JobTrigger):
    def __init__(self, job_creator: JobCreator, max_requests_per_minute: int = 60):
        from asyncio import Semaphore

        self.job_creator = job_creator
        self.max_requests = max_requests_per_minute
        self.request_counts: defaultdict[str, list[datetime]] = defaultdict(list)
        self._semaphore = Semaphore(max_requests_per_minute)

    async def _create_job_endpoint(self, request: WebhookJobRequest) -> Job:
        # Check rate limit
        now = datetime.now()
        one_minute_ago = now - timedelta(minutes=1)

        # Clean old requests
        self.request_counts[request.job_type] = [
            ts for ts in self.request_counts[request.job_type] if ts > one_minute_ago
        ]

        # Check limit
        if len(self.request_counts[request.job_type]) >= self.max_requests:
            raise HTTPException(status_code=429, detail=f"Rate limit exceeded for {request.job_type}")

        # Record request
        self.request_counts[request.job_type].append(now)

        # Create job
        async with self._semaphore:
            return await self.job_creator.create_job(job_type=request.job_type, payload=request.payload)


class RunnableRateLimitedWebhookTrigger(SeedLifecycle, RateLimitedWebhookTrigger):
    pass


async def test_faq_rate_limited_webhook_trigger(
    job_service: JobService, queue_service: RunningQueueService
) -> None:
    trigger = RunnableRateLimitedWebhookTrigger(job_service, max_requests_per_minute=3)
    await trigger.start()
    for _ in range(3):
        await trigger._create_job_endpoint(WebhookJobRequest(job_type="email.send"))
    with pytest.raises(HTTPException) as refused:
        await trigger._create_job_endpoint(WebhookJobRequest(job_type="email.send"))
    assert refused.value.status_code == 429
    await trigger._create_job_endpoint(WebhookJobRequest(job_type="report.generate"))
    await trigger.stop()
    assert len(await queue_service.list_jobs()) == 4


@dataclass
class TriggerHealth:
    is_running: bool
    last_job_created: datetime | None
    jobs_created_count: int
    errors_count: int


class MonitoredWebhookTrigger(JobTrigger):
    def __init__(self, job_creator: JobCreator):
        self.job_creator = job_creator
        self._running = False
        self._last_job_created: datetime | None = None
        self._jobs_created = 0
        self._errors = 0

    async def _create_job_endpoint(self, request: WebhookJobRequest) -> Job:
        try:
            job = await self.job_creator.create_job(request.job_type, request.payload)

            # Update metrics
            self._last_job_created = datetime.now()
            self._jobs_created += 1

            logger.info("job_created total_jobs=%d total_errors=%d", self._jobs_created, self._errors)

            return job

        except Exception:
            self._errors += 1
            logger.error("job_creation_error total_errors=%d", self._errors)
            raise

    def get_health(self) -> TriggerHealth:  # type: ignore[override]
        """Get trigger health status."""
        return TriggerHealth(
            is_running=self._running,
            last_job_created=self._last_job_created,
            jobs_created_count=self._jobs_created,
            errors_count=self._errors,
        )


class RunnableMonitoredWebhookTrigger(SeedLifecycle, MonitoredWebhookTrigger):
    pass


async def test_faq_monitored_webhook_trigger_and_the_health_endpoint(job_service: JobService) -> None:
    webhook_trigger = WebhookTrigger(job_creator=job_service)
    monitored = RunnableMonitoredWebhookTrigger(job_service)
    await monitored.start()
    await monitored._create_job_endpoint(WebhookJobRequest(job_type="email.send"))
    with pytest.raises(JobCreationError):
        await monitored._create_job_endpoint(WebhookJobRequest.model_construct(job_type="", payload={}))
    app = FastAPI()
    app.include_router(webhook_trigger.router)

    # Health check endpoint
    @app.get("/health/triggers")
    async def trigger_health() -> dict[str, Any]:
        return {"webhook": webhook_trigger.get_health(), "monitored": monitored.get_health()}

    await webhook_trigger.start()
    async with asgi_client(app) as http:
        assert (await http.post("/webhooks/jobs", json={"job_type": "email.send"})).status_code == 202
        health = (await http.get("/health/triggers")).json()
    await webhook_trigger.stop()
    assert health["webhook"]["is_running"] is True
    assert health["webhook"]["jobs_created_count"] == 1
    assert health["webhook"]["source_status"]["webhookPath"] == "/webhooks/jobs"
    assert (health["monitored"]["jobs_created_count"], health["monitored"]["errors_count"]) == (1, 1)
