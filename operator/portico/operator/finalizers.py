"""Our finalizer on JobTrigger objects: it guarantees a trigger is stopped before its object disappears.
The leader adds it on first sight and releases it once the trigger stopped; other finalizers are kept.
With sharding, the shard label goes in the same write."""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace

from portico.domain.trigger import TriggerRef
from portico.operator.resource import FINALIZER, Resource
from portico.operator.status import ObjectStatus


class FinalizerWriter(ABC):
    @abstractmethod
    async def set_finalizers(
        self,
        ref: TriggerRef,
        finalizers: list[str],
        resource_version: str,
        labels: Mapping[str, str] | None = None,
    ) -> ObjectStatus | None:
        """Replace `metadata.finalizers` and set `labels` (others are kept), only if the object is still
        at `resource_version` (a concurrent change fails the write rather than being overwritten).
        Returns the object's status and version after the write, or None when it was not written
        (gone, or changed meanwhile)."""

    @abstractmethod
    async def set_labels(self, ref: TriggerRef, labels: Mapping[str, str]) -> None:
        """Set these labels (others are kept), whatever the object's version; a gone object is not an
        error."""


async def set_finalizer(
    writer: FinalizerWriter,
    resource: Resource,
    *,
    present: bool,
    labels: Mapping[str, str] | None = None,
) -> Resource:
    """Add or release our finalizer, and set `labels`, at the version the resource was read at; no write
    when all is already as wanted. Returns the resource as the write left it: its status writes then
    start from the version the server has, not from the one the (possibly lagging) watch event showed,
    which would make the first of them conflict."""
    missing = {k: v for k, v in (labels or {}).items() if resource.labels.get(k) != v}
    if (FINALIZER in resource.finalizers) == present and not missing:
        return resource
    others = [f for f in resource.finalizers if f != FINALIZER]
    wanted = [*others, FINALIZER] if present else others
    written = await writer.set_finalizers(
        resource.ref, wanted, resource.resource_version or "", missing or None
    )
    if written is None:
        return resource
    return replace(
        resource,
        finalizers=tuple(wanted),
        labels={**resource.labels, **missing},
        status=dict(written.status),
        resource_version=written.resource_version,
    )
