"""Retrying a trigger that failed to start: exponential backoff with jitter, one pending retry per
resource, cancelled by anything that makes a retry pointless (a spec change, a removal)."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from portico.operator.managed import ManagedTrigger


@dataclass
class RetryPolicy:
    initial: float = 1.0
    maximum: float = 300.0

    def delay(self, attempt: int) -> float:
        """Exponential with jitter: many triggers failing on the same outage do not retry in lockstep."""
        base = min(self.maximum, self.initial * 2 ** max(0, attempt - 1))
        return float(base * random.uniform(0.5, 1.0))


class RetryTimer:
    """Schedules `retry(managed)` after the policy's delay for the resource's next attempt."""

    def __init__(self, policy: RetryPolicy, retry: Callable[[ManagedTrigger], Awaitable[None]]) -> None:
        self.policy = policy
        self._retry = retry

    def schedule(self, managed: ManagedTrigger) -> float:
        """Count one more failed attempt and retry after its delay, which is returned."""
        managed.attempt += 1
        delay = self.policy.delay(managed.attempt)
        managed.retry = asyncio.create_task(self._later(managed, delay), name=f"retry {managed.ref}")
        return delay

    @staticmethod
    def succeeded(managed: ManagedTrigger) -> None:
        managed.attempt = 0

    @staticmethod
    def cancel(managed: ManagedTrigger) -> None:
        task, managed.retry = managed.retry, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _later(self, managed: ManagedTrigger, delay: float) -> None:
        await asyncio.sleep(delay)
        managed.retry = None
        await self._retry(managed)
