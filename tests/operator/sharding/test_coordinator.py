"""The shard coordinator on a fast-forwarded loop, over an in-memory Lease store: even shares, joins,
crashes, graceful stops and partitions, with the ledger failing the test the moment two replicas would
run the same shard."""

import asyncio

import pytest

from portico.operator.sharding.coordinator import ShardCoordinator
from tests.operator.sharding.conftest import FAST, Ledger, MemoryLeases, MemoryLeaseStore, replica

pytestmark = pytest.mark.looptime


async def settle(ledger: Ledger, expected: dict[str, int], within: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while ledger.counts() != expected:
        assert loop.time() - start < within, f"{ledger.counts()} is not {expected}"
        await asyncio.sleep(0.05)
    return loop.time() - start


async def stop(*coordinators: ShardCoordinator) -> None:
    for c in coordinators:
        await c.close()


async def test_three_replicas_split_the_shards_evenly() -> None:
    leases, ledger = MemoryLeases(), Ledger()
    replicas = [replica(leases, ledger, name) for name in ("a", "b", "c")]
    for r in replicas:
        await r.start()
    await settle(ledger, {"a": 11, "b": 11, "c": 10}, within=30)
    assert set(ledger.running) == set(range(32))
    assert all(r.owned == {s for s, who in ledger.running.items() if who == r.identity} for r in replicas)
    await asyncio.sleep(60)
    assert ledger.counts() == {"a": 11, "b": 11, "c": 10}, "stable once settled"
    await stop(*replicas)
    assert ledger.running == {}


async def test_a_joining_replica_takes_only_the_surplus() -> None:
    leases, ledger = MemoryLeases(), Ledger()
    a, b = replica(leases, ledger, "a"), replica(leases, ledger, "b")
    await a.start()
    await b.start()
    await settle(ledger, {"a": 16, "b": 16}, within=30)
    before = dict(ledger.running)
    c = replica(leases, ledger, "c")
    await c.start()
    took = await settle(ledger, {"a": 11, "b": 11, "c": 10}, within=30)
    assert took < 2 * FAST.retry_period + 1
    moved = {s for s, who in ledger.running.items() if before[s] != who}
    assert len(moved) == 10, "only the new replica's share moved"
    await stop(a, b, c)


async def test_a_crashed_replicas_shards_move_after_the_lease_duration() -> None:
    leases, ledger = MemoryLeases(), Ledger()
    replicas = {name: replica(leases, ledger, name) for name in ("a", "b", "c")}
    for r in replicas.values():
        await r.start()
    await settle(ledger, {"a": 11, "b": 11, "c": 10}, within=30)
    dead = replicas.pop("c")
    assert dead._task is not None
    dead._task.cancel()  # a crash: no callbacks, no release
    orphans = {s for s, who in ledger.running.items() if who == "c"}
    for s in orphans:
        del ledger.running[s]  # the dead process runs nothing
    loop = asyncio.get_running_loop()
    crashed = loop.time()
    survivors = {s: who for s, who in ledger.running.items()}
    took = await settle(ledger, {"a": 16, "b": 16}, within=30)
    assert FAST.lease_duration - FAST.retry_period <= took <= FAST.lease_duration + 2
    assert all(ledger.running[s] == who for s, who in survivors.items()), "only the orphans moved"
    first_take = min(
        t for t, s, what, _ in ledger.handovers if s in orphans and what == "acquired" and t > crashed
    )
    assert first_take - crashed >= FAST.lease_duration - FAST.retry_period
    await stop(*replicas.values())


async def test_a_graceful_stop_hands_over_within_a_round() -> None:
    leases, ledger = MemoryLeases(), Ledger()
    replicas = {name: replica(leases, ledger, name) for name in ("a", "b", "c")}
    for r in replicas.values():
        await r.start()
    await settle(ledger, {"a": 11, "b": 11, "c": 10}, within=30)
    await replicas.pop("b").close()
    took = await settle(ledger, {"a": 16, "c": 16}, within=10)
    assert took < 1.5
    await stop(*replicas.values())


async def test_a_partitioned_replica_gives_up_before_anyone_takes_over() -> None:
    leases, ledger = MemoryLeases(), Ledger()
    a, b = replica(leases, ledger, "a"), replica(leases, ledger, "b")
    await a.start()
    await b.start()
    await settle(ledger, {"a": 16, "b": 16}, within=30)
    assert isinstance(b.store, MemoryLeaseStore)
    b.store.broken = True
    # The ledger asserts on every take that the previous runner gave the shard up first.
    await settle(ledger, {"a": 32}, within=FAST.lease_duration + 3)
    assert b.owned == frozenset()
    b.store.broken = False
    await settle(ledger, {"a": 16, "b": 16}, within=FAST.lease_duration + 10)
    await stop(a, b)


async def test_a_lease_written_by_someone_else_is_dropped_at_once() -> None:
    leases, ledger = MemoryLeases(), Ledger()
    a = replica(leases, ledger, "a")
    await a.start()
    await settle(ledger, {"a": 32}, within=30)
    name = "t-shard-5"
    record = leases.records[name]
    leases.records[name] = record.__class__(**{**record.__dict__, "holder": "intruder", "version": "x"})
    await asyncio.sleep(1)
    assert 5 not in a.owned and 5 not in ledger.running
    await stop(a)


async def test_a_lone_replica_holds_every_shard_and_releases_them_on_close() -> None:
    leases, ledger = MemoryLeases(), Ledger()
    a = replica(leases, ledger, "a")
    await a.start()
    await settle(ledger, {"a": 32}, within=10)
    await a.close()
    assert all(r.holder is None for r in leases.records.values())
