"""The port every event source implements: something that can be started and stopped and, while
running, creates jobs."""

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class TriggerHealth(BaseModel):
    """A snapshot of a trigger's health, read by the status writer and the metrics."""

    is_running: bool
    jobs_created_count: int = 0
    errors_count: int = 0
    last_job_created: datetime | None = None
    last_job_id: str | None = None
    last_error: str | None = None
    source_status: dict[str, Any] = Field(
        default_factory=dict,
        description="Source-specific status fields, camelCase, e.g. nextScheduleTime or webhookPath.",
    )


class JobTrigger(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Begin creating jobs. Idempotent: starting a running trigger does nothing.

        Raises `TriggerStartError` when the source cannot be reached or is misconfigured.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Stop gracefully: in-flight job creations finish or are cancelled cleanly, resources are
        closed. Idempotent."""

    @property
    @abstractmethod
    def is_running(self) -> bool:
        """True exactly while the trigger can create jobs."""

    def get_health(self) -> TriggerHealth:
        """Counters and last job; this default knows only `is_running`, so a trigger written as in
        the seed (start, stop, is_running) works unchanged. Triggers that count override it."""
        return TriggerHealth(is_running=self.is_running)


class TriggerStartError(Exception):
    """A trigger could not start. The message is shown to users in status and Events, so it says
    what is wrong in words they can act on, and never contains a secret."""

    def __init__(self, message: str, *, reason: str = "StartFailed", retryable: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
