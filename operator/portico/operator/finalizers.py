"""Our finalizer on JobTrigger objects: it guarantees a trigger is stopped before its object disappears.
The leader adds it on first sight and releases it once the trigger stopped; other finalizers are kept."""

from abc import ABC, abstractmethod
from dataclasses import replace

from portico.domain.trigger import TriggerRef
from portico.operator.resource import FINALIZER, Resource
from portico.operator.status import ObjectStatus


class FinalizerWriter(ABC):
    @abstractmethod
    async def set_finalizers(
        self, ref: TriggerRef, finalizers: list[str], resource_version: str
    ) -> ObjectStatus | None:
        """Replace `metadata.finalizers`, only if the object is still at `resource_version` (a
        concurrent change fails the write rather than being overwritten). Returns the object's status
        and version after the write, or None when it was not written (gone, or changed meanwhile)."""


async def set_finalizer(writer: FinalizerWriter, resource: Resource, *, present: bool) -> Resource:
    """Add or release our finalizer, at the version the resource was read at; no write when it is
    already as wanted. Returns the resource as the write left it: its status writes then start from
    the version the server has, not from the one the (possibly lagging) watch event showed, which would
    make the first of them conflict."""
    if (FINALIZER in resource.finalizers) == present:
        return resource
    others = [f for f in resource.finalizers if f != FINALIZER]
    wanted = [*others, FINALIZER] if present else others
    written = await writer.set_finalizers(resource.ref, wanted, resource.resource_version or "")
    if written is None:
        return resource
    return replace(
        resource,
        finalizers=tuple(wanted),
        status=dict(written.status),
        resource_version=written.resource_version,
    )
