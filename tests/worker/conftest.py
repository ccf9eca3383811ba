"""A worker over an in-memory queue whose clock is the (fast-forwarded) event loop's."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.worker.retry import RetryBackoff
from portico.worker.worker import Worker


@pytest.fixture
def queue() -> InMemoryJobQueue:
    return InMemoryJobQueue(clock=lambda: asyncio.get_running_loop().time())


@pytest.fixture
async def start_worker(queue: InMemoryJobQueue) -> AsyncIterator[Callable[..., Any]]:
    """`await start_worker(handlers, **options)` → a running Worker, stopped after the test."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(handlers: Any, **options: Any) -> Worker:
        options.setdefault("poll_interval", 0.5)
        options.setdefault("backoff", RetryBackoff(base=1.0, maximum=60.0))
        worker = Worker(options.pop("queue", queue), handlers, **options)
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        await worker.started.wait()
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    for _, task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 120)


async def wait_for_status(queue: InMemoryJobQueue, job_id: str, status: str, timeout: float = 600) -> None:
    async def reached() -> None:
        while (await queue.get(job_id)).status != status:  # type: ignore[union-attr]
            await asyncio.sleep(0.1)

    await asyncio.wait_for(reached(), timeout)
