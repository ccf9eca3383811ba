"""`InMemoryJobQueue`: the queue service's semantics (idempotent enqueue, priority order, leases,
retries, dead jobs) in one process. For tests on a fast-forwarded clock, for examples, and for
applications that run triggers and workers in the same process."""

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from portico.ports.job_creator import Job, JobStatus
from portico.ports.job_queue import JobQueue, LeaseLost


class InMemoryJobQueue(JobQueue):
    def __init__(self, *, clock: Callable[[], float] = time.time, default_max_attempts: int = 3) -> None:
        self._clock = clock
        """Seconds since the epoch; leases and retry delays read time only through it."""
        self._default_max_attempts = default_max_attempts
        self.jobs: dict[str, Job] = {}
        self._by_key: dict[str, str] = {}
        self._run_at: dict[str, float] = {}
        self._lease_ends: dict[str, float] = {}
        self.history: list[tuple[str, str]] = []
        """(job id, event) in order: claimed, extended, completed, retried, failed, dead, expired."""

    def _when(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    def _update(self, job_id: str, **changes: Any) -> Job:
        job = self.jobs[job_id].model_copy(update={"updated_at": self._when(self._clock()), **changes})
        self.jobs[job_id] = job
        return job

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
        if idempotency_key is not None and idempotency_key in self._by_key:
            return self.jobs[self._by_key[idempotency_key]].model_copy(update={"existing": True})
        now = self._clock()
        job = Job(
            id=str(uuid.uuid4()),
            job_type=job_type,
            queue_name=queue_name,
            payload=payload,
            priority=priority,
            metadata=dict(metadata or {}),
            idempotency_key=idempotency_key,
            created_at=self._when(now),
            run_at=self._when(now),
            max_attempts=max_attempts or self._default_max_attempts,
        )
        self.jobs[job.id] = job
        self._run_at[job.id] = now
        if idempotency_key is not None:
            self._by_key[idempotency_key] = job.id
        return job

    async def get(self, job_id: str) -> Job | None:
        self._expire_leases()
        return self.jobs.get(job_id)

    def _expire_leases(self) -> None:
        now = self._clock()
        for job_id, ends in list(self._lease_ends.items()):
            if ends <= now:
                del self._lease_ends[job_id]
                job = self.jobs[job_id]
                dead = job.attempts >= job.max_attempts
                self._run_at[job_id] = now
                self._update(
                    job_id,
                    status=JobStatus.DEAD if dead else JobStatus.PENDING,
                    last_error="lease expired",
                    lease_id=None,
                    lease_expires_at=None,
                )
                self.history.append((job_id, "expired"))

    async def claim(
        self, queue_name: str, *, worker: str, lease_seconds: float, limit: int = 1
    ) -> Sequence[Job]:
        self._expire_leases()
        now = self._clock()
        runnable = sorted(
            (
                job
                for job in self.jobs.values()
                if job.queue_name == queue_name
                and job.status == JobStatus.PENDING
                and self._run_at[job.id] <= now
            ),
            key=lambda job: (-job.priority, job.created_at),
        )
        claimed = []
        for job in runnable[:limit]:
            self._lease_ends[job.id] = now + lease_seconds
            claimed.append(
                self._update(
                    job.id,
                    status=JobStatus.RUNNING,
                    attempts=job.attempts + 1,
                    lease_id=uuid.uuid4().hex,
                    lease_expires_at=self._when(now + lease_seconds),
                    worker=worker,
                )
            )
            self.history.append((job.id, "claimed"))
        return claimed

    def _held(self, job_id: str, lease_id: str) -> Job:
        self._expire_leases()
        job = self.jobs.get(job_id)
        if job is None or job.status != JobStatus.RUNNING or job.lease_id != lease_id:
            raise LeaseLost(f"the lease of job {job_id!r} is no longer held")
        return job

    async def extend(self, job_id: str, *, lease_id: str, lease_seconds: float) -> datetime:
        self._held(job_id, lease_id)
        ends = self._clock() + lease_seconds
        self._lease_ends[job_id] = ends
        job = self._update(job_id, lease_expires_at=self._when(ends))
        self.history.append((job_id, "extended"))
        assert job.lease_expires_at is not None
        return job.lease_expires_at

    async def complete(self, job_id: str, *, lease_id: str) -> Job:
        self._held(job_id, lease_id)
        del self._lease_ends[job_id]
        self.history.append((job_id, "completed"))
        return self._update(job_id, status=JobStatus.COMPLETED, lease_id=None, lease_expires_at=None)

    async def fail(
        self, job_id: str, *, lease_id: str, error: str, retry: bool = True, retry_delay: float = 0.0
    ) -> Job:
        job = self._held(job_id, lease_id)
        del self._lease_ends[job_id]
        now = self._clock()
        if not retry:
            status = JobStatus.FAILED
        elif job.attempts >= job.max_attempts:
            status = JobStatus.DEAD
        else:
            status = JobStatus.PENDING
        run_at = now + retry_delay if status == JobStatus.PENDING else now
        self._run_at[job_id] = run_at
        self.history.append((job_id, "retried" if status == JobStatus.PENDING else str(status)))
        return self._update(
            job_id,
            status=status,
            last_error=error,
            run_at=self._when(run_at),
            lease_id=None,
            lease_expires_at=None,
        )
