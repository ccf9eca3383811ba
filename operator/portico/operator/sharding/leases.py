"""The Lease objects the shard coordinator reads and writes: a small port, and its adapter on the
`coordination.k8s.io/v1` API.

Every write is a replace under the resourceVersion the writer read, so two replicas racing for the
same Lease cannot both win: the second gets `LeaseConflict` and looks again on its next round.

Responses are read as plain JSON, not as the client's models: a replica lists its Lease set four times
per retry period, and building the models of 30-odd Leases took about 20 ms of the interpreter each time,
time the trigger loop could not run.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from portico.operator.kube import read_json

LEASE_SET_LABEL = "triggers.portico.dev/lease-set"


class LeaseConflict(Exception):
    """Someone else wrote the Lease first (or created it)."""


@dataclass(frozen=True)
class LeaseRecord:
    name: str
    holder: str | None
    renew_time: str | None
    acquire_time: str | None
    duration: float
    transitions: int
    version: str


class LeaseStore(ABC):
    @abstractmethod
    async def list(self) -> list[LeaseRecord]:
        """Every Lease of this operator's set (members and shards)."""

    @abstractmethod
    async def write(
        self, name: str, holder: str | None, duration: float, previous: LeaseRecord | None
    ) -> LeaseRecord:
        """Create the Lease (`previous` None) or replace it if it is still at `previous.version`.
        `holder` None releases it. Raises `LeaseConflict`."""


def micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeaseStore(LeaseStore):
    def __init__(self, api: client.ApiClient, namespace: str, lease_set: str) -> None:
        self.coordination: Any = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.lease_set = lease_set

    async def list(self) -> list[LeaseRecord]:
        leases = await read_json(
            self.coordination.list_namespaced_lease(
                self.namespace, label_selector=f"{LEASE_SET_LABEL}={self.lease_set}", _preload_content=False
            )
        )
        return [self._record(lease) for lease in leases.get("items") or ()]

    async def write(
        self, name: str, holder: str | None, duration: float, previous: LeaseRecord | None
    ) -> LeaseRecord:
        now = micro_time(datetime.now(UTC))
        changing_hands = previous is None or previous.holder != holder
        transitions = (
            0 if previous is None else previous.transitions + (1 if changing_hands and holder else 0)
        )
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {LEASE_SET_LABEL: self.lease_set},
        }
        if previous is not None:
            metadata["resourceVersion"] = previous.version
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, round(duration)) if holder else 1,
                "acquireTime": (now if changing_hands else previous.acquire_time if previous else now)
                if holder
                else None,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }
        try:
            if previous is None:
                call = self.coordination.create_namespaced_lease(self.namespace, body, _preload_content=False)
            else:
                call = self.coordination.replace_namespaced_lease(
                    name, self.namespace, body, _preload_content=False
                )
            lease = await read_json(call)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflict(name) from None
            raise
        return self._record(lease)

    @staticmethod
    def _record(lease: dict[str, Any]) -> LeaseRecord:
        meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
        return LeaseRecord(
            name=meta["name"],
            holder=spec.get("holderIdentity") or None,
            renew_time=spec.get("renewTime") or None,
            acquire_time=spec.get("acquireTime") or None,
            duration=float(spec.get("leaseDurationSeconds") or 1),
            transitions=int(spec.get("leaseTransitions") or 0),
            version=meta["resourceVersion"],
        )
