"""The shard coordinator against the real API server's Lease objects (short timings, so it runs in
seconds): even shares, a crash, a graceful stop, and the RBAC-friendly names of every Lease."""

import asyncio
import time
from typing import Any

from kubernetes_asyncio import client

from portico.operator.sharding.coordinator import ShardCoordinator, ShardSettings
from portico.operator.sharding.leases import LEASE_SET_LABEL, KubeLeaseStore

FAST = ShardSettings(
    prefix="portico-test", shards=8, lease_duration=2.0, renew_deadline=1.5, retry_period=0.2
)


def coordinator(api: Any, namespace: str, identity: str, running: dict[int, str]) -> ShardCoordinator:
    async def acquired(shards: frozenset[int]) -> None:
        for s in shards:
            assert s not in running, f"shard {s} run by {running[s]} and {identity}"
            running[s] = identity

    async def released(shards: frozenset[int]) -> None:
        for s in shards:
            assert running.pop(s) == identity

    return ShardCoordinator(
        KubeLeaseStore(api, namespace, FAST.prefix),
        identity,
        FAST,
        on_acquired=acquired,
        on_released=released,
    )


async def wait_counts(running: dict[int, str], expected: dict[str, int], within: float) -> float:
    start = time.monotonic()
    while True:
        counts: dict[str, int] = {}
        for who in running.values():
            counts[who] = counts.get(who, 0) + 1
        if counts == expected:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"{counts} is not {expected}"
        await asyncio.sleep(0.02)


async def test_shares_crash_and_graceful_stop_on_real_leases(kube_api: Any, namespace: str) -> None:
    running: dict[int, str] = {}
    replicas = {n: coordinator(kube_api, namespace, n, running) for n in ("a", "b", "c")}
    for r in replicas.values():
        await r.start()
    await wait_counts(running, {"a": 3, "b": 3, "c": 2}, within=15)

    leases = await client.CoordinationV1Api(kube_api).list_namespaced_lease(namespace)
    names = sorted(lease.metadata.name for lease in leases.items)
    assert names == sorted(
        [f"portico-test-shard-{i}" for i in range(8)] + [f"portico-test-member-{i}" for i in range(3)]
    ), "fixed names, so RBAC can list them"
    assert all(lease.metadata.labels[LEASE_SET_LABEL] == "portico-test" for lease in leases.items)

    crashed = replicas.pop("c")
    assert crashed._task is not None
    crashed._task.cancel()  # a crash: no callbacks, no release
    for s in [s for s, who in running.items() if who == "c"]:
        del running[s]
    took = await wait_counts(running, {"a": 4, "b": 4}, within=10)
    assert FAST.lease_duration - 2 * FAST.retry_period < took < FAST.lease_duration + 2

    await replicas.pop("b").close()
    took = await wait_counts(running, {"a": 8}, within=5)
    assert took < 1.0, "released Leases are taken within a round or two"
    await replicas["a"].close()
    assert running == {}
