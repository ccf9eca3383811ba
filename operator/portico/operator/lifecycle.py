"""The reconcile state machine of one resource: parse the spec, then start, reconfigure (make before
break), suspend or fail the trigger, and stop it gracefully. The registry calls it under the resource's
lock; retries go through the retry timer, Secret dependencies through the Secret watch."""

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from portico.domain.timestamps import rfc3339
from portico.domain.trigger import TriggerRef
from portico.operator.kube import EventSink, SecretCache
from portico.operator.managed import ManagedTrigger, log_fields
from portico.operator.projection import json_value
from portico.operator.resource import (
    RUN_NOW_ANNOTATION,
    ParsedSpec,
    Phase,
    SpecError,
    object_path,
    parse_spec,
)
from portico.operator.retry import RetryTimer
from portico.operator.secret_watch import SecretWatch
from portico.operator.status import StatusWriter
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_target import JobTarget, TargetContext
from portico.ports.job_trigger import JobTrigger, TriggerStartError
from portico.ports.run_now import RunsOnDemand
from portico.ports.trigger_events import EventType, TriggerEvents
from portico.ports.trigger_source import TriggerContext, TriggerSource

logger = logging.getLogger(__name__)


class _Events(TriggerEvents):
    """What a trigger reports: a status change to write, an Event to record (by its owner only)."""

    def __init__(self, lifecycle: "Lifecycle", uid: str, ref: TriggerRef) -> None:
        self.lifecycle = lifecycle
        self.uid = uid
        self.ref = ref

    def changed(self) -> None:
        self.lifecycle.status_writer.mark_dirty(self.uid)

    def event(self, type: EventType, reason: str, message: str) -> None:
        if self.lifecycle.owns(self.uid):
            self.lifecycle.events.record(self.ref, type, reason, message)


