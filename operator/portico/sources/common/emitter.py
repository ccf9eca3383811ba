"""Plumbing every source shares: creating a job from a template with provenance metadata, and keeping
the counters that become the resource's status."""

import logging
from datetime import UTC, datetime
from typing import Any

from portico.domain.input_policy import PolicyViolation, check_job
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator, job_context
from portico.ports.job_trigger import TriggerHealth
from portico.ports.trigger_events import LoggingTriggerEvents, TriggerEvents

logger = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 1024


class JobEmitter:
    """Creates the jobs of one trigger and keeps its health.

    Every job carries where it came from (`trigger.*` metadata), so a worker or an operator on call can
    trace a job back to the resource that created it.
    """

    def __init__(
        self,
        job_creator: JobCreator,
        *,
        ref: TriggerRef,
        source: str,
        template: JobTemplate | None = None,
        events: TriggerEvents | None = None,
    ) -> None:
        self.job_creator = job_creator
        self.ref = ref
        self.source = source
        self.template = template
        self.events = events or LoggingTriggerEvents(ref)
        self.jobs_created_count = 0
        self.errors_count = 0
        self.last_job_created: datetime | None = None
        self.last_job_id: str | None = None
        self.last_error: str | None = None

    def provenance(self) -> dict[str, str]:
        meta = {"trigger.name": self.ref.name, "trigger.source": self.source}
        if self.ref.namespace:
            meta["trigger.namespace"] = self.ref.namespace
        if self.ref.uid:
            meta["trigger.uid"] = self.ref.uid
        return meta

    async def emit(
        self,
        *,
        job_type: str | None = None,
        payload: dict[str, Any] | None = None,
        queue_name: str | None = None,
        priority: int | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Create one job. Unset fields come from the template; `payload` is merged over the
        template's payload. Raises `JobCreationError` (after counting it) when not accepted, without a
        retry when the job breaks the input policy (`portico.domain.input_policy`): whatever the source
        (AMQP message, database row, file), such a job is refused before it reaches the queue.

        The creator is called with the seed's four arguments; the idempotency key and the metadata
        (template, provenance, `metadata`) travel in the job context around the call, so a seed-style
        mock sees exactly `create_job(job_type=, payload=, queue_name=, priority=)`."""
        t = self.template
        resolved_type = job_type or (t.type if t else None)
        if not resolved_type:
            raise ValueError("a job type is required when the trigger has no job template")
        merged_payload = {**(t.payload if t else {}), **(payload or {})}
        merged_meta = {**(t.metadata if t else {}), **self.provenance(), **(metadata or {})}
        resolved_queue = queue_name or (t.queue if t else "default")
        try:
            check_job(
                job_type=resolved_type,
                queue_name=resolved_queue,
                payload=merged_payload,
                metadata=merged_meta,
            )
        except PolicyViolation as exc:
            self.record_error(f"job refused by the input policy: {exc}")
            raise JobCreationError(
                f"the job breaks the input policy: {exc}", retryable=False, status=400
            ) from None
        try:
            with job_context(idempotency_key=idempotency_key, metadata=merged_meta):
                job = await self.job_creator.create_job(
                    job_type=resolved_type,
                    payload=merged_payload,
                    queue_name=resolved_queue,
                    priority=priority if priority is not None else (t.priority if t else 0),
                )
        except JobCreationError as exc:
            self.record_error(f"job creation failed: {exc}")
            raise
        self.record_job(job)
        return job

    def record_job(self, job: Job) -> None:
        """Count a job, unless the queue service already had it (a retry or redelivery with the same
        idempotency key): `jobsCreated` counts jobs enqueued, not attempts."""
        if not job.existing:
            self.jobs_created_count += 1
        self.last_job_created = datetime.now(UTC)
        self.last_job_id = job.id
        self.events.changed()

    def record_error(self, message: str) -> None:
        self.errors_count += 1
        self.last_error = message[:MAX_ERROR_LENGTH]
        logger.warning("%s: %s", self.ref, self.last_error)
        self.events.changed()

    def health(self, *, is_running: bool, source_status: dict[str, Any] | None = None) -> TriggerHealth:
        return TriggerHealth(
            is_running=is_running,
            jobs_created_count=self.jobs_created_count,
            errors_count=self.errors_count,
            last_job_created=self.last_job_created,
            last_job_id=self.last_job_id,
            last_error=self.last_error,
            source_status=source_status or {},
        )
