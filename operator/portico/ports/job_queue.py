"""The port of the queue itself, as workers and `JobService` see it: enqueue, read, and the lease cycle
(claim, extend, complete, fail).

A claimed job carries a `lease_id`. Every later call about it must present that lease: a worker whose
lease ran out (it hung, or was partitioned away) and whose job was claimed again gets `LeaseLost`, so it
can never overwrite the new holder's result.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from portico.ports.job_creator import Job


class JobQueueError(Exception):
    """A queue operation did not happen. `retryable`: the same call may succeed later (the queue is
    unreachable or overloaded) rather than never (rejected input, bad credentials)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class LeaseLost(JobQueueError):
    """The lease is no longer held: it expired, and the job went back to the queue or to someone else.
    Whatever the holder did, it must not report the job as done."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False, status=409)


class JobQueue(ABC):
    @abstractmethod
    async def enqueue(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        """Store a job, or return the one stored under `idempotency_key` (then `existing` is True).

        Raises `JobCreationError` when the job was not accepted.
        """

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """The job's current state, or None if the queue does not know it."""

    @abstractmethod
    async def claim(
        self, queue_name: str, *, worker: str, lease_seconds: float, limit: int = 1
    ) -> Sequence[Job]:
        """Lease up to `limit` runnable jobs, highest priority first, oldest first within a priority.
        Each returned job has `lease_id` and `lease_expires_at` set. An empty result means nothing is
        runnable now."""

    @abstractmethod
    async def extend(self, job_id: str, *, lease_id: str, lease_seconds: float) -> datetime:
        """Hold the lease `lease_seconds` longer from now; returns the new expiry. `LeaseLost` if the
        lease is no longer held."""

    @abstractmethod
    async def complete(self, job_id: str, *, lease_id: str) -> Job:
        """The job is done. `LeaseLost` if the lease is no longer held."""

    @abstractmethod
    async def fail(
        self, job_id: str, *, lease_id: str, error: str, retry: bool = True, retry_delay: float = 0.0
    ) -> Job:
        """Record a failed attempt: with `retry`, the job is runnable again after `retry_delay` while it
        has attempts left and `dead` after that; without, it is `failed` at once. `LeaseLost` if the
        lease is no longer held."""

    async def close(self) -> None:
        """Release connections. Idempotent."""
