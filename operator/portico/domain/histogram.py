"""A histogram kept by the code it measures and read by the metrics exporter at scrape time."""

import bisect


class Histogram:
    """Bucketed observations (non-cumulative counts; the last bucket is above every bound), kept in the
    trigger and read by the metrics exporter at scrape time: no metrics library on the hot path."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +Inf: the Prometheus shape."""
        total, out = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out
