"""An in-process job creator: for library users who consume jobs in the same process, for examples,
and as the fake at our own port boundary in tests."""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from portico.ports.job_creator import Job, JobCreator, JobStatus


class InMemoryJobCreator(JobCreator):
    """Keeps jobs in a dict with the queue service's idempotency semantics (same key, same job)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._by_key: dict[str, str] = {}
        self.created = asyncio.Event()

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
        if idempotency_key is not None and idempotency_key in self._by_key:
            return self.jobs[self._by_key[idempotency_key]].model_copy(update={"existing": True})
        job = Job(
            id=str(uuid.uuid4()),
            job_type=job_type,
            queue_name=queue_name,
            payload=payload,
            priority=priority,
            metadata=dict(metadata or {}),
            idempotency_key=idempotency_key,
            created_at=datetime.now(UTC),
        )
        self.jobs[job.id] = job
        if idempotency_key is not None:
            self._by_key[idempotency_key] = job.id
        self.created.set()
        return job

    async def get_job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def set_status(self, job_id: str, status: JobStatus) -> None:
        self.jobs[job_id] = self.jobs[job_id].model_copy(update={"status": status})
