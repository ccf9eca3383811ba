"""The seed's "Best Practices" for writing a trigger on the `JobTrigger` port, run as written: each
example is a method or a class of a custom trigger; where the seed shows a method alone, it is placed
in a small trigger class that supplies what the method uses (`self.job_creator`, `self.config`,
`self._running`). Imports are adapted; the seed's structured logger is structlog's. The seed's
"✅ GOOD" variants run; the "❌ BAD" ones are there to contrast and are not meant to work."""

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest.mock import AsyncMock

import pytest
import structlog
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError, validator

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.kits.job.job_service import JobService
from portico.ports.job_creator import Job, JobCreator
from portico.ports.job_trigger import JobTrigger
from portico.sources.webhook import WebhookJobRequest

logger = structlog.get_logger()


@pytest.fixture(autouse=True)
def _structlog_to_capture(caplog: pytest.LogCaptureFixture) -> None:
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(), cache_logger_on_first_use=False)
    caplog.set_level(logging.DEBUG)


@pytest.fixture
def job_service() -> JobService:
    return JobService(job_queue=InMemoryJobQueue())


class _Lifecycle(JobTrigger):
    """start/stop/is_running, so the seed's methods can be tried on a trigger that instantiates."""

    def __init__(self, job_creator: JobCreator) -> None:
        self.job_creator = job_creator
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    @property
    def is_running(self) -> bool:
        return self._running


# 1. Depend on JobCreator Port, Not JobService
class WebhookTrigger(_Lifecycle):
    def __init__(self, job_creator: JobCreator):
        self.job_creator = job_creator  # Interface dependency

    async def _create_job_endpoint(self, request: Any) -> Job:
        job = await self.job_creator.create_job(  # Uses interface
            job_type=request.job_type,
            payload=request.payload,
        )
        return job


async def test_depend_on_the_job_creator_port(job_service: JobService) -> None:
    trigger = WebhookTrigger(job_creator=job_service)
    job = await trigger._create_job_endpoint(WebhookJobRequest(job_type="email.send", payload={"to": "a@b"}))
    assert job.job_type == "email.send"
    assert await job_service.get_job(job.id) == job


# 2. Implement Graceful Shutdown
class ScheduleTrigger(_Lifecycle):
    """The seed's scheduler is any object with `shutdown(wait=...)`; a thread pool running the scheduled
    work is one."""

    def __init__(self, job_creator: JobCreator) -> None:
        super().__init__(job_creator)
        self._scheduler = ThreadPoolExecutor(max_workers=2)

    # ✅ GOOD - Graceful shutdown
    async def stop(self) -> None:
        if not self._running:
            return

        logger.info("stopping_schedule_trigger")

        # Shutdown scheduler gracefully
        self._scheduler.shutdown(wait=True)  # Wait for running jobs

        self._running = False
        logger.info("schedule_trigger_stopped")


async def test_stop_waits_for_running_work(job_service: JobService, caplog: pytest.LogCaptureFixture) -> None:
    trigger = ScheduleTrigger(job_service)
    await trigger.start()
    finished: list[str] = []
    trigger._scheduler.submit(lambda: (time.sleep(0.2), finished.append("run")))
    await trigger.stop()
    assert finished == ["run"]
    assert not trigger.is_running
    assert "schedule_trigger_stopped" in caplog.text
    await trigger.stop()


# 3. Prevent Duplicate Starts
class IdempotentTrigger(_Lifecycle):
    starts = 0

    # ✅ GOOD - Idempotent start
    async def start(self) -> None:
        if self._running:
            logger.warning("trigger_already_running")
            return  # Don't start again

        logger.info("starting_trigger")
        self._running = True
        # Start logic...
        self.starts += 1


async def test_start_is_idempotent(job_service: JobService, caplog: pytest.LogCaptureFixture) -> None:
    trigger = IdempotentTrigger(job_service)
    await trigger.start()
    await trigger.start()
    assert trigger.starts == 1
    assert trigger.is_running
    assert "trigger_already_running" in caplog.text


# 4. Handle Errors in Event Processing
class ErrorHandlingTrigger(_Lifecycle):
    # ✅ GOOD - Error handling
    async def _on_webhook_request(self, request: Any) -> dict[str, str]:
        try:
            job = await self.job_creator.create_job(job_type=request.job_type, payload=request.payload)

            logger.info("job_created_from_webhook", job_id=str(job.id))
            return {"job_id": str(job.id)}

        except ValidationError as e:
            logger.warning("invalid_webhook_request", error=str(e))
            raise HTTPException(status_code=400, detail=str(e)) from e

        except Exception as e:
            logger.error("webhook_job_creation_failed", error=str(e), exc_info=True)
            raise HTTPException(status_code=500, detail="Job creation failed") from e


async def test_errors_in_event_processing_are_caught(
    job_service: JobService, caplog: pytest.LogCaptureFixture
) -> None:
    trigger = ErrorHandlingTrigger(job_service)
    answer = await trigger._on_webhook_request(WebhookJobRequest(job_type="report.daily"))
    assert (await job_service.get_job(answer["job_id"])) is not None

    failing = AsyncMock(spec=JobCreator)
    failing.create_job.side_effect = ConnectionError("queue down")
    with pytest.raises(HTTPException) as refused:
        await ErrorHandlingTrigger(failing)._on_webhook_request(WebhookJobRequest(job_type="report.daily"))
    assert refused.value.status_code == 500
    assert "webhook_job_creation_failed" in caplog.text


