"""The in-process triggers, keyed by resource UID, and their lifecycle.

Kopf handlers only hand resources to `TriggerRegistry.apply()` / `remove()`. The registry decides what
that means (start, reconfigure, suspend, fail, retry later), owns retries with backoff, and is the one
place that knows what a resource's status should say.
"""

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from portico.domain.trigger import TriggerRef
from portico.operator.kube import EventSink, SecretCache
from portico.operator.resource import (
    FINALIZER,
    RUN_NOW_ANNOTATION,
    JobTriggerStatus,
    ParsedSpec,
    Phase,
    SpecError,
    object_path,
    parse_spec,
)
from portico.operator.status import FinalizerWriter, StatusWriter
from portico.operator.targets import create_targets
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_target import JobTarget, TargetContext
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import EventType, TriggerEvents
from portico.ports.trigger_source import TriggerContext, TriggerSource

logger = logging.getLogger(__name__)

STATUS_FIELDS = frozenset(f.alias or n for n, f in JobTriggerStatus.model_fields.items())


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API server, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _log_fields(managed: "ManagedTrigger") -> dict[str, str]:
    ref = managed.ref
    return {"trigger_namespace": ref.namespace, "trigger_name": ref.name, "trigger_uid": ref.uid}


@dataclass(frozen=True)
class Resource:
    """What the registry needs of a JobTrigger object."""

    ref: TriggerRef
    generation: int
    spec: Mapping[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    resource_version: str | None = None
    finalizers: tuple[str, ...] = ()
    created_at: datetime | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Resource":
        meta = body.get("metadata", {})
        return cls(
            ref=TriggerRef(name=meta["name"], namespace=meta.get("namespace", ""), uid=meta.get("uid", "")),
            generation=int(meta.get("generation", 0)),
            spec=dict(body.get("spec") or {}),
            annotations=dict(meta.get("annotations") or {}),
            status=dict(body.get("status") or {}),
            resource_version=meta.get("resourceVersion"),
            finalizers=tuple(meta.get("finalizers") or ()),
            created_at=_timestamp(meta.get("creationTimestamp")),
        )


@dataclass
class RetryPolicy:
    initial: float = 1.0
    maximum: float = 300.0

    def delay(self, attempt: int) -> float:
        """Exponential with jitter: many triggers failing on the same outage do not retry in lockstep."""
        base = min(self.maximum, self.initial * 2 ** max(0, attempt - 1))
        return float(base * random.uniform(0.5, 1.0))


class _Events(TriggerEvents):
    def __init__(self, registry: "TriggerRegistry", uid: str, ref: TriggerRef) -> None:
        self.registry = registry
        self.uid = uid
        self.ref = ref

    def changed(self) -> None:
        self.registry.status_writer.mark_dirty(self.uid)

    def event(self, type: EventType, reason: str, message: str) -> None:
        if self.registry.owns(self.uid):
            self.registry.events.record(self.ref, type, reason, message)


@dataclass
class ManagedTrigger:
    resource: Resource
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    trigger: JobTrigger | None = None
    source: str | None = None
    target: str | None = None
    creator: JobCreator | None = None
    """The job creator of the running trigger (may be the registry's shared one)."""
    phase: Phase = "Pending"
    reason: str = "Pending"
    message: str = "The trigger has not been started yet."
    transition: datetime = field(default_factory=lambda: datetime.now(UTC))
    applied_generation: int | None = None
    error: str | None = None
    errors: int = 0
    base_jobs: int = 0
    base_errors: int = 0
    attempt: int = 0
    retry: asyncio.Task[None] | None = None
    secrets: frozenset[tuple[str, str]] = frozenset()
    target_secrets: frozenset[tuple[str, str]] = frozenset()
    run_now_seen: str | None = None
    last_health: TriggerHealth | None = None
    ready: tuple[str, str] = ("False", "Pending")

    @property
    def uid(self) -> str:
        return self.resource.ref.uid

    @property
    def ref(self) -> TriggerRef:
        return self.resource.ref


class TriggerRegistry:
    def __init__(
        self,
        *,
        sources: Mapping[str, TriggerSource[Any]],
        job_creator: JobCreator,
        status_writer: StatusWriter,
        events: EventSink,
        secrets: SecretCache,
        finalizers: FinalizerWriter | None = None,
        retry: RetryPolicy | None = None,
        stop_timeout: float = 20.0,
        leading: bool = True,
        targets: Mapping[str, JobTarget[Any]] | None = None,
        owner: Callable[[str], bool] | None = None,
    ) -> None:
        self.targets = dict(targets) if targets is not None else create_targets()
        self.finalizers = finalizers
        self.leading = leading
        self.sources = dict(sources)
        self.source_classes = tuple(type(s) for s in self.sources.values())
        self.job_creator = job_creator
        self.status_writer = status_writer
        self.events = events
        self.secrets = secrets
        self.retry_policy = retry or RetryPolicy()
        self.stop_timeout = stop_timeout
        self._triggers: dict[str, ManagedTrigger] = {}
        self._owner = owner
        """With sharding: whether this replica owns a trigger (by UID). Without: `leading` decides."""
        self._handing_over: set[str] = set()
        self._unfinalized: dict[str, Resource] = {}
        """Deleted objects whose finalizer waits for their owner (a shard's next owner releases it)."""

    def __len__(self) -> int:
        return len(self._triggers)

    def get(self, uid: str) -> ManagedTrigger | None:
        return self._triggers.get(uid)

    def owns(self, uid: str) -> bool:
        """Whether this replica runs the trigger's single-active source and writes its phase,
        finalizer and Events (every replica runs webhooks and adds its own counts)."""
        return self.leading if self._owner is None else self._owner(uid)

    def _may_run(self, uid: str) -> bool:
        return self.owns(uid) and uid not in self._handing_over

    def counts_metrics(self, managed: "ManagedTrigger") -> bool:
        """Per-trigger metrics come from the replica that owns the trigger, or that runs it."""
        return self._owner is None or self.owns(managed.uid) or managed.trigger is not None

    async def take_over(self, uids: Collection[str]) -> None:
        """This replica now owns these triggers (their shard): start them from their written status."""
        self._handing_over.difference_update(uids)
        chosen = [m for m in self.managed() if m.uid in uids]
        deleted = [self._unfinalized.pop(uid) for uid in list(self._unfinalized) if uid in uids]

        async def take(managed: ManagedTrigger) -> None:
            await self._set_finalizer(managed.resource, present=True)
            serving = managed.source is not None and not self.sources[managed.source].single_active
            if not (serving and managed.trigger is not None):  # a webhook runs here already
                await self.apply(managed.resource, force=True)
            self.status_writer.mark_dirty(managed.uid, urgent=True)

        await asyncio.gather(
            *(take(m) for m in chosen), *(self._set_finalizer(r, present=False) for r in deleted)
        )

    async def hand_over(self, uids: Collection[str]) -> None:
        """This replica gives these triggers up (their shard): stop their single-active sources and
        flush what they counted and scheduled, so the next owner resumes from the written status."""
        chosen = [m for m in self.managed() if m.uid in uids]
        self._handing_over.update(m.uid for m in chosen)

        async def release(managed: ManagedTrigger) -> None:
            self._cancel_retry(managed)
            async with managed.lock:
                if managed.source is not None and self.sources[managed.source].single_active:
                    await self._stop_current(managed)
                    managed.applied_generation = None

        try:
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.gather(*(release(m) for m in chosen))
        except TimeoutError:
            logger.warning("not every handed-over trigger stopped within %.0fs", self.stop_timeout)
        await self.status_writer.flush_all()

    def running(self) -> list[ManagedTrigger]:
        return [m for m in self._triggers.values() if m.trigger is not None and m.trigger.is_running]

    # --- lifecycle -------------------------------------------------------------------------------

    async def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event of a JobTrigger. The finalizer guarantees the trigger is stopped before the
        object disappears; the leader adds it on first sight and releases it once the trigger stopped."""
        uid = body.get("metadata", {}).get("uid", "")
        if event_type == "DELETED":
            self._unfinalized.pop(uid, None)
            await self.remove(uid)
            return
        resource = Resource.from_body(body)
        if body.get("metadata", {}).get("deletionTimestamp"):
            await self.remove(uid)
            if self._owner is not None and not self.owns(uid) and FINALIZER in resource.finalizers:
                self._unfinalized[uid] = resource
            await self._set_finalizer(resource, present=False)
            return
        await self._set_finalizer(resource, present=True)
        self.status_writer.observe(uid, resource.status, resource.resource_version)
        await self.apply(resource)

    async def _set_finalizer(self, resource: Resource, *, present: bool) -> None:
        if (
            not self.owns(resource.ref.uid)
            or self.finalizers is None
            or (FINALIZER in resource.finalizers) == present
        ):
            return
        others = [f for f in resource.finalizers if f != FINALIZER]
        await self.finalizers.set_finalizers(
            resource.ref, [*others, FINALIZER] if present else others, resource.resource_version or ""
        )

    async def set_leading(self, leading: bool) -> None:
        """Leadership changed. The leader runs every source and writes finalizers, phases and Events;
        other replicas run only the sources that every replica serves (webhooks) and add only their
        own counts to status."""
        if leading == self.leading:
            return
        if leading:
            self.leading = True
            for managed in self.managed():
                await self._set_finalizer(managed.resource, present=True)
                await self.apply(managed.resource, force=True)
            self.status_writer.mark_all_dirty()
            return
        for managed in self.managed():
            async with managed.lock:
                if managed.source is not None and self.sources[managed.source].single_active:
                    await self._stop_current(managed)
                    managed.applied_generation = None
        await self.status_writer.flush_all()
        self.leading = False

    async def apply(self, resource: Resource, *, force: bool = False) -> None:
        """Make the in-process trigger match the resource. Cheap when nothing relevant changed: a
        metadata-only change (labels, unrelated annotations) leaves a running trigger alone."""
        uid = resource.ref.uid
        managed = self._triggers.get(uid)
        if managed is None:
            created = self._triggers[uid] = ManagedTrigger(resource=resource)
            self.status_writer.track(
                uid,
                resource.ref,
                lambda: self.snapshot(created),
                status=resource.status,
                resource_version=resource.resource_version,
            )
            managed = created
        async with managed.lock:
            if uid not in self._triggers:
                return
            managed.resource = resource
            if force or managed.applied_generation != resource.generation:
                await self._reconcile(managed)
            await self._run_now_if_asked(managed)

    async def remove(self, uid: str) -> None:
        managed = self._triggers.get(uid)
        if managed is None:
            return
        async with managed.lock:
            self._cancel_retry(managed)
            await self._stop_current(managed)
            self._triggers.pop(uid, None)
            self.status_writer.untrack(uid)
            self.events.forget(managed.ref)

    async def stop_all(self) -> None:
        """Operator shutdown: stop every trigger gracefully, in parallel, within the stop timeout,
        then flush their final counters."""
        for managed in self._triggers.values():
            self._cancel_retry(managed)

        async def stop(m: ManagedTrigger) -> None:
            async with m.lock:
                await self._stop_current(m)

        try:
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.gather(*(stop(m) for m in list(self._triggers.values())))
        except TimeoutError:
            logger.warning("not every trigger stopped within %.0fs", self.stop_timeout)

    # --- secrets ---------------------------------------------------------------------------------

    def references_secret(self, namespace: str, name: str) -> bool:
        return any((namespace, name) in m.secrets for m in self._triggers.values())

    async def secret_changed(self, namespace: str, name: str, data: Mapping[str, str] | None) -> None:
        """A watched Secret changed: rebuild the triggers that read it at start, and retry at once
        those that were waiting for it."""
        self.secrets.update(namespace, name, data)
        for managed in list(self._triggers.values()):
            if (namespace, name) not in managed.secrets:
                continue
            live = managed.source is not None and self.sources[managed.source].reads_secrets_live
            if managed.phase == "Failed" or not live or (namespace, name) in managed.target_secrets:
                await self.apply(managed.resource, force=True)

    # --- internals -------------------------------------------------------------------------------

    async def _reconcile(self, managed: ManagedTrigger) -> None:
        self._cancel_retry(managed)
        resource = managed.resource
        managed.applied_generation = resource.generation
        try:
            parsed = parse_spec(resource.spec, self.source_classes)
        except SpecError as exc:
            await self._stop_current(managed)
            self._fail(managed, "InvalidSpec", "The spec is invalid: " + "; ".join(exc.errors), retry=False)
            return
        managed.source = parsed.source
        if self.sources[parsed.source].single_active and not self._may_run(managed.uid):
            await self._stop_current(managed)
            managed.applied_generation = None
            return
        if parsed.suspend:
            was_running = managed.trigger is not None
            await self._stop_current(managed)
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
        target_refs = list(target.secret_refs(target_spec))
        refs = [*source.secret_refs(parsed.source_spec), *target_refs]
        managed.secrets = frozenset((resource.ref.namespace, r.name) for r in refs)
        managed.target_secrets = frozenset((resource.ref.namespace, r.name) for r in target_refs)
        replacing = managed.trigger is not None
        new: JobTrigger | None = None
        creator: JobCreator | None = None
        # Make before break: the new trigger starts before the old one stops, so a reconfiguration
        # leaves no gap (a webhook path never answers 404 in between). Whatever both see during the
        # overlap (a due time, a file) carries the same idempotency key, so nothing is enqueued twice.
        try:
            for r in refs:
                if not self.secrets.known(resource.ref.namespace, r.name):
                    await self.secrets.load(resource.ref.namespace, r.name)
                self.secrets.get(resource.ref.namespace, r)
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
            await self._stop_current(managed)
            self._fail(managed, exc.reason, str(exc), retry=exc.retryable)
            return
        except Exception as exc:
            logger.exception("unexpected error starting %s", resource.ref)
            await self._discard(managed, new)
            await self._close_creator(creator)
            await self._stop_current(managed)
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
        managed.attempt = 0
        managed.error = None
        logger.info("trigger %s started (%s)", resource.ref, parsed.source, extra=_log_fields(managed))
        verb = "Reconfigured" if replacing else "Started"
        self._set_phase(managed, "Running", "Running", f"{verb}: the {parsed.source} trigger is running.")
        self._event(managed, "Normal", verb, f"The {parsed.source} trigger is running.")

    def _resume_status(self, managed: ManagedTrigger) -> dict[str, Any]:
        """The status a new trigger instance resumes from: the written status, overlaid with what the
        instance it replaces still holds in memory (a reconfiguration within the status writer's window
        must not lose `lastScheduleTime` or a counter). After a suspension, schedules must not catch up on
        the runs missed meanwhile, so they resume as from now."""
        status = dict(managed.resource.status)
        live = managed.trigger.get_health() if managed.trigger is not None else managed.last_health
        if live is not None:
            # What this process knows is newer than what the coalescing writer has written so far.
            status.update({k: _json(v) for k, v in live.source_status.items() if v is not None})
        if managed.phase == "Suspended" or status.get("phase") == "Suspended":
            status["resumedAt"] = rfc3339(datetime.now(UTC))
        return status

    async def _stop_current(self, managed: ManagedTrigger) -> None:
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
            logger.info("trigger %s stopped", managed.ref, extra=_log_fields(managed))
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
            managed.attempt += 1
            delay = self.retry_policy.delay(managed.attempt)
            managed.retry = asyncio.create_task(
                self._retry_later(managed, delay), name=f"retry {managed.ref}"
            )
            message_with_retry = f"{message} (retrying in {delay:.0f}s)"
        else:
            message_with_retry = message
        self._set_phase(managed, "Failed", reason, message_with_retry)
        logger.warning("trigger %s failed: %s", managed.ref, message_with_retry, extra=_log_fields(managed))
        self._event(managed, "Warning", reason, message)

    async def _retry_later(self, managed: ManagedTrigger, delay: float) -> None:
        await asyncio.sleep(delay)
        managed.retry = None
        if self._triggers.get(managed.uid) is managed:
            await self.apply(managed.resource, force=True)

    def _cancel_retry(self, managed: ManagedTrigger) -> None:
        task, managed.retry = managed.retry, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _set_phase(self, managed: ManagedTrigger, phase: Phase, reason: str, message: str) -> None:
        if (managed.phase, managed.reason) != (phase, reason):
            managed.transition = datetime.now(UTC)
        managed.phase, managed.reason, managed.message = phase, reason, message
        self.status_writer.mark_dirty(managed.uid, urgent=True)

    def _event(self, managed: ManagedTrigger, type: EventType, reason: str, message: str) -> None:
        if self.owns(managed.uid):
            self.events.record(managed.ref, type, reason, message)

    async def _run_now_if_asked(self, managed: ManagedTrigger) -> None:
        token = managed.resource.annotations.get(RUN_NOW_ANNOTATION)
        if not token or token == managed.run_now_seen:
            return
        managed.run_now_seen = token
        run_now = getattr(managed.trigger, "run_now", None)
        if run_now is None:
            self._event(
                managed,
                "Warning",
                "RunNowUnsupported",
                f"{RUN_NOW_ANNOTATION} is only supported by running schedule triggers.",
            )
            return
        try:
            job = await run_now(token)
        except JobCreationError as exc:
            self._event(managed, "Warning", "RunNowFailed", f"Manual run {token!r} failed: {exc}")
            return
        self._event(managed, "Normal", "RunNow", f"Manual run {token!r} created job {job.id}.")

    # --- status ----------------------------------------------------------------------------------

    @staticmethod
    def counters(managed: ManagedTrigger, health: TriggerHealth | None) -> tuple[int, int]:
        """Jobs created and errors counted by this process for the resource: earlier trigger instances
        (before a reconfigure) plus the current one. The status writer adds them to the totals."""
        live = managed.trigger is not None and health is not None
        jobs = managed.base_jobs + (health.jobs_created_count if live and health else 0)
        errors = managed.base_errors + managed.errors + (health.errors_count if live and health else 0)
        return jobs, errors

    def managed(self) -> list[ManagedTrigger]:
        return list(self._triggers.values())

    def snapshot(self, managed: ManagedTrigger) -> dict[str, Any]:
        """The status this resource should have now, as camelCase JSON."""
        trigger = managed.trigger
        health = trigger.get_health() if trigger is not None else managed.last_health
        running = bool(trigger is not None and trigger.is_running)
        jobs, errors = self.counters(managed, health)
        previous = managed.resource.status
        if managed.uid in self._handing_over and self.owns(managed.uid):
            return self._handed_over_status(managed, health, jobs, errors)
        if not self.owns(managed.uid):
            if trigger is None or health is None:
                return {}
            own: dict[str, Any] = {"jobsCreated": jobs, "errors": errors}
            if health.last_job_id:
                own["lastJobId"] = health.last_job_id
                own["lastJobTime"] = _json(health.last_job_created)
            return own
        status: dict[str, Any] = {
            "phase": managed.phase,
            "isRunning": running,
            "source": managed.source,
            "target": managed.target,
            "observedGeneration": managed.applied_generation,
            "jobsCreated": jobs,
            "errors": errors,
        }
        if health is not None:
            status["lastJobId"] = health.last_job_id or previous.get("lastJobId")
            status["lastJobTime"] = _json(health.last_job_created) or previous.get("lastJobTime")
            for key, value in health.source_status.items():
                if key in STATUS_FIELDS:
                    status[key] = _json(value)
        status["lastError"] = managed.error or (health.last_error if health else None)
        if managed.phase == "Running" and not running:
            ready, reason = "False", "NotRunning"
            message = (health.last_error if health else None) or "The trigger is not running."
        else:
            ready = "True" if managed.phase == "Running" else "False"
            reason, message = managed.reason, managed.message
        if managed.ready != (ready, reason):
            managed.ready = (ready, reason)
            managed.transition = max(managed.transition, datetime.now(UTC))
        status["conditions"] = [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": message,
                "lastTransitionTime": rfc3339(managed.transition),
                "observedGeneration": managed.applied_generation,
            }
        ]
        return {k: v for k, v in status.items() if v is not None or k == "lastError"}

    @staticmethod
    def _handed_over_status(
        managed: ManagedTrigger, health: TriggerHealth | None, jobs: int, errors: int
    ) -> dict[str, Any]:
        """The last status a shard's previous owner writes: what it counted and scheduled, not its phase
        (the trigger keeps running, on the next owner)."""
        if health is None:
            return {}
        status: dict[str, Any] = {"jobsCreated": jobs, "errors": errors}
        if health.last_job_id:
            status["lastJobId"] = health.last_job_id
            status["lastJobTime"] = _json(health.last_job_created)
        for key, value in health.source_status.items():
            if key in STATUS_FIELDS and value is not None and key not in ("isRunning", "phase"):
                status[key] = _json(value)
        return status
