"""What an endpoint counts about its requests, read by the metrics exporter at scrape time."""

from dataclasses import dataclass, field

from portico.domain.histogram import Histogram

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds in seconds, Prometheus' default buckets."""


@dataclass
class RequestMetrics:
    """Requests of one endpoint by status code, and their latency."""

    by_status: dict[int, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    @property
    def count(self) -> int:
        return sum(self.by_status.values())

    def observe(self, status: int, seconds: float) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.latency.observe(seconds)

    def snapshot(self) -> "RequestMetrics":
        latency = Histogram(self.latency.bounds)
        latency.counts = list(self.latency.counts)
        latency.sum = self.latency.sum
        return RequestMetrics(by_status=dict(self.by_status), latency=latency)
