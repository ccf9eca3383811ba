"""The port between the operator and a target: one `JobTarget` per kind of system that receives a
trigger's jobs (the queue service, a CloudEvents sink, ...) turns a validated `spec.target` block into
the `JobCreator` the trigger creates its jobs through.

Triggers only see the `JobCreator` port, so every source works with every target, and each target
keeps the port's promise: a job is accepted or `JobCreationError` is raised, and the same idempotency
key never yields a second job.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef, TriggerRef
from portico.ports.job_creator import JobCreator
from portico.ports.trigger_source import SecretResolver, StaticSecrets


@dataclass(frozen=True)
class TargetContext:
    """What a target needs to build one trigger's job creator besides its own spec block."""

    ref: TriggerRef
    shared: JobCreator
    """The operator's own job creator (the queue service named by `--queue-url`)."""
    secrets: SecretResolver = field(default_factory=StaticSecrets)
    object_path: str = ""
    """The resource's API path (`/apis/<group>/<version>/namespaces/<ns>/jobtriggers/<name>`), for
    targets that name where a job came from; empty for library use."""


SpecT = TypeVar("SpecT", bound=SpecModel)


class JobTarget(ABC, Generic[SpecT]):
    """One kind of target. `name` is the key of its block under `spec.target` (`queueService`, ...)."""

    name: ClassVar[str]
    spec_model: ClassVar[type[SpecModel]]

    def secret_refs(self, spec: SpecT) -> Sequence[SecretRef]:
        """The Secrets this spec reads, so the operator watches them and rebuilds on change."""
        return ()

    async def check(self, spec: SpecT, creator: JobCreator) -> None:
        """Called once before the trigger starts: raise `TriggerStartError` when the target will refuse
        every job as configured (a template the system rejects, missing permissions), so the trigger
        fails at once with the reason instead of at its first event."""

    @abstractmethod
    def build(self, spec: SpecT, context: TargetContext) -> JobCreator:
        """The job creator for one trigger. It may be `context.shared`; any other creator belongs to
        the trigger and is closed when the trigger stops. Raises `TriggerStartError` for what the
        schema could not catch (a Secret that does not exist yet, a URL that cannot be used)."""
