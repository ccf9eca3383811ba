"""A fake source at our own port boundary, and fakes of the operator's Kubernetes writers, for the
tests of the registry and its parts (the real sources and API server are exercised in tests/e2e)."""

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef, TriggerRef
from portico.operator.finalizers import FinalizerWriter
from portico.operator.kube import EventSink
from portico.operator.resource import Resource
from portico.operator.status import ObjectStatus, StatusPatcher
from portico.ports.job_creator import Job
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.run_now import RunsOnDemand
from portico.ports.trigger_events import EventType
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.common.emitter import JobEmitter


class FakeSpec(SpecModel):
    """Fake source."""

    label: str = Field(default="x", description="Label.")
    fail: str | None = Field(default=None, description="Make start() fail with this message.")
    secret: SecretRef | None = Field(default=None, description="A Secret read at start.")
    report: dict[str, Any] | None = Field(
        default=None, description="More source status keys to report, declared or not."
    )


class FakeStatus(SpecModel):
    label: str | None = Field(default=None, description="The spec's label.")


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
        status = {"label": self.spec.label, **(self.spec.report or {})}
        return self.emitter.health(is_running=self.running, source_status=status)


class OnDemandFakeTrigger(FakeTrigger, RunsOnDemand):
    async def run_now(self, token: str) -> Job:
        return await self.emitter.emit(idempotency_key=f"{self.context.ref.key}:run-now:{token}")


class FakeSource(TriggerSource[FakeSpec]):
    name: ClassVar[str] = "fake"
    spec_model: ClassVar[type[SpecModel]] = FakeSpec
    status_model: ClassVar[type[SpecModel]] = FakeStatus

    def __init__(self, *, single_active: bool = True) -> None:
        self.built: list[FakeTrigger] = []
        self.on_demand = True
        """Whether its triggers can run on demand (the run-now annotation)."""
        self._single_active = single_active

    @property
    def single_active(self) -> bool:
        return self._single_active

    def secret_refs(self, spec: FakeSpec) -> list[SecretRef]:
        return [spec.secret] if spec.secret else []

    def build(self, spec: FakeSpec, context: TriggerContext) -> JobTrigger:
        trigger = (OnDemandFakeTrigger if self.on_demand else FakeTrigger)(spec, context)
        self.built.append(trigger)
        return trigger


class Patcher(StatusPatcher):
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.preconditions: list[str | None] = []

    async def patch_status(
        self, ref: TriggerRef, patch: dict[str, Any], resource_version: str | None = None
    ) -> ObjectStatus:
        self.preconditions.append(resource_version)
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


class Finalizers(FinalizerWriter):
    """Records finalizer writes; with `after`, each write succeeds and leaves the object at that
    version with that status, as the API server's answer says."""

    def __init__(self, after: ObjectStatus | None = None) -> None:
        self.writes: list[tuple[list[str], str]] = []
        self.labels: list[dict[str, str]] = []
        """The labels of each write that set any, finalizer writes and label-only writes alike."""
        self.after = after

    async def set_finalizers(
        self,
        ref: TriggerRef,
        finalizers: list[str],
        resource_version: str,
        labels: Mapping[str, str] | None = None,
    ) -> ObjectStatus | None:
        self.writes.append((finalizers, resource_version))
        if labels:
            self.labels.append(dict(labels))
        return self.after

    async def set_labels(self, ref: TriggerRef, labels: Mapping[str, str]) -> None:
        self.labels.append(dict(labels))


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


def body(
    *,
    finalizers: list[str] | None = None,
    deleting: bool = False,
    version: str = "7",
    generation: int = 1,
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "t",
        "labels": labels or {},
        "namespace": "ns",
        "uid": "uid-1",
        "generation": generation,
        "creationTimestamp": "2026-11-28T09:00:00Z",
        "resourceVersion": version,
        "finalizers": finalizers or [],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T10:00:00Z"
    return {"metadata": meta, "spec": {"job": {"type": "x"}, "fake": {}}, "status": status or {}}


async def settle() -> None:
    """Longer than the status writer's interval, so what is dirty has been written."""
    await asyncio.sleep(1.5)
