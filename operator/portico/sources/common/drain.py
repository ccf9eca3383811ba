"""Graceful stop for every source: what is in flight when a trigger stops (a webhook request, an AMQP
message, a scheduled run, a settled file) may finish within a grace period, then is cancelled, so a stop
never hangs and never cuts a job creation that is about to be accepted."""

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

CANCEL_WAIT_SECONDS = 5.0
"""How long a drain waits for cancelled tasks to unwind (close connections, settle a message)."""


class InFlight:
    """The tasks a trigger has running, drained together on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(set(self._tasks))

    def start(self, coroutine: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        """Run `coroutine` as a tracked task."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self.add(task)
        return task

    def add(self, task: asyncio.Task[Any]) -> None:
        """Track a task that already runs (for example the current request handler); it is forgotten
        when it finishes."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def discard(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)

    async def drain(self, grace_seconds: float, *, cancel_wait_seconds: float = CANCEL_WAIT_SECONDS) -> int:
        """Wait up to `grace_seconds` for the tasks to finish, then cancel the rest and give them
        `cancel_wait_seconds` to unwind. Returns how many had to be cancelled. Never raises what a task
        raised: each task reports its own outcome."""
        current = asyncio.current_task()
        tasks = {task for task in self._tasks if task is not current}
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=cancel_wait_seconds)
        return len(pending)
