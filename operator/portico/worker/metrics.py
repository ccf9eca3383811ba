"""The worker's Prometheus metrics, in a registry of its own (several workers in one test process do
not collide). The `job_type` label only takes the types the handlers name, plus `other`: job types
come from the queue, and a label must not grow with whatever producers invent."""

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
OUTCOMES = ("completed", "retried", "failed", "dead", "lease_lost", "released", "unreported")
OTHER = "other"


class WorkerMetrics:
    def __init__(self, job_types: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self._job_types = frozenset(job_types)
        self.jobs = Counter(
            "portico_worker_jobs",
            "Jobs handled, by job type and outcome (completed, retried, failed, dead, lease_lost, "
            "released on shutdown, unreported when the queue could not be told).",
            ["job_type", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "portico_worker_job_duration_seconds",
            "Time from claim to outcome of one attempt, by job type.",
            ["job_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "portico_worker_jobs_in_flight", "Jobs being handled now.", registry=self.registry
        )
        self.claims = Counter(
            "portico_worker_claims",
            "Claim requests by queue and result (jobs, empty, error).",
            ["queue", "result"],
            registry=self.registry,
        )
        self.lease_extensions = Counter(
            "portico_worker_lease_extensions",
            "Lease extensions by result (ok, lost, error).",
            ["result"],
            registry=self.registry,
        )
        self._by_type: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def job_type_label(self, job_type: str) -> str:
        return job_type if job_type in self._job_types else OTHER

    def job_done(self, job_type: str, outcome: str, seconds: float) -> None:
        key = (job_type if job_type in self._job_types else OTHER, outcome)
        children = self._by_type.get(key)
        if children is None:
            children = (self.jobs.labels(*key), self.duration.labels(key[0]))
            self._by_type[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
