"""What the operator holds for each JobTrigger resource it knows: the running trigger, its job creator,
the phase it reports, its counters across trigger instances, its Secret dependencies and pending retry."""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from portico.domain.trigger import TriggerRef
from portico.operator.resource import Phase, Resource
from portico.ports.job_creator import JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth


@dataclass
class ManagedTrigger:
    resource: Resource
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    trigger: JobTrigger | None = None
    source: str | None = None
    target: str | None = None
    creator: JobCreator | None = None
    """The job creator of the running trigger (may be the registry's shared one)."""
    phase: Phase = "Pending"
    reason: str = "Pending"
    message: str = "The trigger has not been started yet."
    transition: datetime = field(default_factory=lambda: datetime.now(UTC))
    applied_generation: int | None = None
    error: str | None = None
    errors: int = 0
    base_jobs: int = 0
    base_errors: int = 0
    attempt: int = 0
    retry: asyncio.Task[None] | None = None
    secrets: frozenset[tuple[str, str]] = frozenset()
    target_secrets: frozenset[tuple[str, str]] = frozenset()
    run_now_seen: str | None = None
    last_health: TriggerHealth | None = None
    ready: tuple[str, str] = ("False", "Pending")

    @property
    def uid(self) -> str:
        return self.resource.ref.uid

    @property
    def ref(self) -> TriggerRef:
        return self.resource.ref

    def health(self) -> TriggerHealth | None:
        """The running trigger's health, or the last one a stopped trigger left."""
        return self.trigger.get_health() if self.trigger is not None else self.last_health

    @property
    def running(self) -> bool:
        return self.trigger is not None and self.trigger.is_running


def log_fields(managed: ManagedTrigger) -> dict[str, str]:
    ref = managed.ref
    return {"trigger_namespace": ref.namespace, "trigger_name": ref.name, "trigger_uid": ref.uid}
