"""How long a failed attempt waits before the next one."""

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class RetryBackoff:
    """Exponential backoff with "equal jitter": attempt n waits between half and all of
    `base`·2ⁿ⁻¹ (capped at `maximum`). The random half spreads out jobs that failed together (a
    downstream outage) so they do not all come back at once; the fixed half keeps a real pause even at
    the unlucky end of the draw."""

    base: float = 1.0
    maximum: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base < 0 or self.maximum < self.base:
            raise ValueError("backoff needs 0 <= base <= maximum")

    def ceiling(self, attempt: int) -> float:
        """The longest wait after the `attempt`-th attempt (1-based)."""
        return float(min(self.maximum, self.base * 2.0 ** min(max(attempt, 1) - 1, 62)))

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        return ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)
