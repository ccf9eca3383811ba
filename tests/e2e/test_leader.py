"""Leader election against the real API server's Lease objects (short timings, so it runs in seconds)."""

import asyncio
import time
from typing import Any

from portico.operator.leader import LeaderElector, LeaseSettings

FAST = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.2}


class Replica:
    def __init__(self, api: Any, identity: str, namespace: str) -> None:
        self.log: list[tuple[float, str]] = []
        self.elector = LeaderElector(
            api,
            identity,
            LeaseSettings(name="portico-test", namespace=namespace, **FAST),
            on_started_leading=self._started,
            on_stopped_leading=self._stopped,
        )

    async def _started(self) -> None:
        self.log.append((time.monotonic(), "started"))

    async def _stopped(self) -> None:
        self.log.append((time.monotonic(), "stopped"))


async def wait_until(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_one_leader_and_graceful_handover(kube_api: Any, namespace: str) -> None:
    a, b = Replica(kube_api, "a", namespace), Replica(kube_api, "b", namespace)
    await a.elector.start()
    await wait_until(lambda: a.elector.is_leader, 5)
    await b.elector.start()
    await asyncio.sleep(1.0)
    assert a.elector.is_leader and not b.elector.is_leader
    await a.elector.close(release=True)
    assert a.log[-1][1] == "stopped"
    handover = await wait_until(lambda: b.elector.is_leader, 5)
    assert handover < 1.0, "a released lease is taken within about one retry period"
    await b.elector.close()


async def test_crashed_leader_is_replaced_after_the_lease_expires(kube_api: Any, namespace: str) -> None:
    a, b = Replica(kube_api, "a", namespace), Replica(kube_api, "b", namespace)
    await a.elector.start()
    await wait_until(lambda: a.elector.is_leader, 5)
    await b.elector.start()
    await asyncio.sleep(0.5)
    assert not b.elector.is_leader
    assert a.elector._task is not None
    a.elector._task.cancel()  # a crash: no step-down, no release
    crashed = time.monotonic()
    await wait_until(lambda: b.elector.is_leader, 6)
    took = time.monotonic() - crashed
    assert 1.0 < took < 2.0 + 1.0, "taken over after the lease duration, not before"
    await b.elector.close()


async def test_leader_that_cannot_renew_steps_down(kube_api: Any, namespace: str) -> None:
    from kubernetes_asyncio import client

    a = Replica(kube_api, "a", namespace)
    await a.elector.start()
    await wait_until(lambda: a.elector.is_leader, 5)
    await client.CoordinationV1Api(kube_api).patch_namespaced_lease(
        "portico-test", namespace, {"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 30}}
    )
    await wait_until(lambda: not a.elector.is_leader, 4)
    assert [e for _, e in a.log] == ["started", "stopped"]
    await a.elector.close()
