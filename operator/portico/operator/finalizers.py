"""Our finalizer on JobTrigger objects: it guarantees a trigger is stopped before its object disappears.
The leader adds it on first sight and releases it once the trigger stopped; other finalizers are kept."""

from abc import ABC, abstractmethod

from portico.domain.trigger import TriggerRef
from portico.operator.resource import FINALIZER, Resource


class FinalizerWriter(ABC):
    @abstractmethod
    async def set_finalizers(self, ref: TriggerRef, finalizers: list[str], resource_version: str) -> None:
        """Replace `metadata.finalizers`, only if the object is still at `resource_version` (a
        concurrent change fails the write rather than being overwritten)."""


async def set_finalizer(writer: FinalizerWriter, resource: Resource, *, present: bool) -> None:
    """Add or release our finalizer, at the version the resource was read at; no write when it is
    already as wanted."""
    if (FINALIZER in resource.finalizers) == present:
        return
    others = [f for f in resource.finalizers if f != FINALIZER]
    await writer.set_finalizers(
        resource.ref, [*others, FINALIZER] if present else others, resource.resource_version or ""
    )
