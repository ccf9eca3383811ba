"""Prometheus metrics of one queue service, on a registry of its own (several services, or a service
and an operator, can share a process in tests without clashing)."""

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from portico.queue_service.store import JobStore

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _StoreCollector(Collector):
    """Figures read from the store at scrape time."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.counts: list[tuple[str, str, int]] = []

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "portico_queue_jobs", "Jobs stored, by queue and status.", labels=["queue", "status"]
        )
        for queue, status, count in self.counts:
            jobs.add_metric([queue, status], count)
        yield jobs
        yield CounterMetricFamily(
            "portico_queue_commits", "SQLite transactions committed by the writer.", value=self.store.commits
        )
        yield CounterMetricFamily(
            "portico_queue_committed_operations",
            "Write operations committed; divided by commits, the mean group-commit size.",
            value=self.store.committed_ops,
        )


class QueueMetrics:
    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "portico_queue_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "portico_queue_http_request_duration_seconds",
            "Time from reading a request to its answer, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "portico_queue_jobs_created", "New jobs stored, by queue.", ["queue"], registry=self.registry
        )
        self.idempotent_repeats = Counter(
            "portico_queue_idempotent_repeats",
            "Create requests answered with an existing job (same Idempotency-Key).",
            registry=self.registry,
        )
        self._store = _StoreCollector(store)
        self.registry.register(self._store)
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._created_series: dict[str, Any] = {}

    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """Label lookups are cached: this runs for every request."""
        series = self._request_series.get((method, route, status))
        if series is None:
            series = (self.requests.labels(method, route, str(status)), self.request_seconds.labels(route))
            self._request_series[(method, route, status)] = series
        series[0].inc()
        series[1].observe(seconds)

    def job_created(self, queue: str, created: bool) -> None:
        if not created:
            self.idempotent_repeats.inc()
            return
        counter = self._created_series.get(queue)
        if counter is None:
            counter = self._created_series[queue] = self.jobs_created.labels(queue)
        counter.inc()

    async def render(self) -> bytes:
        """The exposition text, with the store's job counts read just now."""
        self._store.counts = await self._store.store.counts()
        return generate_latest(self.registry)
