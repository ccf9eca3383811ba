"""A queue service with a clock the test moves, and a plain HTTP client to talk to it."""

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningQueueService


class FakeClock:
    """Wall-clock seconds that only move when the test says so (leases, retry delays)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def service(queue_service_factory: Any, clock: FakeClock) -> RunningQueueService:
    """The lease sweeper is parked (hourly) so that only the test decides when leases are swept."""
    started: RunningQueueService = await queue_service_factory(clock=clock, reap_interval=3600)
    return started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
