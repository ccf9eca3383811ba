"""The worker's rules on a fast-forwarded clock: outcomes, retries and backoff, lease renewal, lost
leases, timeouts, shutdown, priorities and concurrency."""

import asyncio
import itertools
import json
import logging
from typing import Any

import pytest

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.ports.job_creator import Job
from portico.ports.job_handler import PermanentFailure, RetryLater, handler
from portico.worker.worker import Worker
from tests.worker.conftest import wait_for_status

pytestmark = pytest.mark.looptime


def metric(worker: Worker, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_a_job_is_handled_and_completed(queue: InMemoryJobQueue, start_worker: Any) -> None:
    seen: list[dict[str, Any]] = []

    @handler("report.daily")
    async def report(job: Job) -> dict[str, str]:
        seen.append(job.payload)
        return {"ok": "yes"}

    worker = await start_worker([report])
    job = await queue.enqueue("report.daily", {"day": "2026-11-28"}, queue_name="default")
    await wait_for_status(queue, job.id, "completed")
    assert seen == [{"day": "2026-11-28"}]
    assert (await queue.get(job.id)).attempts == 1  # type: ignore[union-attr]
    assert metric(worker, "portico_worker_jobs_total", job_type="report.daily", outcome="completed") == 1
    assert metric(worker, "portico_worker_job_duration_seconds_count", job_type="report.daily") == 1


async def test_a_handler_slower_than_its_lease_keeps_it(queue: InMemoryJobQueue, start_worker: Any) -> None:
    @handler("slow")
    async def slow(job: Job) -> None:
        await asyncio.sleep(100)

    worker = await start_worker([slow], lease_seconds=9)
    job = await queue.enqueue("slow", {})
    await wait_for_status(queue, job.id, "completed", timeout=200)
    events = [event for job_id, event in queue.history if job_id == job.id]
    assert events[0] == "claimed" and events[-1] == "completed"
    assert "expired" not in events and events.count("claimed") == 1
    assert events.count("extended") >= 100 // 9
    assert metric(worker, "portico_worker_lease_extensions_total", result="ok") >= 11


async def test_a_raising_handler_is_retried_with_backoff_until_dead(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    attempts: list[float] = []

    @handler("flaky")
    async def flaky(job: Job) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise ConnectionError("downstream unavailable")

    worker = await start_worker([flaky])
    job = await queue.enqueue("flaky", {}, max_attempts=4)
    await wait_for_status(queue, job.id, "dead")
    final = await queue.get(job.id)
    assert final is not None and final.attempts == 4
    assert final.last_error == "ConnectionError: downstream unavailable"
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # Equal jitter: the n-th retry waits between half and all of base·2ⁿ⁻¹ (base 1 s), plus polling.
    for n, gap in enumerate(gaps, start=1):
        assert 2 ** (n - 1) / 2 <= gap <= 2 ** (n - 1) + 1, gaps
    assert metric(worker, "portico_worker_jobs_total", job_type="flaky", outcome="retried") == 3
    assert metric(worker, "portico_worker_jobs_total", job_type="flaky", outcome="dead") == 1


async def test_retry_later_and_permanent_failure_are_the_handlers_decisions(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    calls: list[str] = []

    @handler("later")
    async def later(job: Job) -> None:
        calls.append(job.id)
        if len(calls) == 1:
            raise RetryLater("rate limited", delay=42)

    @handler("never")
    async def never(job: Job) -> None:
        raise PermanentFailure("the customer no longer exists")

    await start_worker([later, never])
    retried = await queue.enqueue("later", {})
    doomed = await queue.enqueue("never", {}, max_attempts=5)
    await wait_for_status(queue, doomed.id, "failed")
    assert (await queue.get(doomed.id)).attempts == 1  # type: ignore[union-attr]
    assert (await queue.get(doomed.id)).last_error == "permanent failure: the customer no longer exists"  # type: ignore[union-attr]
    started = asyncio.get_running_loop().time()
    await wait_for_status(queue, retried.id, "completed")
    assert 41 <= asyncio.get_running_loop().time() - started <= 44
    assert len(calls) == 2


async def test_a_lost_lease_cancels_the_handler_and_the_job_is_not_completed(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    cancelled = asyncio.Event()

    @handler("long")
    async def long(job: Job) -> None:
        try:
            await asyncio.sleep(1000)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker = await start_worker([long], lease_seconds=30)
    job = await queue.enqueue("long", {})
    await wait_for_status(queue, job.id, "running")

    async def refuse(job_id: str, *, lease_id: str, lease_seconds: float) -> Any:
        from portico.ports.job_queue import LeaseLost

        raise LeaseLost("someone else holds it")

    queue.extend = refuse  # type: ignore[method-assign]
    await asyncio.wait_for(cancelled.wait(), 60)
    await asyncio.sleep(1)
    assert (await queue.get(job.id)).status == "running", "the worker neither completed nor failed it"  # type: ignore[union-attr]
    assert metric(worker, "portico_worker_jobs_total", job_type="long", outcome="lease_lost") == 1


async def test_a_worker_that_cannot_renew_gives_the_job_up_before_its_lease_ends(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    from portico.ports.job_queue import JobQueueError

    stopped_at: list[float] = []

    @handler("long")
    async def long(job: Job) -> None:
        try:
            await asyncio.sleep(1000)
        except asyncio.CancelledError:
            stopped_at.append(asyncio.get_running_loop().time())
            raise

    await start_worker([long], lease_seconds=30)
    job = await queue.enqueue("long", {})
    await wait_for_status(queue, job.id, "running")
    claimed = await queue.get(job.id)
    assert claimed is not None and claimed.lease_expires_at is not None

    async def unreachable(job_id: str, *, lease_id: str, lease_seconds: float) -> Any:
        raise JobQueueError("connection refused", retryable=True)

    queue.extend = unreachable  # type: ignore[method-assign]
    while (job.id, "expired") not in queue.history:  # the lease ran out: another worker may take it
        await asyncio.sleep(0.1)
    assert stopped_at and stopped_at[0] < claimed.lease_expires_at.timestamp()


async def test_a_handler_past_its_timeout_is_cancelled_and_retried(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    @handler("stuck", timeout_seconds=5)
    async def stuck(job: Job) -> None:
        await asyncio.sleep(3600)

    await start_worker([stuck], handler_timeout=1000)
    job = await queue.enqueue("stuck", {}, max_attempts=1)
    await wait_for_status(queue, job.id, "dead", timeout=100)
    assert (await queue.get(job.id)).last_error == "the handler did not finish within 5s"  # type: ignore[union-attr]


async def test_stop_lets_running_jobs_finish_and_releases_those_past_the_timeout(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    @handler("quick", "endless")
    async def work(job: Job) -> None:
        await asyncio.sleep(5 if job.job_type == "quick" else 10_000)

    worker = await start_worker([work], concurrency=4, shutdown_timeout=20)
    quick = await queue.enqueue("quick", {})
    endless = await queue.enqueue("endless", {})
    await wait_for_status(queue, endless.id, "running")
    waiting = await queue.enqueue("quick", {})
    await asyncio.sleep(0.5)  # claimed too, by now
    late = await queue.enqueue("quick", {})
    worker.stop()
    loop = asyncio.get_running_loop()
    stopping = loop.time()
    while worker.in_flight or not worker.stopping:
        await asyncio.sleep(0.1)
    assert loop.time() - stopping <= 21
    assert (await queue.get(quick.id)).status == "completed"  # type: ignore[union-attr]
    assert (await queue.get(waiting.id)).status == "completed"  # type: ignore[union-attr]
    released = await queue.get(endless.id)
    assert released is not None and released.status == "pending", "released at once, not left to expire"
    assert released.last_error == "released: the worker is stopping"
    assert (await queue.get(late.id)).status == "pending", "nothing is claimed after stop()"  # type: ignore[union-attr]


async def test_jobs_are_claimed_by_priority_then_age_and_queues_in_order(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    order: list[str] = []

    @handler("*")
    async def record(job: Job) -> None:
        order.append(job.payload["name"])

    for name, queue_name, priority in [
        ("b-low", "bulk", 0),
        ("u-low", "urgent", 0),
        ("u-high", "urgent", 9),
        ("b-high", "bulk", 5),
        ("u-low-2", "urgent", 0),
    ]:
        await queue.enqueue("any", {"name": name}, queue_name=queue_name, priority=priority)
    await start_worker([record], queues=["urgent", "bulk"], concurrency=1)
    while len(order) < 5:
        await asyncio.sleep(0.1)
    assert order == ["u-high", "u-low", "u-low-2", "b-high", "b-low"]


async def test_concurrency_bounds_the_jobs_in_flight(queue: InMemoryJobQueue, start_worker: Any) -> None:
    now_running = 0
    peak = 0

    @handler("work")
    async def work(job: Job) -> None:
        nonlocal now_running, peak
        now_running += 1
        peak = max(peak, now_running)
        await asyncio.sleep(1)
        now_running -= 1

    jobs = [await queue.enqueue("work", {}) for _ in range(40)]
    await start_worker([work], concurrency=8)
    for job in jobs:
        await wait_for_status(queue, job.id, "completed")
    assert peak == 8


async def test_unknown_job_types_and_oversized_payloads_never_reach_a_handler(
    queue: InMemoryJobQueue, start_worker: Any
) -> None:
    @handler("known")
    async def known(job: Job) -> None:
        raise AssertionError("must not run")

    worker = await start_worker([known], max_payload_bytes=1000)
    stranger = await queue.enqueue("unknown.type", {}, max_attempts=1)
    huge = await queue.enqueue("known", {"blob": "x" * 2000})
    await wait_for_status(queue, stranger.id, "dead")
    await wait_for_status(queue, huge.id, "failed")
    assert "no handler for job type 'unknown.type'" in (await queue.get(stranger.id)).last_error  # type: ignore[operator,union-attr]
    assert metric(worker, "portico_worker_jobs_total", job_type="other", outcome="dead") == 1


async def test_logs_carry_the_job_id(
    queue: InMemoryJobQueue, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from portico.logs import JsonFormatter

    @handler("report")
    async def report(job: Job) -> None:
        return None

    caplog.set_level(logging.INFO, logger="portico.worker")
    await start_worker([report])
    job = await queue.enqueue("report", {"secret": "do-not-log"})
    await wait_for_status(queue, job.id, "completed")
    [record] = [r for r in caplog.records if getattr(r, "job_id", None) == job.id]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["job_id"] == job.id and entry["job_type"] == "report" and entry["outcome"] == "completed"
    assert "do-not-log" not in caplog.text
