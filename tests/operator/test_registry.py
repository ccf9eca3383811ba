"""The registry's lifecycle logic, driven through a fake source at our own port boundary (the real
sources and the real API server are exercised in tests/e2e)."""

import asyncio
from dataclasses import replace
from typing import Any, ClassVar

import pytest
from pydantic import Field

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.adapters.job_creator.queue_service import QueueServiceTargetSpec
from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef, TriggerRef
from portico.operator.kube import EventSink, SecretCache
from portico.operator.registry import Resource, RetryPolicy, TriggerRegistry
from portico.operator.resource import FINALIZER
from portico.operator.status import FinalizerWriter, ObjectStatus, StatusPatcher, StatusWriter
from portico.ports.job_creator import Job, JobCreator
from portico.ports.job_target import JobTarget, TargetContext
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import EventType
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.common.emitter import JobEmitter


class FakeSpec(SpecModel):
    """Fake source."""

    label: str = Field(default="x", description="Label.")
    fail: str | None = Field(default=None, description="Make start() fail with this message.")
    secret: SecretRef | None = Field(default=None, description="A Secret read at start.")


JOURNAL: list[tuple[str, str]] = []


class FakeTrigger(JobTrigger):
    def __init__(self, spec: FakeSpec, context: TriggerContext) -> None:
        self.spec = spec
        self.context = context
        self.emitter = JobEmitter(
            context.job_creator,
            ref=context.ref,
            source="fake",
            template=context.template,
            events=context.events,
        )
        self.running = False
        self.stops = 0
        self.secret_value: str | None = None
        self.journal: list[tuple[str, str]] = JOURNAL

    async def start(self) -> None:
        self.journal.append(("start", self.spec.label))
        if self.spec.fail:
            raise TriggerStartError(self.spec.fail, reason="Unreachable")
        if self.spec.secret:
            self.secret_value = self.context.secrets.get(self.spec.secret)
        self.running = True

    async def stop(self) -> None:
        self.journal.append(("stop", self.spec.label))
        self.stops += 1
        self.running = False

    @property
    def is_running(self) -> bool:
        return self.running

    def get_health(self) -> TriggerHealth:
        return self.emitter.health(is_running=self.running, source_status={"webhookPath": self.spec.label})

    async def run_now(self, token: str) -> Job:
        return await self.emitter.emit(idempotency_key=f"{self.context.ref.key}:run-now:{token}")


class FakeSource(TriggerSource[FakeSpec]):
    name: ClassVar[str] = "fake"
    spec_model: ClassVar[type[SpecModel]] = FakeSpec

    def __init__(self) -> None:
        self.built: list[FakeTrigger] = []

    def secret_refs(self, spec: FakeSpec) -> list[SecretRef]:
        return [spec.secret] if spec.secret else []

    def build(self, spec: FakeSpec, context: TriggerContext) -> JobTrigger:
        trigger = FakeTrigger(spec, context)
        self.built.append(trigger)
        return trigger


class Patcher(StatusPatcher):
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def patch_status(
        self, ref: TriggerRef, patch: dict[str, Any], resource_version: str | None = None
    ) -> ObjectStatus:
        self.status.update(patch)
        return ObjectStatus(dict(self.status), "1")

    async def read_status(self, ref: TriggerRef) -> ObjectStatus:
        return ObjectStatus(dict(self.status), "1")


