"""The port through which every trigger enqueues work: a job-queue service.

A trigger calls `create_job` with the seed's four arguments (type, payload, queue, priority), so a
plain `AsyncMock(spec=JobCreator)` sees exactly the call the seed's tests assert. What makes a job safe
to retry and traceable, its idempotency key and provenance metadata, travels beside the call in a
`JobContext` (`with job_context(...)`); every `JobCreator` merges it with the explicit arguments
through `JobCreator.with_context`.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator


class JobStatus(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    """Waiting for its time (a delayed retry, a job enqueued for later), in queues that report it apart
    from `pending`; the reference queue service reports such jobs as `pending` with a future `run_at`."""
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"

    @property
    def is_active(self) -> bool:
        """Still to be worked on: what a schedule's `Forbid` concurrency policy waits for."""
        return self in (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING)


class Job(BaseModel):
    """A job as the queue service reports it. `id` is kept as text; a `UUID` is accepted and stored in
    its canonical text form, so jobs built in code (`Job(id=uuid4(), ...)`) compare with those read
    from the service."""

    model_config = ConfigDict(extra="ignore")

    id: str
    job_type: str
    queue_name: str = "default"
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    metadata: dict[str, str] = Field(default_factory=dict)
    status: JobStatus = JobStatus.PENDING
    idempotency_key: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime | None = None
    run_at: datetime | None = None
    attempts: int = 0
    max_attempts: int = 3
    last_error: str | None = None
    lease_id: str | None = None
    """Set while the job is claimed: the holder's proof, required to extend, complete or fail it."""
    lease_expires_at: datetime | None = None
    worker: str | None = None
    existing: bool = Field(
        default=False,
        exclude=True,
        description="Set by create_job: the queue service already had this job for the idempotency key "
        "(a retry, a redelivery, a fail-over replay), so nothing new was enqueued.",
    )

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, UUID) else value


class JobCreationError(Exception):
    """A job could not be created. `retryable` says whether the same request may succeed later
    (queue service unavailable, overloaded) or never will (rejected input, bad credentials)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class JobContext:
    """The idempotency key and metadata of the job about to be created, set around a `create_job` call
    by `job_context`. Immutable, so a context seen by one call can never change under another."""

    idempotency_key: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def merged(self, metadata: Mapping[str, str] | None, idempotency_key: str | None) -> "JobContext":
        """This context with explicit values over it: a key given wins, metadata given is merged over."""
        return JobContext(
            idempotency_key if idempotency_key is not None else self.idempotency_key,
            {**self.metadata, **(metadata or {})},
        )


NO_JOB_CONTEXT = JobContext()
_current_job_context: ContextVar[JobContext] = ContextVar("portico_job_context", default=NO_JOB_CONTEXT)


def current_job_context() -> JobContext:
    """The job context in force in this task (empty outside any `job_context`)."""
    return _current_job_context.get()


@contextmanager
def job_context(
    *, idempotency_key: str | None = None, metadata: Mapping[str, str] | None = None
) -> Iterator[JobContext]:
    """Give the jobs created inside the block an idempotency key and metadata, without passing them to
    `create_job`.

    Nested blocks build on the outer one: the innermost key given wins, metadata is merged (inner over
    outer). The context lives in a `ContextVar`, so it follows the task that set it: concurrent tasks on
    one loop never see each other's, and a task started inside the block keeps the block's context.
    """
    context = current_job_context().merged(metadata, idempotency_key)
    token = _current_job_context.set(context)
    try:
        yield context
    finally:
        _current_job_context.reset(token)


class JobCreator(ABC):
    """Creates jobs. Every implementation honours the job context: it reads its key and metadata through
    `with_context`, so a key set with `job_context` deduplicates exactly like one passed explicitly."""

    @staticmethod
    def with_context(
        metadata: Mapping[str, str] | None, idempotency_key: str | None
    ) -> tuple[dict[str, str], str | None]:
        """The metadata and idempotency key of this call: the explicit arguments over the job context
        in force (an explicit key wins, explicit metadata is merged over the context's)."""
        context = current_job_context().merged(metadata, idempotency_key)
        return dict(context.metadata), context.idempotency_key

    @abstractmethod
    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Create a job, or return the existing one when `idempotency_key` was seen before.

        `metadata` and `idempotency_key` are merged over the job context (`with_context`): triggers set
                them with `job_context` and pass only the job's type, payload, queue and priority.

        Raises `JobCreationError` when the job was not accepted.
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None:
        """The job's current state, or None if the queue service does not know it. Implementations
        may also accept a `UUID`."""

    async def close(self) -> None:
        """Release connections. Idempotent."""
