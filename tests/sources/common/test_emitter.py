"""What every source shares: provenance metadata, template merging, and counting jobs (not attempts)."""

import json

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.histogram import Histogram
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import JobCreationError
from portico.sources.common.emitter import JobEmitter

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
