"""The port as triggers and their tests use it."""

import asyncio
import dataclasses
from datetime import UTC, datetime
from unittest.mock import AsyncMock

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import (
    Job,
    JobContext,
    JobCreationError,
    JobCreator,
    JobStatus,
    current_job_context,
    job_context,
)
from portico.sources.common.emitter import JobEmitter


async def test_a_trigger_can_be_tested_with_an_autospec_mock() -> None:
    """The seed's test style: `AsyncMock(spec=JobCreator)` stands in for the queue service and sees the
    seed's four arguments; the key and provenance are in the job context during the call."""
    creator = AsyncMock(spec=JobCreator)
    seen: list[JobContext] = []

    def answer(**_: object) -> Job:
        seen.append(current_job_context())
        return Job(id="j-1", job_type="report.daily", created_at=datetime.now(UTC))

    creator.create_job.side_effect = answer
    emitter = JobEmitter(creator, ref=TriggerRef(namespace="ns", name="daily", uid="u-1"), source="schedule")

    job = await emitter.emit(
        job_type="report.daily", payload={"a": 1}, idempotency_key="u-1:2026-11-28T09:00Z"
    )

    assert job.id == "j-1"
    creator.create_job.assert_called_once_with(
        job_type="report.daily", payload={"a": 1}, queue_name="default", priority=0
    )
    [context] = seen
    assert context.idempotency_key == "u-1:2026-11-28T09:00Z"
    assert context.metadata["trigger.uid"] == "u-1"
    assert current_job_context() == JobContext()


# --- the job context ------------------------------------------------------------------------------------


def test_no_context_means_no_key_and_no_metadata() -> None:
    assert current_job_context() == JobContext(idempotency_key=None, metadata={})
    assert JobCreator.with_context(None, None) == ({}, None)


def test_a_context_applies_inside_its_block_only() -> None:
    with job_context(idempotency_key="k", metadata={"a": "1"}) as context:
        assert current_job_context() is context
        assert JobCreator.with_context(None, None) == ({"a": "1"}, "k")
    assert current_job_context() == JobContext()


def test_explicit_arguments_win_over_the_context() -> None:
    with job_context(idempotency_key="from-context", metadata={"a": "context", "b": "context"}):
        metadata, key = JobCreator.with_context({"b": "explicit", "c": "explicit"}, "explicit")
    assert key == "explicit"
    assert metadata == {"a": "context", "b": "explicit", "c": "explicit"}


def test_nested_contexts_merge_metadata_and_the_innermost_key_wins() -> None:
    with job_context(idempotency_key="outer", metadata={"tenant": "t1", "who": "outer"}):
        with job_context(metadata={"who": "inner"}):
            assert JobCreator.with_context(None, None) == ({"tenant": "t1", "who": "inner"}, "outer")
            with job_context(idempotency_key="inner"):
                assert current_job_context().idempotency_key == "inner"
            assert current_job_context().idempotency_key == "outer"
        assert dict(current_job_context().metadata) == {"tenant": "t1", "who": "outer"}
    assert current_job_context() == JobContext()


def test_a_context_is_reset_when_its_block_raises() -> None:
    with pytest.raises(RuntimeError), job_context(idempotency_key="k"):
        raise RuntimeError("boom")
    assert current_job_context() == JobContext()


def test_a_context_cannot_be_changed_under_a_call() -> None:
    given = {"a": "1"}
    with job_context(metadata=given) as context:
        given["a"] = "changed"
        assert context.metadata == {"a": "1"}
        with pytest.raises(TypeError):
            context.metadata["a"] = "2"  # type: ignore[index]
        with pytest.raises(dataclasses.FrozenInstanceError):
            context.idempotency_key = "other"  # type: ignore[misc]
        metadata, _ = JobCreator.with_context(None, None)
        metadata["b"] = "2"
        assert context.metadata == {"a": "1"}


async def test_concurrent_calls_on_one_loop_never_see_each_others_context() -> None:
    """Many emits in flight at once on one loop, each switching tasks while inside its block: every
    job is created with its own key and metadata."""
    creator = InMemoryJobCreator()

    async def create(n: int) -> Job:
        with job_context(idempotency_key=f"k-{n}", metadata={"n": str(n)}):
            await asyncio.sleep(0.001 * (n % 7))
            return await creator.create_job(job_type="t", payload={"n": n}, queue_name="default", priority=0)

    jobs = await asyncio.gather(*(create(n) for n in range(50)))
    assert [(job.idempotency_key, job.metadata) for job in jobs] == [
        (f"k-{n}", {"n": str(n)}) for n in range(50)
    ]
    assert current_job_context() == JobContext()


async def test_a_task_started_inside_a_block_keeps_the_blocks_context() -> None:
    creator = InMemoryJobCreator()
    started = asyncio.Event()

    async def later() -> Job:
        await started.wait()
        return await creator.create_job("t", {})

    with job_context(idempotency_key="k", metadata={"a": "1"}):
        task = asyncio.create_task(later())
    started.set()
    job = await task
    assert (job.idempotency_key, job.metadata) == ("k", {"a": "1"})


async def test_a_context_key_deduplicates_like_an_explicit_one() -> None:
    creator = InMemoryJobCreator()
    explicit = await creator.create_job("t", {}, idempotency_key="same")
    with job_context(idempotency_key="same"):
        again = await creator.create_job("t", {})
    assert again.id == explicit.id and again.existing and len(creator.jobs) == 1


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
