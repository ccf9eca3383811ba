"""`HttpJobQueue`: the `JobQueue` port over the reference queue service's HTTP contract.

It is an `HttpJobCreator` too (one connection pool, the same retry rules, the same redaction of
credentials), extended with the lease cycle workers need. Lease calls get their own deadline, shorter
than a lease: a worker must learn in time that it could not renew or report, rather than wait past
the point where someone else holds the job.
"""

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pydantic
from yarl import URL

from portico.adapters.job_creator.http import HttpJobCreator
from portico.ports.job_creator import Job, JobCreationError
from portico.ports.job_queue import JobQueue, JobQueueError, LeaseLost

_ClaimedJobs = pydantic.TypeAdapter(list[Job])


class HttpJobQueue(HttpJobCreator, JobQueue):
    def __init__(self, base_url: str, *, lease_call_deadline: float = 10.0, **options: Any) -> None:
        super().__init__(base_url, **options)
        if lease_call_deadline <= 0:
            raise ValueError("lease_call_deadline must be positive")
        self._lease_call_deadline = lease_call_deadline
        self._json_headers = {"Content-Type": "application/json"}

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
        return await self._create(
            job_type, payload, queue_name, priority, metadata, idempotency_key, max_attempts
        )

    async def get(self, job_id: str) -> Job | None:
        try:
            return await self.get_job(job_id)
        except JobCreationError as exc:
            raise JobQueueError(str(exc), retryable=exc.retryable, status=exc.status) from None

    def _job_url(self, job_id: str, action: str) -> URL:
        return URL(f"{self._base}/v1/jobs/{quote(job_id, safe='')}/{action}", encoded=True)

    async def _post(self, url: URL, body: dict[str, Any], what: str) -> tuple[int, bytes]:
        try:
            return await self._request(
                "POST",
                url,
                what=what,
                body=json.dumps(body, separators=(",", ":")).encode(),
                headers=self._json_headers,
                deadline_seconds=self._lease_call_deadline,
            )
        except JobCreationError as exc:
            raise JobQueueError(str(exc), retryable=exc.retryable, status=exc.status) from None

    def _answer(self, what: str, status: int, data: bytes) -> Job:
        if status == 409:
            raise LeaseLost(f"{what}: the lease is no longer held")
        if status == 404:
            raise LeaseLost(f"{what}: the queue service does not know the job")
        if status != 200:
            rejected = self._rejected(what, status, data)
            raise JobQueueError(str(rejected), retryable=False, status=status)
        try:
            return self._job(what, status, data)
        except JobCreationError as exc:
            raise JobQueueError(str(exc), retryable=False, status=status) from None

    async def claim(
        self, queue_name: str, *, worker: str, lease_seconds: float, limit: int = 1
    ) -> Sequence[Job]:
        what = f"claiming from queue {queue_name!r}"
        url = URL(f"{self._base}/v1/queues/{quote(queue_name, safe='')}/claim", encoded=True)
        body = {"worker": worker, "lease_seconds": lease_seconds, "limit": limit}
        status, data = await self._post(url, body, what)
        if status != 200:
            rejected = self._rejected(what, status, data)
            raise JobQueueError(str(rejected), retryable=False, status=status)
        try:
            return _ClaimedJobs.validate_json(_jobs_array(data))
        except (pydantic.ValidationError, ValueError):
            raise JobQueueError(f"{what}: the answer holds no valid jobs", retryable=False) from None

    async def extend(self, job_id: str, *, lease_id: str, lease_seconds: float) -> datetime:
        what = f"extending the lease of job {job_id!r}"
        body = {"lease_id": lease_id, "lease_seconds": lease_seconds}
        status, data = await self._post(self._job_url(job_id, "extend"), body, what)
        job = self._answer(what, status, data)
        if job.lease_expires_at is None:
            raise JobQueueError(f"{what}: the answer has no lease_expires_at", retryable=False)
        return job.lease_expires_at

    async def complete(self, job_id: str, *, lease_id: str) -> Job:
        what = f"completing job {job_id!r}"
        status, data = await self._post(self._job_url(job_id, "complete"), {"lease_id": lease_id}, what)
        return self._answer(what, status, data)

    async def fail(
        self, job_id: str, *, lease_id: str, error: str, retry: bool = True, retry_delay: float = 0.0
    ) -> Job:
        what = f"failing job {job_id!r}"
        body = {"lease_id": lease_id, "error": error, "retry": retry, "retry_delay_seconds": retry_delay}
        status, data = await self._post(self._job_url(job_id, "fail"), body, what)
        return self._answer(what, status, data)


def _jobs_array(data: bytes) -> bytes:
    """The `jobs` array of a claim answer, without decoding the whole document twice: the service
    answers `{"jobs":[...]}`; anything else is decoded and re-encoded the slow way."""
    head = b'{"jobs":'
    if data.startswith(head) and data.endswith(b"}"):
        return data[len(head) : -1]
    document = json.loads(data)
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        raise ValueError("no jobs array")
    return json.dumps(document["jobs"]).encode()
