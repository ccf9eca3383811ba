"""`HttpJobQueue` against the real queue service: the lease cycle, and lost leases reported as such."""

from collections.abc import AsyncIterator

import pytest

from portico.adapters.job_queue.http import HttpJobQueue
from portico.ports.job_queue import JobQueueError, LeaseLost
from tests.conftest import RunningQueueService
from tests.queue_service.conftest import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def service(queue_service_factory: object, clock: FakeClock) -> RunningQueueService:
    started: RunningQueueService = await queue_service_factory(clock=clock, reap_interval=3600)  # type: ignore[operator]
    return started


@pytest.fixture
async def queue(service: RunningQueueService) -> AsyncIterator[HttpJobQueue]:
    async with HttpJobQueue(service.url, lease_call_deadline=2) as job_queue:
        yield job_queue


async def test_claim_extend_complete(queue: HttpJobQueue, clock: FakeClock) -> None:
    low = await queue.enqueue("t", {"n": 1}, queue_name="q", priority=1)
    high = await queue.enqueue("t", {"n": 2}, queue_name="q", priority=9, max_attempts=5)
    claimed = await queue.claim("q", worker="w1", lease_seconds=10, limit=5)
    assert [job.id for job in claimed] == [high.id, low.id]
    job = claimed[0]
    assert job.lease_id and job.worker == "w1" and job.attempts == 1 and job.max_attempts == 5
    clock.advance(8)
    expiry = await queue.extend(job.id, lease_id=job.lease_id, lease_seconds=10)
    assert expiry.timestamp() == pytest.approx(clock.now + 10)
    clock.advance(8)
    done = await queue.complete(job.id, lease_id=job.lease_id)
    assert done.status == "completed"
    with pytest.raises(LeaseLost):
        await queue.complete(job.id, lease_id=job.lease_id)


async def test_an_expired_lease_cannot_be_extended_or_completed_once_taken(
    queue: HttpJobQueue, clock: FakeClock
) -> None:
    await queue.enqueue("t", {}, queue_name="q")
    [first] = await queue.claim("q", worker="w1", lease_seconds=5)
    assert first.lease_id is not None
    clock.advance(6)
    with pytest.raises(LeaseLost):
        await queue.extend(first.id, lease_id=first.lease_id, lease_seconds=5)
    [second] = await queue.claim("q", worker="w2", lease_seconds=5)
    assert second.id == first.id and second.attempts == 2
    with pytest.raises(LeaseLost):
        await queue.fail(first.id, lease_id=first.lease_id, error="late")
    failed = await queue.fail(
        second.id, lease_id=second.lease_id or "", error="boom", retry=True, retry_delay=30
    )
    assert failed.status == "pending" and failed.last_error == "boom"
    assert await queue.claim("q", worker="w3", lease_seconds=5) == []
    clock.advance(31)
    [third] = await queue.claim("q", worker="w3", lease_seconds=5)
    assert third.attempts == 3


async def test_an_unreachable_service_is_a_retryable_error(service: RunningQueueService) -> None:
    await service.stop()
    async with HttpJobQueue(service.url, lease_call_deadline=0.3, backoff_base=0.05) as queue:
        with pytest.raises(JobQueueError) as info:
            await queue.claim("q", worker="w", lease_seconds=5)
    assert info.value.retryable


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_oversized_answer_is_refused_while_reading(chunked: bool) -> None:
    from aiohttp import web

    async def huge(request: web.Request) -> web.StreamResponse:
        body = b'{"jobs":[' + b" " * 3_000_000 + b"]}"
        if not chunked:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 65536):
            await response.write(body[start : start + 65536])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/queues/q/claim", huge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with HttpJobQueue(f"http://{host}:{port}", max_response_bytes=1024 * 1024) as queue:
            with pytest.raises(JobQueueError, match="more than 1048576 bytes") as info:
                await queue.claim("q", worker="w", lease_seconds=5)
        assert not info.value.retryable
    finally:
        await runner.cleanup()
