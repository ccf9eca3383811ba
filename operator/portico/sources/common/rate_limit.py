"""A token bucket: the rate limit of anything that answers requests (a webhook endpoint's `rateLimit`)
or posts on someone's behalf (the operator's Events, per object)."""

import asyncio
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second up to `burst`; one request takes one token.

    Time comes from the running loop's clock, so tests can fast-forward it, unless `clock` is given.
    """

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated: float | None = None
        self._clock = clock

    def try_take(self) -> float:
        """0 when a token was taken, else the seconds until one will be available."""
        now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        if self._updated is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate
