"""Leases on a clock the test moves: a claimed job that is not finished in time goes back to its queue
(at-least-once), and a worker whose lease ran out can no longer finish the job someone else holds."""

import asyncio
from typing import Any

import aiohttp

from tests.conftest import RunningQueueService
from tests.queue_service.conftest import FakeClock
from tests.queue_service.test_endpoints import create, post


async def claim(
    http: aiohttp.ClientSession, service: RunningQueueService, **body: Any
) -> list[dict[str, Any]]:
    status, result = await post(http, f"{service.url}/v1/queues/default/claim", body)
    assert status == 200, result
    return list(result["jobs"])


async def test_an_expired_lease_returns_the_job_to_the_queue(
    http: aiohttp.ClientSession, service: RunningQueueService, clock: FakeClock
) -> None:
    job = await create(http, service)
    [first] = await claim(http, service, worker="w1", lease_seconds=30)
    assert first["lease_expires_at"] == "2027-01-15T08:00:30.000000Z"

    clock.advance(29.9)
    assert await claim(http, service, worker="w2") == [], "still leased"
    clock.advance(0.2)
    [second] = await claim(http, service, worker="w2", lease_seconds=30)
    assert second["id"] == job["id"]
    assert second["attempts"] == 2
    assert second["worker"] == "w2"
    assert second["lease_id"] != first["lease_id"]

    status, error = await post(
        http, f"{service.url}/v1/jobs/{job['id']}/complete", {"lease_id": first["lease_id"]}
    )
    assert status == 409, "the first worker lost its lease"
    assert "lease" in error["error"]
    status, done = await post(
        http, f"{service.url}/v1/jobs/{job['id']}/complete", {"lease_id": second["lease_id"]}
    )
    assert (status, done["status"]) == (200, "completed")


async def test_the_sweep_requeues_expired_leases_and_buries_jobs_out_of_attempts(
    http: aiohttp.ClientSession, service: RunningQueueService, clock: FakeClock
) -> None:
    retried = await create(http, service, max_attempts=2, priority=1)
    last_try = await create(http, service, max_attempts=1)
    leased = await claim(http, service, lease_seconds=10, limit=2)
    assert [job["id"] for job in leased] == [retried["id"], last_try["id"]]

    clock.advance(5)
    assert await service.store.requeue_expired() == 0
    assert (await service.get_job(retried["id"])).status == "running"
    clock.advance(5)
    assert await service.store.requeue_expired() == 2

    requeued = await service.get_job(retried["id"])
    assert (requeued.status, requeued.last_error, requeued.attempts) == ("pending", "lease expired", 1)
    buried = await service.get_job(last_try["id"])
    assert (buried.status, buried.attempts) == ("dead", 1)


async def test_a_worker_may_still_finish_after_its_lease_expired_if_nobody_took_over(
    http: aiohttp.ClientSession, service: RunningQueueService, clock: FakeClock
) -> None:
    job = await create(http, service)
    [leased] = await claim(http, service, lease_seconds=10)
    clock.advance(60)
    status, done = await post(
        http, f"{service.url}/v1/jobs/{job['id']}/complete", {"lease_id": leased["lease_id"]}
    )
    assert (status, done["status"]) == (200, "completed")


async def test_the_service_sweeps_by_itself(
    http: aiohttp.ClientSession, queue_service_factory: Any, clock: FakeClock
) -> None:
    service = await queue_service_factory(clock=clock, reap_interval=0.02)
    job = await create(http, service)
    await claim(http, service, lease_seconds=10)
    clock.advance(11)
    for _ in range(500):
        if (await service.get_job(job["id"])).status == "pending":
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the expired lease was not swept within 10 s")


async def test_extend_holds_a_running_job_longer_and_only_for_its_holder(
    http: aiohttp.ClientSession, service: RunningQueueService, clock: FakeClock
) -> None:
    job = await create(http, service)
    [claimed] = await claim(http, service, worker="w1", lease_seconds=30)
    url = f"{service.url}/v1/jobs/{job['id']}/extend"

    clock.advance(20)
    status, extended = await post(http, url, {"lease_id": claimed["lease_id"], "lease_seconds": 30})
    assert status == 200
    assert extended["lease_expires_at"] == "2027-01-15T08:00:50.000000Z"
    clock.advance(29)
    assert await claim(http, service, worker="w2") == [], "the extension holds"

    status, error = await post(http, url, {"lease_id": "not-the-lease", "lease_seconds": 30})
    assert status == 409 and "lease" in error["error"]
    status, error = await post(http, url, {"lease_seconds": 30})
    assert (status, error["field"]) == (400, "lease_id")
    status, error = await post(http, url, {"lease_id": claimed["lease_id"], "lease_seconds": 0})
    assert (status, error["field"]) == (400, "lease_seconds")

    clock.advance(2)
    status, error = await post(http, url, {"lease_id": claimed["lease_id"], "lease_seconds": 30})
    assert status == 409, "a lease that ran out is not revived"
    assert (await service.get_job(job["id"])).status == "running"
    status, _ = await post(
        http, f"{service.url}/v1/jobs/missing/extend", {"lease_id": "x", "lease_seconds": 5}
    )
    assert status == 404
