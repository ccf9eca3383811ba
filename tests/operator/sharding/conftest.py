"""An in-memory Lease store with the API server's optimistic concurrency, for the coordinator's unit
tests on a fast-forwarded loop; and a ledger that fails a test the moment two replicas run one shard."""

import asyncio
from dataclasses import dataclass, field

from portico.operator.sharding.coordinator import ShardCoordinator, ShardSettings
from portico.operator.sharding.leases import LeaseConflict, LeaseRecord, LeaseStore


class MemoryLeases:
    def __init__(self) -> None:
        self.records: dict[str, LeaseRecord] = {}
        self.version = 0
        self.writes = 0


class MemoryLeaseStore(LeaseStore):
    """One replica's view of the shared `MemoryLeases`; `broken` makes every call fail (a partition)."""

    def __init__(self, leases: MemoryLeases) -> None:
        self.leases = leases
        self.broken = False

    async def list(self) -> list[LeaseRecord]:
        await asyncio.sleep(0.005)
        if self.broken:
            raise ConnectionError("API server unreachable")
        return list(self.leases.records.values())

    async def write(
        self, name: str, holder: str | None, duration: float, previous: LeaseRecord | None
    ) -> LeaseRecord:
        await asyncio.sleep(0.005)
        if self.broken:
            raise ConnectionError("API server unreachable")
        current = self.leases.records.get(name)
        if (current is None) != (previous is None) or (
            current and previous and current.version != previous.version
        ):
            raise LeaseConflict(name)
        self.leases.version += 1
        self.leases.writes += 1
        loop_time = f"{asyncio.get_running_loop().time():.6f}"
        record = LeaseRecord(
            name=name,
            holder=holder,
            renew_time=loop_time,
            acquire_time=loop_time,
            duration=duration if holder else 1,
            transitions=0,
            version=str(self.leases.version),
        )
        self.leases.records[name] = record
        return record


@dataclass
class Ledger:
    """Who runs which shard, as the coordinators' callbacks report it."""

    running: dict[int, str] = field(default_factory=dict)
    handovers: list[tuple[float, int, str, str]] = field(default_factory=list)

    def acquired(self, identity: str, shards: frozenset[int]) -> None:
        for shard in shards:
            other = self.running.get(shard)
            assert other is None, f"shard {shard} run by {other} and {identity} at once"
            self.running[shard] = identity
            self.handovers.append((asyncio.get_running_loop().time(), shard, "acquired", identity))

    def released(self, identity: str, shards: frozenset[int]) -> None:
        for shard in shards:
            assert self.running.get(shard) == identity
            del self.running[shard]
            self.handovers.append((asyncio.get_running_loop().time(), shard, "released", identity))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for identity in self.running.values():
            out[identity] = out.get(identity, 0) + 1
        return out


FAST = ShardSettings(prefix="t", shards=32, lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


def replica(
    leases: MemoryLeases, ledger: Ledger, identity: str, settings: ShardSettings = FAST
) -> ShardCoordinator:
    async def acquired(shards: frozenset[int]) -> None:
        ledger.acquired(identity, shards)

    async def released(shards: frozenset[int]) -> None:
        ledger.released(identity, shards)

    return ShardCoordinator(
        MemoryLeaseStore(leases), identity, settings, on_acquired=acquired, on_released=released
    )
