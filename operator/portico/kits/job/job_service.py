"""`JobService`: the seed's kit that implements the `JobCreator` port over any `JobQueue` adapter, so
triggers depend on the port while the application picks the queue (HTTP, in memory, its own)."""

from typing import Any
from uuid import UUID

from portico.ports.job_creator import Job, JobCreator
from portico.ports.job_queue import JobQueue


class JobService(JobCreator):
    def __init__(self, job_queue: JobQueue, *, max_attempts: int | None = None) -> None:
        self.job_queue = job_queue
        self.max_attempts = max_attempts
        """Attempts given to every job this service creates; None: the queue's default."""

    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        metadata, idempotency_key = self.with_context(metadata, idempotency_key)
        return await self.job_queue.enqueue(
            job_type,
            payload,
            queue_name=queue_name,
            priority=priority,
            metadata=metadata,
            idempotency_key=idempotency_key,
            max_attempts=self.max_attempts,
        )

    async def get_job(self, job_id: str | UUID) -> Job | None:
        return await self.job_queue.get(str(job_id))

    async def close(self) -> None:
        """Closes the queue it was given: the service owns its adapter, as `HttpJobCreator` owns its
        connection pool."""
        await self.job_queue.close()
