"""Triggers a sharded replica only watches: those of another replica's shards that it does not serve
(everything but webhooks). Each is kept as its object in compressed JSON, not as a managed trigger, so a
replica's memory follows what it owns, and a shard that arrives starts at once without reading its
objects again."""

import json
import zlib
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from portico.domain.timestamps import rfc3339
from portico.operator.resource import Resource


def source_name(spec: Mapping[str, Any], names: Collection[str]) -> str | None:
    """The one source block a spec sets, among `names`, or None if it sets none or several."""
    present = [name for name in names if spec.get(name) is not None]
    return present[0] if len(present) == 1 else None


class WatchedTriggers:
    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, uid: object) -> bool:
        return uid in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._objects))

    def keep(self, resource: Resource) -> None:
        created = resource.created_at
        fields = [
            resource.ref.name,
            resource.ref.namespace,
            resource.generation,
            resource.spec,
            resource.annotations,
            resource.labels,
            resource.status,
            resource.resource_version,
            resource.finalizers,
            rfc3339(created) if created is not None else None,
        ]
        packed = json.dumps(fields, separators=(",", ":"), default=str).encode()
        self._objects[resource.ref.uid] = zlib.compress(packed, 1)

    def pop(self, uid: str) -> Resource | None:
        packed = self._objects.pop(uid, None)
        if packed is None:
            return None
        name, namespace, generation, spec, annotations, labels, status, version, finalizers, created = (
            json.loads(zlib.decompress(packed))
        )
        return Resource.from_body(
            {
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid,
                    "generation": generation,
                    "annotations": annotations,
                    "labels": labels,
                    "resourceVersion": version,
                    "finalizers": finalizers,
                    "creationTimestamp": created,
                },
                "spec": spec,
                "status": status,
            }
        )

    def discard(self, uid: str) -> None:
        self._objects.pop(uid, None)
