"""The shard label on each JobTrigger, as the registry writes and reads it (the routes themselves are in
`sharding.routes`): which label a trigger should carry, whether a replica keeps an object it only
watches, and the correction a replica that is not the owner makes to a wrong shard number."""

import logging
from collections.abc import Mapping
from typing import Any

from portico.operator.finalizers import FinalizerWriter
from portico.operator.resource import Resource
from portico.operator.sharding.routes import SHARD_LABEL, UNROUTED, label_value, route_of
from portico.operator.sharding.shard_map import shard_of
from portico.operator.watched import source_name
from portico.ports.trigger_source import TriggerSource

logger = logging.getLogger(__name__)


class ShardLabels:
    def __init__(self, shards: int, sources: Mapping[str, TriggerSource[Any]]) -> None:
        self.shards = shards
        self.sources = sources

    def wanted(self, resource: Resource) -> dict[str, str]:
        """The label the trigger should carry: its shard, or `all` for a source every replica serves."""
        source = source_name(resource.spec, self.sources)
        everywhere = source is not None and not self.sources[source].single_active
        shard = shard_of(resource.ref.uid, self.shards)
        return {SHARD_LABEL: label_value(shard, everywhere=everywhere)}

    def unrouted(self, resource: Resource) -> bool:
        """Whether no shard's watch shows the trigger (no label, or not a valid one): every replica keeps
        such an object, so that whoever takes its shard can start it."""
        return route_of(resource.labels, self.shards) == UNROUTED

    async def correct(self, resource: Resource, writer: FinalizerWriter) -> None:
        """For a replica that is not the owner: a trigger it received under the wrong shard number
        (only that shard's holder sees it) gets the right label, which moves it to its owner's watch."""
        if not isinstance(route_of(resource.labels, self.shards), int):
            return
        wanted = self.wanted(resource)
        current = resource.labels.get(SHARD_LABEL)
        if current == wanted[SHARD_LABEL]:
            return
        logger.info("JobTrigger %s carried %s=%s; relabelled %s", resource.ref, SHARD_LABEL, current, wanted)
        await writer.set_labels(resource.ref, wanted)
