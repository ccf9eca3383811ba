"""The port as triggers and their tests use it."""

from datetime import UTC, datetime
from unittest.mock import AsyncMock

from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator, JobStatus
from portico.sources.common.emitter import JobEmitter


async def test_a_trigger_can_be_tested_with_an_autospec_mock() -> None:
    """The seed's test style: `AsyncMock(spec=JobCreator)` stands in for the queue service."""
    creator = AsyncMock(spec=JobCreator)
    creator.create_job.return_value = Job(id="j-1", job_type="report.daily", created_at=datetime.now(UTC))
    emitter = JobEmitter(creator, ref=TriggerRef(namespace="ns", name="daily", uid="u-1"), source="schedule")

    job = await emitter.emit(
        job_type="report.daily", payload={"a": 1}, idempotency_key="u-1:2026-11-28T09:00Z"
    )

    assert job.id == "j-1"
    kwargs = creator.create_job.await_args.kwargs
    assert kwargs["idempotency_key"] == "u-1:2026-11-28T09:00Z"
    assert kwargs["metadata"]["trigger.uid"] == "u-1"


def test_job_parses_what_the_queue_service_returns() -> None:
    job = Job.model_validate(
        {
            "id": "j",
            "job_type": "t",
            "status": "dead",
            "created_at": "2026-11-28T09:00:00.000000Z",
            "lease_id": None,
            "unknown_future_field": 1,
        }
    )
    assert job.status is JobStatus.DEAD
    assert not job.status.is_active
    assert JobStatus.PENDING.is_active and JobStatus.RUNNING.is_active


def test_creation_error_says_whether_to_retry() -> None:
    error = JobCreationError("queue unavailable", retryable=True, status=503)
    assert (str(error), error.retryable, error.status) == ("queue unavailable", True, 503)


def test_job_accepts_a_uuid_id_and_defaults_its_creation_time() -> None:
    from uuid import uuid4

    job_id = uuid4()
    job = Job(id=job_id, job_type="test.job", queue_name="default", payload={})  # type: ignore[arg-type]
    assert job.id == str(job_id) and job.created_at.tzinfo is not None
    assert JobStatus.SCHEDULED.is_active and JobStatus("scheduled") is JobStatus.SCHEDULED
