"""The backoff of a source whose job creations fail for a shared reason (the queue service is down):
every failure within one window waits for the same window, so a burst of 1,000 failing messages causes
one wait, not 1,000 growing ones; the next window, after another failure, is twice as long."""

import asyncio
import contextlib


class SharedBackoff:
    """Windows of `base`, `2 * base`, `4 * base`, ... seconds, at most `maximum`, on the running loop's
    clock (so tests fast-forward it). A success resets it."""

    def __init__(self, base: float, maximum: float, *, max_doublings: int = 30) -> None:
        if base < 0 or maximum < base:
            raise ValueError("a backoff needs 0 <= base <= maximum")
        self.base = base
        self.maximum = maximum
        self.max_doublings = max_doublings
        self.failures = 0
        self._until = 0.0

    def failed(self) -> float:
        """Record a failure; the seconds until the current window ends (a new window opens when the last
        one has passed)."""
        now = asyncio.get_running_loop().time()
        if now >= self._until:
            self.failures += 1
            doublings = min(self.failures - 1, self.max_doublings)
            self._until = now + min(self.base * 2**doublings, self.maximum)
        return max(0.0, self._until - now)

    def succeeded(self) -> None:
        self.failures = 0
        self._until = 0.0

    async def wait(self, stopping: asyncio.Event) -> bool:
        """Record a failure and wait out the window, or until `stopping` is set. True when stopping
        interrupted the wait."""
        delay = self.failed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        return stopping.is_set()