class Events(EventSink):
    def __init__(self) -> None:
        self.events: list[tuple[EventType, str, str]] = []

    def record(self, ref: TriggerRef, type: EventType, reason: str, message: str) -> None:
        self.events.append((type, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]


def resource(
    generation: int = 1,
    *,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    **fake: Any,
) -> Resource:
    return Resource(
        ref=TriggerRef(name="t", namespace="ns", uid="uid-1"),
        generation=generation,
        spec={"job": {"type": "demo.job", "queue": "q", "priority": 3}, "fake": fake},
        annotations=annotations or {},
        status=status or {},
    )


@pytest.fixture
async def env() -> Any:
    source = FakeSource()
    patcher = Patcher()
    writer = StatusWriter(patcher, interval=1.0)
    await writer.start()
    events = Events()
    creator = InMemoryJobCreator()
    registry = TriggerRegistry(
        sources={"fake": source},
        job_creator=creator,
        status_writer=writer,
        events=events,
        secrets=SecretCache(None),
        retry=RetryPolicy(initial=1, maximum=8),
    )
    yield registry, source, patcher, events, creator
    await registry.stop_all()
    await writer.close()


async def settle() -> None:
    await asyncio.sleep(1.5)


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
async def test_same_generation_does_nothing(env: Any) -> None:
    registry, source, *_ = env
    await registry.apply(resource())
    await registry.apply(resource(annotations={"team": "a"}))
    assert len(source.built) == 1


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
async def test_start_failure_is_retried_with_backoff_then_fixed_by_spec_change(env: Any) -> None:
    registry, source, patcher, _events, _ = env
    loop = asyncio.get_running_loop()
    await registry.apply(resource(fail="broker unreachable"))
    await asyncio.sleep(30)
    attempts = len(source.built)
    assert 6 <= attempts <= 11, "backoff 1, 2, 4, 8, 8... s, each jittered to 50-100 %, within 30 s"
    assert patcher.status["phase"] == "Failed"
    assert patcher.status["conditions"][0]["reason"] == "Unreachable"
    assert "broker unreachable" in patcher.status["lastError"]
    assert patcher.status["errors"] == attempts
    t0 = loop.time()
    await registry.apply(resource(2))
    assert loop.time() - t0 < 0.1
    await settle()
    assert patcher.status["phase"] == "Running" and patcher.status["lastError"] is None
    await asyncio.sleep(30)
    assert len(source.built) == attempts + 1, "the pending retry was cancelled"


@pytest.mark.looptime
async def test_missing_secret_recovers_when_secret_appears(env: Any) -> None:
    registry, source, patcher, _, _ = env
    await registry.apply(resource(secret={"name": "creds", "key": "token"}))
    await settle()
    assert patcher.status["phase"] == "Failed"
    assert "Secret 'creds' key 'token'" in patcher.status["lastError"]
    assert registry.references_secret("ns", "creds")
    import base64

    await registry.secret_changed("ns", "creds", {"token": base64.b64encode(b"s3cret").decode()})
    await settle()
    assert patcher.status["phase"] == "Running"
    assert source.built[-1].secret_value == "s3cret"
    assert "s3cret" not in str(patcher.status)


@pytest.mark.looptime
async def test_counters_survive_reconfigure_and_restart(env: Any) -> None:
    registry, source, patcher, _, _ = env
    patcher.status.update({"jobsCreated": 10, "errors": 2})
    await registry.apply(resource(status={"jobsCreated": 10, "errors": 2}))
    await source.built[0].emitter.emit(payload={"n": 1})
    await registry.apply(resource(2))
    await source.built[1].emitter.emit(payload={"n": 2})
    await settle()
    assert patcher.status["jobsCreated"] == 12
    assert patcher.status["errors"] == 2
    assert patcher.status["lastJobId"]


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
async def test_delete_stops_and_forgets(env: Any) -> None:
    registry, source, _, _, _ = env
    await registry.apply(resource())
    await registry.remove("uid-1")
    assert not source.built[0].is_running
    assert registry.get("uid-1") is None
    await registry.remove("uid-1")


class Finalizers(FinalizerWriter):
    def __init__(self) -> None:
        self.writes: list[tuple[list[str], str]] = []

    async def set_finalizers(self, ref: TriggerRef, finalizers: list[str], resource_version: str) -> None:
        self.writes.append((finalizers, resource_version))


def body(
    *, finalizers: list[str] | None = None, deleting: bool = False, version: str = "7"
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "t",
        "namespace": "ns",
        "uid": "uid-1",
        "generation": 1,
        "resourceVersion": version,
        "finalizers": finalizers or [],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T10:00:00Z"
    return {"metadata": meta, "spec": {"job": {"type": "x"}, "fake": {}}}


@pytest.mark.looptime
async def test_finalizer_added_on_first_sight_and_released_after_stop(env: Any) -> None:
    registry, source, *_ = env
    writer = registry.finalizers = Finalizers()
    await registry.observe("ADDED", body(finalizers=["other/keep"]))
    assert writer.writes == [(["other/keep", FINALIZER], "7")]
    assert source.built[0].is_running
    await registry.observe("MODIFIED", body(finalizers=["other/keep", FINALIZER], version="8"))
    assert len(writer.writes) == 1 and len(source.built) == 1
    await registry.observe("MODIFIED", body(finalizers=["other/keep", FINALIZER], deleting=True, version="9"))
    assert not source.built[0].is_running
    assert writer.writes[-1] == (["other/keep"], "9"), "only our finalizer is released, at that version"
    assert registry.get("uid-1") is None


@pytest.mark.looptime
async def test_deleted_event_stops_the_trigger(env: Any) -> None:
    registry, source, *_ = env
    registry.finalizers = Finalizers()
    await registry.observe(None, body(finalizers=[FINALIZER]))
    await registry.observe("DELETED", body(finalizers=[FINALIZER]))
    assert not source.built[0].is_running and registry.get("uid-1") is None


@pytest.mark.looptime
async def test_stepping_down_stops_single_active_triggers_and_writes_that_first(env: Any) -> None:
    registry, source, patcher, _, _ = env
    await registry.apply(resource())
    await settle()
    assert patcher.status["isRunning"] is True
    await registry.set_leading(False)
    assert not source.built[0].is_running
    assert patcher.status["isRunning"] is False, "written while still the leader"
    await registry.apply(resource(2))
    assert len(source.built) == 1, "a follower does not run single-active sources"
    await registry.set_leading(True)
    await settle()
    assert source.built[-1].is_running and patcher.status["observedGeneration"] == 2


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


def test_the_resource_creation_time_is_read_from_the_body() -> None:
    body = {"metadata": {"name": "t", "uid": "u", "creationTimestamp": "2026-03-02T09:00:00Z"}}
    created = Resource.from_body(body).created_at
    assert created is not None and created.isoformat() == "2026-03-02T09:00:00+00:00"
    assert Resource.from_body({"metadata": {"name": "t", "creationTimestamp": "garbage"}}).created_at is None


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


@pytest.mark.looptime
async def test_sharded_ownership_runs_only_owned_triggers_and_hands_over_with_a_final_flush(env: Any) -> None:
    """With an owner predicate (sharding), a trigger runs only while this replica owns it; giving it up
    stops it and flushes its counts, but not a phase: the trigger keeps running on its next owner."""
    registry, source, patcher, events, _ = env
    owned: set[str] = set()
    registry._owner = owned.__contains__
    await registry.apply(resource())
    await settle()
    assert source.built == [] and patcher.status == {} and events.events == []

    owned.add("uid-1")
    await registry.take_over({"uid-1"})
    await settle()
    assert source.built[-1].is_running
    assert patcher.status["phase"] == "Running" and patcher.status["isRunning"] is True
    await source.built[-1].run_now("a")
    await registry.hand_over({"uid-1"})
    owned.discard("uid-1")
    assert not source.built[-1].is_running
    assert patcher.status["jobsCreated"] == 1, "the counts are flushed before the shard is let go"
    assert patcher.status["isRunning"] is True, "no phase written on the way out"
    await registry.apply(resource(generation=2))
    await settle()
    assert len(source.built) == 1, "a spec change does not start a trigger this replica does not own"


@pytest.mark.looptime
async def test_a_deletion_seen_while_no_replica_owns_the_shard_is_finalized_by_the_next_owner(
    env: Any,
) -> None:
    registry, source, *_ = env
    owned: set[str] = set()
    registry._owner = owned.__contains__
    writer = registry.finalizers = Finalizers()
    await registry.observe("ADDED", body(finalizers=[FINALIZER]))
    await registry.observe("MODIFIED", body(finalizers=[FINALIZER], deleting=True, version="9"))
    assert writer.writes == [] and source.built == []
    owned.add("uid-1")
    await registry.take_over({"uid-1"})
    assert writer.writes == [([], "9")], "released by the shard's new owner"
    assert source.built == [], "and never started"
