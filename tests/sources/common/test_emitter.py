"""What every source shares: provenance metadata, template merging, and counting jobs (not attempts)."""

import json
from datetime import UTC, datetime
from typing import Any
from unittest.mock import AsyncMock
from uuid import uuid4

import aiohttp
import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.histogram import Histogram
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import Job, JobContext, JobCreationError, JobCreator, current_job_context
from portico.sources.common.emitter import JobEmitter
from portico.sources.schedule import ScheduleConfig, Scheduler, ScheduleTrigger
from portico.sources.webhook import WebhookConfig, WebhookTrigger
from tests.sources.schedule.conftest import LoopClock

REF = TriggerRef(name="t", namespace="ns", uid="u-1")


async def test_template_merge_and_provenance() -> None:
    creator = InMemoryJobCreator()
    template = JobTemplate(
        type="a.b", queue="q", priority=4, payload={"x": 1, "y": 1}, metadata={"team": "t"}
    )
    emitter = JobEmitter(creator, ref=REF, source="demo", template=template)
    job = await emitter.emit(payload={"y": 2}, metadata={"extra": "e"})
    assert (job.job_type, job.queue_name, job.priority, job.payload) == ("a.b", "q", 4, {"x": 1, "y": 2})
    assert job.metadata == {
        "team": "t",
        "extra": "e",
        "trigger.name": "t",
        "trigger.namespace": "ns",
        "trigger.uid": "u-1",
        "trigger.source": "demo",
    }


async def test_a_job_the_queue_already_had_is_not_counted_again() -> None:
    emitter = JobEmitter(InMemoryJobCreator(), ref=REF, source="demo", template=JobTemplate(type="a"))
    first = await emitter.emit(idempotency_key="k")
    again = await emitter.emit(idempotency_key="k")
    assert again.id == first.id and again.existing
    health = emitter.health(is_running=True)
    assert health.jobs_created_count == 1
    assert health.last_job_id == first.id


def test_histogram_is_cumulative_for_prometheus() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert h.count == 4 and h.sum == pytest.approx(3.65)


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"payload": {"a": float("inf")}}, "$.payload.a"),
        ({"payload": {"a": json.loads("[" * 64 + "]" * 64)}}, "$.payload.a"),
        ({"payload": {"big": 2**64}}, "$.payload.big"),
        ({"metadata": {"k": "\ud800"}}, "$.metadata.k"),
        ({"job_type": "t\x00"}, "job_type"),
        ({"queue_name": "q\n"}, "queue_name"),
    ],
)
async def test_jobs_outside_the_input_policy_are_refused_for_every_source(
    changes: dict[str, object], where: str
) -> None:
    """AMQP messages, database rows and file events all pass through the emitter: a job outside the input
    policy is refused for good (so the source rejects the message or row), and never sent."""
    creator = InMemoryJobCreator()
    emitter = JobEmitter(creator, ref=TriggerRef(name="r"), source="amqp", template=JobTemplate(type="t"))
    with pytest.raises(JobCreationError) as refused:
        await emitter.emit(**changes)  # type: ignore[arg-type]
    assert (refused.value.retryable, refused.value.status) == (False, 400)
    assert where in str(refused.value)
    assert not creator.jobs
    assert emitter.errors_count == 1


# --- the seed's test pattern: `create_job.assert_called_once_with(...)` --------------------------------


def seed_mock_creator() -> tuple[AsyncMock, list[JobContext]]:
    """The seed's testing FAQ mock, plus what the job context held during each call."""
    mock_creator = AsyncMock(spec=JobCreator)
    contexts: list[JobContext] = []

    def create_job(**_: Any) -> Job:
        contexts.append(current_job_context())
        return Job(id=uuid4(), job_type="test.job", queue_name="default", payload={})  # type: ignore[arg-type]

    mock_creator.create_job.side_effect = create_job
    return mock_creator, contexts


async def test_the_emitter_makes_the_seeds_exact_call() -> None:
    mock_creator, contexts = seed_mock_creator()
    emitter = JobEmitter(mock_creator, ref=REF, source="demo")

    await emitter.emit(
        job_type="test.job", payload={"data": "test"}, metadata={"x": "1"}, idempotency_key="k"
    )

    mock_creator.create_job.assert_called_once_with(
        job_type="test.job", payload={"data": "test"}, queue_name="default", priority=0
    )
    [context] = contexts
    assert context.idempotency_key == "k"
    assert context.metadata == {**emitter.provenance(), "x": "1"}


@pytest.mark.looptime
async def test_a_schedule_trigger_makes_the_seeds_exact_call() -> None:
    """Built as the seed builds it; the run's key and `scheduled_time` travel in the job context."""
    mock_creator, contexts = seed_mock_creator()
    clock = LoopClock(datetime(2026, 3, 2, 8, 59, 30, tzinfo=UTC))
    scheduler = Scheduler(clock=clock)
    schedule_trigger = ScheduleTrigger(
        job_creator=mock_creator,
        schedules=[ScheduleConfig(cron="0 9 * * *", job_type="test.job", payload={"data": "test"})],
        ref=REF,
        scheduler=scheduler,
    )
    await schedule_trigger.start()
    try:
        await clock.until(datetime(2026, 3, 2, 9, 0, 1, tzinfo=UTC))
    finally:
        await schedule_trigger.stop()
        await scheduler.close()

    mock_creator.create_job.assert_called_once_with(
        job_type="test.job", payload={"data": "test"}, queue_name="default", priority=0
    )
    [context] = contexts
    assert context.idempotency_key == f"{REF.key}:2026-03-02T09:00:00Z"
    assert context.metadata["scheduled_time"] == "2026-03-02T09:00:00Z"
    assert context.metadata["trigger.source"] == "schedule"


async def test_a_webhook_trigger_makes_the_seeds_exact_call() -> None:
    """A real request to a webhook trigger built as the seed builds it; the sender's delivery id becomes
    the key in the job context."""
    mock_creator, contexts = seed_mock_creator()
    webhook_trigger = WebhookTrigger(
        job_creator=mock_creator, config=WebhookConfig(prefix="/webhooks", port=0)
    )
    await webhook_trigger.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                webhook_trigger.url,
                json={"job_type": "test.job", "payload": {"data": "test"}},
                headers={"Idempotency-Key": "delivery-1"},
            ) as response,
        ):
            assert response.status == 202, await response.text()
    finally:
        await webhook_trigger.stop()

    mock_creator.create_job.assert_called_once_with(
        job_type="test.job", payload={"data": "test"}, queue_name="default", priority=0
    )
    [context] = contexts
    assert context.idempotency_key == f"{webhook_trigger.ref.key}:delivery-1"
    assert context.metadata["trigger.source"] == "webhook"