class Lifecycle:
    def __init__(
        self,
        *,
        sources: Mapping[str, TriggerSource[Any]],
        targets: Mapping[str, JobTarget[Any]],
        job_creator: JobCreator,
        status_writer: StatusWriter,
        events: EventSink,
        secrets: SecretCache,
        secret_watch: SecretWatch,
        retry: RetryTimer,
        owns: Callable[[str], bool],
        may_run: Callable[[str], bool] | None = None,
    ) -> None:
        self.sources = sources
        self.source_classes = tuple(type(s) for s in sources.values())
        self.targets = targets
        self.job_creator = job_creator
        self.status_writer = status_writer
        self.events = events
        self.secrets = secrets
        self.secret_watch = secret_watch
        self.retry = retry
        self.owns = owns
        """Whether this replica owns a trigger (by UID): the leader, or the holder of its shard. Only
        the owner runs a single-active source and posts Events."""
        self.may_run = may_run or owns

    async def reconcile(self, managed: ManagedTrigger) -> None:
        """Make the trigger match the resource's spec."""
        self.retry.cancel(managed)
        resource = managed.resource
        managed.applied_generation = resource.generation
        try:
            parsed = parse_spec(resource.spec, self.source_classes)
        except SpecError as exc:
            await self.stop(managed)
            self._fail(managed, "InvalidSpec", "The spec is invalid: " + "; ".join(exc.errors), retry=False)
            return
        managed.source = parsed.source
        if self.sources[parsed.source].single_active and not self.may_run(managed.uid):
            await self.stop(managed)
            managed.applied_generation = None
            return
        if parsed.suspend:
            was_running = managed.trigger is not None
            await self.stop(managed)
            self._set_phase(
                managed, "Suspended", "Suspended", "spec.suspend is true: the trigger is stopped."
            )
            if was_running:
                self._event(managed, "Normal", "Suspended", "Trigger stopped: spec.suspend is true.")
            return
        await self._start(managed, parsed)

    async def _start(self, managed: ManagedTrigger, parsed: ParsedSpec) -> None:
        source = self.sources[parsed.source]
        target = self.targets[parsed.target]
        target_spec = parsed.target_spec or target.spec_model()
        resource = managed.resource
        source_refs = list(source.secret_refs(parsed.source_spec))
        target_refs = list(target.secret_refs(target_spec))
        replacing = managed.trigger is not None
        new: JobTrigger | None = None
        creator: JobCreator | None = None
        # Make before break: the new trigger starts before the old one stops, so a reconfiguration
        # leaves no gap (a webhook path never answers 404 in between). Whatever both see during the
        # overlap (a due time, a file) carries the same idempotency key, so nothing is enqueued twice.
        try:
            await self.secret_watch.depend(managed, source_refs, target_refs)
            creator = target.build(
                target_spec,
                TargetContext(
                    ref=resource.ref,
                    shared=self.job_creator,
                    secrets=self.secrets.resolver(resource.ref.namespace),
                    object_path=object_path(resource.ref),
                ),
            )
            await target.check(target_spec, creator)
            context = TriggerContext(
                ref=resource.ref,
                template=parsed.job,
                job_creator=creator,
                events=_Events(self, managed.uid, resource.ref),
                secrets=self.secrets.resolver(resource.ref.namespace),
                annotations=resource.annotations,
                status=self._resume_status(managed),
                created_at=resource.created_at,
            )
            new = source.build(parsed.source_spec, context)
            await new.start()
        except TriggerStartError as exc:
            await self._discard(managed, new)
            await self._close_creator(creator)
            await self.stop(managed)
            self._fail(managed, exc.reason, str(exc), retry=exc.retryable)
            return
        except Exception as exc:
            logger.exception("unexpected error starting %s", resource.ref)
            await self._discard(managed, new)
            await self._close_creator(creator)
            await self.stop(managed)
            self._fail(
                managed,
                "StartFailed",
                f"Could not start the trigger: {type(exc).__name__}: {exc}",
                retry=True,
            )
            return
        previous, managed.trigger = managed.trigger, new
        previous_creator, managed.creator = managed.creator, creator
        managed.target = parsed.target
        if previous is not None:
            await self._retire(managed, previous)
        await self._close_creator(previous_creator)
        self.retry.succeeded(managed)
        managed.error = None
        logger.info("trigger %s started (%s)", resource.ref, parsed.source, extra=log_fields(managed))
        verb = "Reconfigured" if replacing else "Started"
        self._set_phase(managed, "Running", "Running", f"{verb}: the {parsed.source} trigger is running.")
        self._event(managed, "Normal", verb, f"The {parsed.source} trigger is running.")

    def _resume_status(self, managed: ManagedTrigger) -> dict[str, Any]:
        """The status a new trigger instance resumes from: the written status, overlaid with what the
        instance it replaces still holds in memory (a reconfiguration within the status writer's window
        must not lose `lastScheduleTime` or a counter). After a suspension, schedules must not catch up on
        the runs missed meanwhile, so they resume as from now."""
        status = dict(managed.resource.status)
        live = managed.health()
        if live is not None:
            # What this process knows is newer than what the coalescing writer has written so far.
            status.update({k: json_value(v) for k, v in live.source_status.items() if v is not None})
        if managed.phase == "Suspended" or status.get("phase") == "Suspended":
            status["resumedAt"] = rfc3339(datetime.now(UTC))
        return status

    async def stop(self, managed: ManagedTrigger) -> None:
        """Stop the running trigger, if any, and close its own job creator."""
        trigger, managed.trigger = managed.trigger, None
        creator, managed.creator = managed.creator, None
        if trigger is not None:
            await self._retire(managed, trigger)
        await self._close_creator(creator)

    async def _close_creator(self, creator: JobCreator | None) -> None:
        """Close a trigger's own job creator once its trigger stopped (never the shared one)."""
        if creator is None or creator is self.job_creator:
            return
        try:
            await creator.close()
        except Exception:
            logger.exception("error closing a job creator")

    async def _retire(self, managed: ManagedTrigger, trigger: JobTrigger) -> None:
        """Stop a trigger gracefully (its in-flight job creations finish) and keep what it counted."""
        try:
            await trigger.stop()
        except Exception:
            logger.exception("error stopping %s", managed.ref)
        else:
            logger.info("trigger %s stopped", managed.ref, extra=log_fields(managed))
        health = trigger.get_health()
        managed.base_jobs += health.jobs_created_count
        managed.base_errors += health.errors_count
        managed.last_health = health
        self.status_writer.mark_dirty(managed.uid)

    async def _discard(self, managed: ManagedTrigger, trigger: JobTrigger | None) -> None:
        """Undo whatever a failed start() left behind."""
        if trigger is not None:
            try:
                await trigger.stop()
            except Exception:
                logger.exception("error cleaning up a trigger of %s that failed to start", managed.ref)

    def _fail(self, managed: ManagedTrigger, reason: str, message: str, *, retry: bool) -> None:
        managed.errors += 1
        managed.error = message
        if retry:
            delay = self.retry.schedule(managed)
            message_with_retry = f"{message} (retrying in {delay:.0f}s)"
        else:
            message_with_retry = message
        self._set_phase(managed, "Failed", reason, message_with_retry)
        logger.warning("trigger %s failed: %s", managed.ref, message_with_retry, extra=log_fields(managed))
        self._event(managed, "Warning", reason, message)

    def _set_phase(self, managed: ManagedTrigger, phase: Phase, reason: str, message: str) -> None:
        if (managed.phase, managed.reason) != (phase, reason):
            managed.transition = datetime.now(UTC)
        managed.phase, managed.reason, managed.message = phase, reason, message
        self.status_writer.mark_dirty(managed.uid, urgent=True)

    def _event(self, managed: ManagedTrigger, type: EventType, reason: str, message: str) -> None:
        if self.owns(managed.uid):
            self.events.record(managed.ref, type, reason, message)

    async def run_now_if_asked(self, managed: ManagedTrigger) -> None:
        """A new value of the run-now annotation fires the trigger once, if its source can."""
        token = managed.resource.annotations.get(RUN_NOW_ANNOTATION)
        if not token or token == managed.run_now_seen:
            return
        managed.run_now_seen = token
        trigger = managed.trigger
        if not isinstance(trigger, RunsOnDemand):
            why = (
                "the trigger is not running"
                if trigger is None
                else f"the {managed.source} source cannot run on demand"
            )
            self._event(managed, "Warning", "RunNowUnsupported", f"Manual run {token!r} ignored: {why}.")
            return
        try:
            job = await trigger.run_now(token)
        except JobCreationError as exc:
            self._event(managed, "Warning", "RunNowFailed", f"Manual run {token!r} failed: {exc}")
            return
        self._event(managed, "Normal", "RunNow", f"Manual run {token!r} created job {job.id}.")
