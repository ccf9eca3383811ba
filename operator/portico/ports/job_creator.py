"""The port through which every trigger enqueues work: a job-queue service."""

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from enum import StrEnum
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


class JobCreator(ABC):
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

        Raises `JobCreationError` when the job was not accepted.
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> Job | None:
        """The job's current state, or None if the queue service does not know it. Implementations
        may also accept a `UUID`."""

    async def close(self) -> None:
        """Release connections. Idempotent."""
