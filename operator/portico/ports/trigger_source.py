"""The port between the operator and an event source: one `TriggerSource` per kind of source (schedule,
webhook, ...) turns a validated spec block into a running `JobTrigger`.

A source object lives as long as the operator process and owns what its triggers share (the
process-wide scheduler, the webhook HTTP server). The operator keeps one per source name, as Argo Events
keeps one eventing server per event-source type.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from portico.domain.model import SpecModel
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_creator import JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerStartError
from portico.ports.trigger_events import TriggerEvents


class SecretNotFoundError(TriggerStartError):
    """A referenced Secret or key does not exist (yet). Retried when the Secret appears."""

    def __init__(self, ref: SecretRef, namespace: str, detail: str = "not found") -> None:
        super().__init__(f"{ref} in namespace {namespace!r}: {detail}", reason="SecretNotFound")
        self.ref = ref


class SecretResolver(ABC):
    """Reads referenced Secret values. Values are read at use, so a trigger that looks them up per
    request (a webhook's HMAC key) sees a rotation without being rebuilt."""

    @abstractmethod
    def get(self, ref: SecretRef) -> str:
        """The value of `ref`, decoded. Raises `SecretNotFoundError`. Never log the result."""


class StaticSecrets(SecretResolver):
    """Secrets given up front: for library use and tests."""

    def __init__(self, values: Mapping[tuple[str, str], str] | None = None, namespace: str = "") -> None:
        self.values: dict[tuple[str, str], str] = dict(values or {})
        self.namespace = namespace

    def get(self, ref: SecretRef) -> str:
        try:
            return self.values[(ref.name, ref.key)]
        except KeyError:
            raise SecretNotFoundError(ref, self.namespace) from None


@dataclass(frozen=True)
class TriggerContext:
    """Everything a source needs to build one trigger besides its own spec block."""

    ref: TriggerRef
    template: JobTemplate
    job_creator: JobCreator
    events: TriggerEvents
    secrets: SecretResolver = field(default_factory=StaticSecrets)
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    """The resource's last written status (e.g. `lastScheduleTime`), so a trigger resumes where it left
    off after an operator restart or fail-over."""
    created_at: datetime | None = None
    """When the resource was created (`metadata.creationTimestamp`): where a schedule that has no
    `lastScheduleTime` yet starts counting its runs, so a crash before the first status write loses none."""


SpecT = TypeVar("SpecT", bound=SpecModel)


class NoSourceStatus(SpecModel):
    """The status model of a source that reports no fields of its own."""


class TriggerSource(ABC, Generic[SpecT]):
    """One kind of event source. `name` is the spec block's key (`schedule`, `databasePoll`, ...).
    `spec_model` is its spec block; `status_model` declares every key its triggers report in
    `TriggerHealth.source_status` (camelCase), so the CRD's status schema holds them and the operator
    can tell a key the API server would prune."""

    name: ClassVar[str]
    spec_model: ClassVar[type[SpecModel]]
    status_model: ClassVar[type[SpecModel]] = NoSourceStatus

    async def open(self) -> None:
        """Start what this source's triggers share. Called once before any build()."""

    async def close(self) -> None:
        """Stop what open() started. Triggers are stopped before this is called."""

    def secret_refs(self, spec: SpecT) -> Sequence[SecretRef]:
        """The Secrets this spec reads, so the operator can watch them and rebuild on change."""
        return ()

    @property
    def single_active(self) -> bool:
        """True where only one operator replica may run the trigger (schedules, queues, polling);
        False where every replica serves it (webhooks)."""
        return True

    @property
    def reads_secrets_live(self) -> bool:
        """True where triggers read their Secrets at each use (so a rotation needs no rebuild)."""
        return False

    @abstractmethod
    def build(self, spec: SpecT, context: TriggerContext) -> JobTrigger:
        """A trigger for this spec, not yet started. Raises `TriggerStartError` for what the schema
        could not catch."""
