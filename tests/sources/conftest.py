"""Fixtures for the sources that talk to real services: a RabbitMQ broker and a PostgreSQL server for the
session (started from the distribution's packages on free loopback ports, stopped at the end), a queue
service that can be taken down and brought back on the same address, and small helpers to wait for
what the triggers do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from portico.ports.job_creator import Job, JobCreator
from portico.ports.trigger_events import EventType, TriggerEvents
from portico.testing.processes import free_port
from portico.testing.services import PostgresServer, RabbitMQServer


@pytest.fixture
def rabbitmq_running(rabbitmq: RabbitMQServer) -> Iterator[RabbitMQServer]:
    """The session broker, brought back after the test if the test stopped it."""
    yield rabbitmq
    if not rabbitmq.running:
        rabbitmq.start()


@pytest.fixture
def postgres_running(postgres: PostgresServer) -> Iterator[PostgresServer]:
    yield postgres
    if not postgres.running:
        postgres.start()


class RestartableQueueService:
    """The reference queue service in the test's event loop on a fixed port, so it can be stopped (clients
    get connection refused) and started again at the same URL with the same database."""

    def __init__(self, db_path: Path, **settings: Any) -> None:
        self.db_path = db_path
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: Any = None
        self._store: Any = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        from aiohttp import web

        from portico.queue_service.server import STORE, create_app
        from portico.queue_service.settings import QueueServiceSettings

        app = create_app(QueueServiceSettings(db_path=str(self.db_path), **self.settings))
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner, self._store = runner, app[STORE]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def list_jobs(self) -> list[Job]:
        assert self._store is not None, "start the queue service first"
        jobs: list[Job] = []
        after: int | None = 0
        while after is not None:
            page, after = await self._store.list_jobs(after=after, limit=1000)
            jobs.extend(Job.model_validate_json(job) for job in page)
        return jobs


@pytest.fixture
async def restartable_queue_service(tmp_path: Path) -> AsyncIterator[RestartableQueueService]:
    service = RestartableQueueService(tmp_path / "queue.db")
    await service.start()
    yield service
    await service.stop()


class RecordingEvents(TriggerEvents):
    def __init__(self) -> None:
        self.changes = 0
        self.events: list[tuple[EventType, str, str]] = []

    def changed(self) -> None:
        self.changes += 1

    def event(self, type: EventType, reason: str, message: str) -> None:
        self.events.append((type, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@dataclass
class CountingJobCreator(JobCreator):
    """Wraps a real job creator and counts every call by idempotency key: the queue service hides
    duplicate calls (same key, same job), these counts show them."""

    inner: JobCreator
    delay: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)
    hold_after: int | None = None
    """Calls past this many wait for `release()`, so a test can change the world between two calls."""
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self._released.set()

    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        metadata, idempotency_key = self.with_context(metadata, idempotency_key)
        key = idempotency_key or ""
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.hold_after is not None and sum(self.calls.values()) > self.hold_after:
            await self._released.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return await self.inner.create_job(job_type, payload, queue_name, priority, metadata, idempotency_key)

    async def get_job(self, job_id: str) -> Job | None:
        return await self.inner.get_job(job_id)


async def eventually(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 20.0,
    step: float = 0.05,
) -> None:
    """Wait until `condition()` holds; fail with a clear message after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
