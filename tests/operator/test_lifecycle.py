"""The reconcile state machine: start, reconfigure (make before break), suspend, fail, run now."""

import asyncio
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.adapters.job_creator.queue_service import QueueServiceTargetSpec
from portico.domain.model import SpecModel
from portico.domain.trigger import TriggerRef
from portico.operator.resource import Resource
from portico.ports.job_creator import JobCreator
from portico.ports.job_target import JobTarget, TargetContext
from tests.operator.fakes import JOURNAL, resource, settle


@pytest.mark.looptime
async def test_create_starts_and_reports_running(env: Any) -> None:
    registry, source, patcher, events, _ = env
    await registry.apply(resource())
    await settle()
    assert source.built[0].is_running
    s = patcher.status
    assert (s["phase"], s["isRunning"], s["source"], s["observedGeneration"]) == ("Running", True, "fake", 1)
    assert s["conditions"][0]["type"] == "Ready" and s["conditions"][0]["status"] == "True"
    assert s["webhookPath"] == "x"
    assert events.reasons() == ["Started"]


@pytest.mark.looptime
async def test_spec_change_reconfigures(env: Any) -> None:
    registry, source, patcher, events, _ = env
    await registry.apply(resource())
    await registry.apply(resource(2, label="y"))
    await settle()
    old, new = source.built
    assert old.stops == 1 and not old.is_running and new.is_running
    assert patcher.status["observedGeneration"] == 2
    assert patcher.status["webhookPath"] == "y"
    assert events.reasons() == ["Started", "Reconfigured"]


@pytest.mark.looptime
async def test_suspend_and_resume(env: Any) -> None:
    registry, source, patcher, _, _ = env
    await registry.apply(resource())
    r = resource(2)
    await registry.apply(Resource(r.ref, 2, {**r.spec, "suspend": True}))
    await settle()
    assert not source.built[0].is_running
    assert patcher.status["phase"] == "Suspended" and patcher.status["isRunning"] is False
    await registry.apply(resource(3, status={"phase": "Suspended"}))
    await settle()
    assert source.built[1].is_running and patcher.status["phase"] == "Running"
    assert "resumedAt" in source.built[1].context.status


@pytest.mark.looptime
async def test_invalid_spec_fails_without_retry(env: Any) -> None:
    registry, source, patcher, events, _ = env
    await registry.apply(
        Resource(TriggerRef("t", "ns", "uid-1"), 1, {"job": {"type": "x"}, "fake": {"bogus": 1}})
    )
    await asyncio.sleep(60)
    assert source.built == []
    assert patcher.status["phase"] == "Failed"
    assert "spec.fake.bogus" in patcher.status["lastError"]
    assert patcher.status["conditions"][0]["reason"] == "InvalidSpec"
    assert events.reasons() == ["InvalidSpec"]


@pytest.mark.looptime
async def test_no_source_block_is_invalid(env: Any) -> None:
    registry, _, patcher, _, _ = env
    await registry.apply(Resource(TriggerRef("t", "ns", "uid-1"), 1, {"job": {"type": "x"}}))
    await settle()
    assert "exactly one source block" in patcher.status["lastError"]


@pytest.mark.looptime
async def test_jobs_use_template_and_provenance(env: Any) -> None:
    registry, source, _, _, _creator = env
    await registry.apply(resource())
    job = await source.built[0].emitter.emit(payload={"k": "v"})
    assert (job.job_type, job.queue_name, job.priority) == ("demo.job", "q", 3)
    assert job.metadata["trigger.uid"] == "uid-1" and job.metadata["trigger.source"] == "fake"


@pytest.mark.looptime
async def test_run_now_annotation_fires_once_per_value(env: Any) -> None:
    registry, _, _, events, creator = env
    await registry.apply(resource())
    await registry.apply(resource(annotations={"triggers.portico.dev/run-now": "a"}))
    await registry.apply(resource(annotations={"triggers.portico.dev/run-now": "a", "x": "y"}))
    await registry.apply(resource(annotations={"triggers.portico.dev/run-now": "b"}))
    assert len(creator.jobs) == 2
    assert events.reasons().count("RunNow") == 2


@pytest.mark.looptime
async def test_reconfiguration_starts_the_new_trigger_before_stopping_the_old(env: Any) -> None:
    registry, *_ = env
    JOURNAL.clear()
    await registry.apply(resource(label="old"))
    await registry.apply(resource(2, label="new"))
    assert JOURNAL == [("start", "old"), ("start", "new"), ("stop", "old")]


@pytest.mark.looptime
async def test_a_failed_reconfiguration_stops_both(env: Any) -> None:
    registry, source, patcher, *_ = env
    await registry.apply(resource(label="old"))
    await registry.apply(resource(2, label="new", fail="cannot connect"))
    await settle()
    assert not any(t.is_running for t in source.built)
    assert patcher.status["phase"] == "Failed"


@pytest.mark.looptime
async def test_a_reconfiguration_resumes_from_what_the_old_trigger_knows_not_the_stale_status(
    env: Any,
) -> None:
    """The old instance counted something the coalescing writer has not written yet: the new instance
    starts from the old one's memory, and gets the resource's creation time."""
    registry, source, *_ = env
    created = Resource.from_body(
        {"metadata": {"name": "t", "uid": "uid-1", "creationTimestamp": "2026-03-02T09:00:00Z"}}
    ).created_at
    first = resource()
    await registry.apply(Resource(first.ref, 1, first.spec, created_at=created))
    await registry.apply(Resource(first.ref, 2, {**first.spec, "fake": {"label": "y"}}, created_at=created))
    _, new = source.built
    assert new.context.status.get("webhookPath") == "x", "the old instance's source status carries over"
    assert new.context.created_at == created


class OwnCreatorTarget(JobTarget[QueueServiceTargetSpec]):
    """Builds a creator of the trigger's own when a URL is set, like the queue service target."""

    name: ClassVar[str] = "queueService"
    spec_model: ClassVar[type[SpecModel]] = QueueServiceTargetSpec

    def __init__(self) -> None:
        self.built: list[ClosingCreator] = []

    def build(self, spec: QueueServiceTargetSpec, context: TargetContext) -> JobCreator:
        if spec.url is None:
            return context.shared
        self.built.append(ClosingCreator())
        return self.built[-1]


class ClosingCreator(InMemoryJobCreator):
    closed = False

    async def close(self) -> None:
        self.closed = True


@pytest.mark.looptime
async def test_a_targets_own_creator_serves_its_trigger_and_is_closed_after_it(env: Any) -> None:
    registry, source, patcher, _, shared = env
    shared_closed = []
    shared.close = lambda: shared_closed.append(True)  # type: ignore[method-assign]
    target = registry.targets["queueService"] = OwnCreatorTarget()
    own = {"queueService": {"url": "http://team-queue:8080"}}
    await registry.apply(replace(resource(), spec={**resource().spec, "target": own}))
    await settle()
    assert patcher.status["target"] == "queueService"
    await source.built[0].run_now("a")
    assert len(target.built[0].jobs) == 1 and not shared.jobs
    await registry.apply(replace(resource(2), spec={**resource(2).spec, "target": own}))
    assert target.built[0].closed and not target.built[1].closed
    await registry.apply(resource(3))
    assert target.built[1].closed and source.built[-1].context.job_creator is shared
    await registry.remove("uid-1")
    assert not shared_closed