# 5. Use Structured Logging
class _Config(BaseModel):
    prefix: str = "/webhooks"
    allowed_job_types: list[str] = []


class StructuredLoggingTrigger(_Lifecycle):
    def __init__(self, job_creator: JobCreator, config: _Config) -> None:
        super().__init__(job_creator)
        self.config = config

    # ✅ GOOD - Structured logging
    async def start(self) -> None:
        logger.info(
            "starting_webhook_trigger", prefix=self.config.prefix, allowed_types=self.config.allowed_job_types
        )

        self._running = True

        logger.info("webhook_trigger_started")


async def test_structured_logging(job_service: JobService, caplog: pytest.LogCaptureFixture) -> None:
    trigger = StructuredLoggingTrigger(job_service, _Config(allowed_job_types=["email.send"]))
    await trigger.start()
    assert trigger.is_running
    assert "starting_webhook_trigger" in caplog.text
    assert "email.send" in caplog.text


# 6. Validate Input from External Sources
class ValidatingTrigger(StructuredLoggingTrigger):
    # ✅ GOOD - Input validation
    async def _on_webhook_request(self, request: WebhookJobRequest) -> Job:
        # Validate job type allowlist
        if self.config.allowed_job_types:  # noqa: SIM102 - as the seed writes it
            if request.job_type not in self.config.allowed_job_types:
                raise HTTPException(status_code=403, detail=f"Job type '{request.job_type}' not allowed")

        # Validate payload is JSON-serializable
        try:
            json.dumps(request.payload)
        except TypeError as e:
            raise HTTPException(status_code=400, detail="Payload must be JSON-serializable") from e

        # Create job
        job = await self.job_creator.create_job(job_type=request.job_type, payload=request.payload)
        return job


async def test_input_from_external_sources_is_validated(job_service: JobService) -> None:
    trigger = ValidatingTrigger(job_service, _Config(allowed_job_types=["email.send"]))
    job = await trigger._on_webhook_request(WebhookJobRequest(job_type="email.send", payload={"n": 1}))
    assert job.payload == {"n": 1}
    with pytest.raises(HTTPException) as refused:
        await trigger._on_webhook_request(WebhookJobRequest(job_type="data.wipe"))
    assert refused.value.status_code == 403


async def test_error_handling_trigger_answers_over_http(job_service: JobService) -> None:
    """The seed's error-handling method mounted in a FastAPI application: a client sees its JSON answer
    and its 500, never a traceback."""
    trigger = ErrorHandlingTrigger(job_service)
    app = FastAPI()

    @app.post("/webhooks/jobs")
    async def create(request: WebhookJobRequest) -> dict[str, str]:
        return await trigger._on_webhook_request(request)

    with TestClient(app) as client:
        accepted = client.post("/webhooks/jobs", json={"job_type": "email.send", "payload": {}})
        assert accepted.status_code == 200
        assert "job_id" in accepted.json()
        refused = client.post("/webhooks/jobs", json={"job_type": ""})
        assert refused.status_code == 422


# FAQ: Should triggers validate job payloads?
class EmailJobPayload(BaseModel):
    recipient: str
    subject: str
    body: str

    @validator("recipient")
    def validate_email(cls, v):  # type: ignore[no-untyped-def]
        if "@" not in v:
            raise ValueError("Invalid email address")
        return v


class ReportJobPayload(BaseModel):
    """The seed's usage names this model without defining it."""

    report_type: str


class PayloadValidatingWebhookTrigger(_Lifecycle):
    def __init__(self, job_creator: JobCreator, payload_schemas: dict[str, type[BaseModel]]):
        super().__init__(job_creator)
        self.job_creator = job_creator
        self.payload_schemas = payload_schemas  # job_type -> Pydantic model

    async def _create_job_endpoint(self, request: WebhookJobRequest) -> Job:
        # Validate payload against schema
        schema = self.payload_schemas.get(request.job_type)
        if schema:
            try:
                validated = schema(**request.payload)
                payload = validated.dict()
            except ValidationError as e:
                raise HTTPException(status_code=400, detail=f"Invalid payload: {e}") from e
        else:
            payload = request.payload

        # Create job with validated payload
        return await self.job_creator.create_job(job_type=request.job_type, payload=payload)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_payloads_are_validated_against_a_model_per_job_type(job_service: JobService) -> None:
    # Usage
    trigger = PayloadValidatingWebhookTrigger(
        job_creator=job_service,
        payload_schemas={"email.send": EmailJobPayload, "report.generate": ReportJobPayload},
    )
    email = {"recipient": "user@example.com", "subject": "Hi", "body": "Hello"}
    job = await trigger._create_job_endpoint(WebhookJobRequest(job_type="email.send", payload=email))
    assert job.payload == email
    with pytest.raises(HTTPException) as refused:
        await trigger._create_job_endpoint(
            WebhookJobRequest(job_type="email.send", payload={**email, "recipient": "nobody"})
        )
    assert refused.value.status_code == 400
    assert "Invalid email address" in str(refused.value.detail)
    free = await trigger._create_job_endpoint(WebhookJobRequest(job_type="cleanup.logs", payload={"a": 1}))
    assert free.payload == {"a": 1}
