"""The in-process triggers, keyed by resource UID.

Kopf handlers only hand watch events to `TriggerRegistry.observe()` (and Secret events to
`secret_changed()`). The registry keeps one `ManagedTrigger` per resource, serialises the work on each
under its lock, and hands it to the concern that owns it: the lifecycle (reconcile, start, stop), the
retry timer, the finalizer, the Secret watch, and the status projection the status writer writes.
"""

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from portico.operator.finalizers import FinalizerWriter, set_finalizer
from portico.operator.kube import EventSink, SecretCache
from portico.operator.lifecycle import Lifecycle
from portico.operator.managed import ManagedTrigger, log_fields
from portico.operator.projection import (
    SourceFields,
    follower_status,
    handed_over_status,
    leader_status,
    readiness,
    source_fields,
)
from portico.operator.resource import FINALIZER, Resource
from portico.operator.retry import RetryPolicy, RetryTimer
from portico.operator.secret_watch import SecretWatch
from portico.operator.shard_labels import ShardLabels
from portico.operator.status import StatusWriter
from portico.operator.targets import create_targets
from portico.operator.watched import WatchedTriggers, source_name
from portico.ports.job_creator import JobCreator
from portico.ports.job_target import JobTarget
from portico.ports.job_trigger import TriggerHealth
from portico.ports.trigger_source import TriggerSource

