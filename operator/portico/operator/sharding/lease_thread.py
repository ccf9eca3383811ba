"""The shard Leases are renewed on an event loop of their own, in a thread.

Hundreds of triggers starting, a burst of watch events or a slow status flush can keep the operator's
main loop busy for seconds on a loaded node; renewals waiting behind that work would miss their
deadline and every shard would move. client-go runs leader election on its own goroutine for the same
reason. Starting and stopping triggers still happens on the main loop: the coordinator's callbacks are
sent there and awaited.
"""

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LeaseThread:
    def __init__(self, name: str = "shard-leases") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the lease loop and wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[[T], Awaitable[None]]
) -> Callable[[T], Coroutine[Any, Any, None]]:
    """`callback`, run on `loop` (the operator's main loop) whichever loop awaits it."""

    async def run(value: T) -> None:
        async def call() -> None:
            await callback(value)

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))

    return run