logger = logging.getLogger(__name__)


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
        shards: int | None = None,
    ) -> None:
        self.targets = dict(targets) if targets is not None else create_targets()
        self.finalizers = finalizers
        self.leading = leading
        self.sources = dict(sources)
        self.job_creator = job_creator
        self.status_writer = status_writer
        self.events = events
        self.secrets = secrets
        self.stop_timeout = stop_timeout
        self._owner = owner
        """With sharding: whether this replica owns a trigger (by UID). Without: `leading` decides."""
        self.labels = ShardLabels(shards, self.sources) if shards else None
        """With sharding: the shard label each trigger carries (see `sharding.routes`)."""
        self._handing_over: set[str] = set()
        self._unfinalized: dict[str, Resource] = {}
        """Deleted objects whose finalizer waits for their owner (a shard's next owner releases it)."""
        self.retry = RetryTimer(retry or RetryPolicy(), self._retry)
        self.secret_watch = SecretWatch(secrets, self.sources)
        self.lifecycle = Lifecycle(
            sources=self.sources,
            targets=self.targets,
            job_creator=job_creator,
            status_writer=status_writer,
            events=events,
            secrets=secrets,
            secret_watch=self.secret_watch,
            retry=self.retry,
            owns=self.owns,
            may_run=self._may_run,
        )
        self._triggers: dict[str, ManagedTrigger] = {}
        self._watched = WatchedTriggers()
        """With sharding: the triggers of other replicas' shards that this one does not serve."""

    def __len__(self) -> int:
        return len(self._triggers)

    def managed(self) -> list[ManagedTrigger]:
        return list(self._triggers.values())

    def running(self) -> list[ManagedTrigger]:
        return [m for m in self._triggers.values() if m.running]

    def known_uids(self) -> set[str]:
        """Every JobTrigger this replica has seen and not seen go: managed, only watched, deleted and
        waiting for its owner to release the finalizer, or handed over and not to start here until its
        shard comes back."""
        return {*self._triggers, *self._watched, *self._unfinalized, *self._handing_over}

    # --- ownership (leader or shard) -------------------------------------------------------------

    def owns(self, uid: str) -> bool:
        """Whether this replica runs the trigger's single-active source and writes its phase,
        finalizer and Events (every replica runs webhooks and adds its own counts)."""
        return self.leading if self._owner is None else self._owner(uid)

    def _may_run(self, uid: str) -> bool:
        return self.owns(uid) and uid not in self._handing_over

    def counts_metrics(self, managed: ManagedTrigger) -> bool:
        """Per-trigger metrics come from the replica that owns the trigger, or that runs it."""
        return self._owner is None or self.owns(managed.uid) or managed.trigger is not None

    async def take_over(self, uids: Collection[str]) -> None:
        """This replica now owns these triggers (their shard): start them from their written status,
        and release the finalizer of any deleted while no replica owned them."""
        self._handing_over.difference_update(uids)
        chosen = [m for m in self.managed() if m.uid in uids]
        deleted = [self._unfinalized.pop(uid) for uid in list(self._unfinalized) if uid in uids]
        arriving = [r for r in (self._watched.pop(uid) for uid in uids if uid in self._watched) if r]

        async def take(managed: ManagedTrigger) -> None:
            resource = await self._claim(managed.resource)
            serving = managed.source is not None and not self.sources[managed.source].single_active
            if resource is not None and not (serving and managed.trigger is not None):  # a webhook runs
                await self.apply(resource, force=True)
            self.status_writer.mark_dirty(managed.uid, urgent=True)

        async def start(resource: Resource) -> None:
            claimed = await self._claim(resource)
            if claimed is None:
                return
            newer = self._triggers.get(resource.ref.uid)  # a watch event came in meanwhile
            await self.apply(newer.resource if newer is not None else claimed, force=True)
            self.status_writer.mark_dirty(resource.ref.uid, urgent=True)

        await asyncio.gather(
            *(take(m) for m in chosen),
            *(start(r) for r in arriving),
            *(self._set_finalizer(r, present=False) for r in deleted),
        )

    async def hand_over(self, uids: Collection[str]) -> None:
        """This replica gives these triggers up (their shard): stop their single-active sources and
        flush what they counted and scheduled, so the next owner resumes from the written status."""
        chosen = [m for m in self.managed() if m.uid in uids]
        self._handing_over.update(m.uid for m in chosen)

        async def release(managed: ManagedTrigger) -> None:
            self.retry.cancel(managed)
            async with managed.lock:
                if managed.source is not None and self.sources[managed.source].single_active:
                    await self.lifecycle.stop(managed)
                    managed.applied_generation = None

        try:
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.gather(*(release(m) for m in chosen))
        except TimeoutError:
            logger.warning("not every handed-over trigger stopped within %.0fs", self.stop_timeout)
        await self.status_writer.flush_all()
        for managed in chosen:
            if managed.trigger is None:
                await self._watch_only(managed)

    async def _watch_only(self, managed: ManagedTrigger) -> None:
        """Forget a stopped trigger of a shard this replica gives up, but for its object. It stays
        handed over (never started again here) until its shard comes back."""
        async with managed.lock:
            if self._triggers.get(managed.uid) is not managed or managed.trigger is not None:
                return
            self.retry.cancel(managed)
            self._triggers.pop(managed.uid, None)
            self.status_writer.untrack(managed.uid)
            self.events.forget(managed.ref)
            self._remember(managed.resource)

    async def forget(self, uids: Collection[str]) -> None:
        """No watch of this replica shows these triggers any more (it gave their shard up): drop them.
        They stay handed over, so a late event cannot start one before the shard comes back."""
        for uid in uids:
            self._watched.discard(uid)
            managed = self._triggers.get(uid)
            if managed is not None and not self._may_run(uid):
                await self.remove(uid)

    def _remember(self, resource: Resource) -> None:
        """Keep the object of a trigger this replica only watches, so that it can start it at once when
        it takes the trigger's shard. With shard labels only unrouted ones are kept: the watch of a
        labelled trigger's shard lists it for whoever takes the shard."""
        if self.labels is not None and not self.labels.unrouted(resource):
            self._watched.discard(resource.ref.uid)
        else:
            self._watched.keep(resource)

    # --- watch events ----------------------------------------------------------------------------

    async def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event of a JobTrigger. The finalizer guarantees the trigger is stopped before the
        object disappears; the leader adds it on first sight and releases it once the trigger stopped."""
        uid = body.get("metadata", {}).get("uid", "")
        if event_type == "DELETED":
            self._unfinalized.pop(uid, None)
            self._watched.discard(uid)
            self._handing_over.discard(uid)
            await self.remove(uid)
            return
        resource = Resource.from_body(body)
        deleting = bool(body.get("metadata", {}).get("deletionTimestamp"))
        if not deleting and not self.owns(uid) and self.labels is not None and self.finalizers is not None:
            await self.labels.correct(resource, self.finalizers)
        if not deleting and self._only_watches(resource):
            self._remember(resource)
            return
        self._watched.discard(uid)
        if deleting:
            await self.remove(uid)
            if self._owner is not None and not self.owns(uid) and FINALIZER in resource.finalizers:
                self._unfinalized[uid] = resource
            await self._set_finalizer(resource, present=False)
            return
        self.status_writer.observe(uid, resource.status, resource.resource_version)
        claimed = await self._claim(resource)
        if claimed is not None:
            await self.apply(claimed)

    def _only_watches(self, resource: Resource) -> bool:
        """Whether this replica has nothing to do with the trigger but remember it: sharded, not its
        owner, not running it, and not a source every replica serves."""
        uid = resource.ref.uid
        if self._owner is None or self._may_run(uid) or uid in self._triggers:
            return False
        source = source_name(resource.spec, self.sources)
        return source is None or self.sources[source].single_active

    async def _claim(self, resource: Resource) -> Resource | None:
        """As the owner, add our finalizer and the shard label. Returns the resource to run, or None when
        its label changed: the label moves it to another of this replica's watches, which hands it on,
        and it starts then. (The API server reports the move out of the old watch as a deletion, which
        would stop a trigger started from the old one.)"""
        if not self.owns(resource.ref.uid) or self.finalizers is None:
            return resource
        wanted = self.labels.wanted(resource) if self.labels is not None else None
        claimed = await self._set_finalizer(resource, present=True, labels=wanted)
        relabelled = wanted is not None and any(resource.labels.get(k) != v for k, v in wanted.items())
        return None if relabelled else claimed

    async def _set_finalizer(
        self, resource: Resource, *, present: bool, labels: Mapping[str, str] | None = None
    ) -> Resource:
        """As the owner, add or release our finalizer, and set `labels` in the same write. The status
        writer learns the version the write left, so the trigger's next status write does not carry an
        older one and conflict."""
        if not self.owns(resource.ref.uid) or self.finalizers is None:
            return resource
        written = await set_finalizer(self.finalizers, resource, present=present, labels=labels)
        if written is not resource:
            self.status_writer.observe(written.ref.uid, written.status, written.resource_version)
        return written

    async def set_leading(self, leading: bool) -> None:
        """Leadership changed. The leader runs every source and writes finalizers, phases and Events;
        other replicas run only the sources that every replica serves (webhooks) and add only their
        own counts to status."""
        if leading == self.leading:
            return
        if leading:
            self.leading = True
            for managed in self.managed():
                resource = await self._set_finalizer(managed.resource, present=True)
                await self.apply(resource, force=True)
            self.status_writer.mark_all_dirty()
            return
        for managed in self.managed():
            async with managed.lock:
                if managed.source is not None and self.sources[managed.source].single_active:
                    await self.lifecycle.stop(managed)
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
                await self.lifecycle.reconcile(managed)
            await self.lifecycle.run_now_if_asked(managed)

    async def _retry(self, managed: ManagedTrigger) -> None:
        if self._triggers.get(managed.uid) is managed:
            await self.apply(managed.resource, force=True)

    async def remove(self, uid: str) -> None:
        managed = self._triggers.get(uid)
        if managed is None:
            return
        async with managed.lock:
            self.retry.cancel(managed)
            await self.lifecycle.stop(managed)
            self._triggers.pop(uid, None)
            self.status_writer.untrack(uid)
            self.events.forget(managed.ref)

    async def stop_all(self) -> None:
        """Operator shutdown: stop every trigger gracefully, in parallel, within the stop timeout,
        then flush their final counters."""
        for managed in self._triggers.values():
            self.retry.cancel(managed)

        async def stop(m: ManagedTrigger) -> None:
            async with m.lock:
                await self.lifecycle.stop(m)

        try:
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.gather(*(stop(m) for m in list(self._triggers.values())))
        except TimeoutError:
            logger.warning("not every trigger stopped within %.0fs", self.stop_timeout)

    # --- secrets ---------------------------------------------------------------------------------

    def references_secret(self, namespace: str, name: str) -> bool:
        return self.secret_watch.references(self._triggers.values(), namespace, name)

    async def secret_changed(self, namespace: str, name: str, data: Mapping[str, str] | None) -> None:
        """A watched Secret changed: rebuild the triggers that read it at start, and retry at once
        those that were waiting for it."""
        for managed in self.secret_watch.changed(list(self._triggers.values()), namespace, name, data):
            await self.apply(managed.resource, force=True)

    # --- status ----------------------------------------------------------------------------------

    def snapshot(self, managed: ManagedTrigger) -> dict[str, Any]:
        """The status this resource should have now, as camelCase JSON (what the status writer writes)."""
        health = managed.health()
        if managed.uid in self._handing_over and self.owns(managed.uid):
            return handed_over_status(managed, health, self._source_fields(managed, health))
        if not self.owns(managed.uid):
            return follower_status(managed, health)
        ready = readiness(managed, health)
        if managed.ready != ready.key:
            managed.ready = ready.key
            managed.transition = max(managed.transition, datetime.now(UTC))
        return leader_status(managed, health, ready, self._source_fields(managed, health))

    def _source_fields(self, managed: ManagedTrigger, health: TriggerHealth | None) -> SourceFields:
        if health is None or managed.source is None:
            return SourceFields()
        own = source_fields(health.source_status, self.sources[managed.source].status_model)
        if own.problems and own.problems != managed.status_problems:
            logger.error(
                "the %s trigger %s reports status fields its status model does not allow, left out: %s",
                managed.source,
                managed.ref,
                "; ".join(own.problems),
                extra=log_fields(managed),
            )
        managed.status_problems = own.problems
        return own
