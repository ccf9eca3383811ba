"""Prometheus metrics on their own port (kept internal, apart from webhook traffic).

Per-trigger figures are read from the registry when Prometheus scrapes, not counted on the hot path:
a busy webhook pays nothing for being measured. Adapter-level metrics (queue-service request latency,
schedule lateness) live in the default registry and are exposed beside them.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Sized
from typing import Any, Protocol, runtime_checkable

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from portico.domain.histogram import Histogram
from portico.operator.kube import EventRecorder
from portico.operator.projection import counters
from portico.operator.registry import TriggerRegistry
from portico.operator.status import StatusWriter

logger = logging.getLogger(__name__)

PHASES = ("Pending", "Running", "Suspended", "Failed")


@runtime_checkable
class FireLatenessSource(Protocol):
    """A trigger that fires on a schedule and measures how late each fire was."""

    fire_lateness: Histogram


@runtime_checkable
class QueueRequestMetrics(Protocol):
    """A job creator that times its requests to the queue service (the HTTP one does)."""

    request_seconds: Histogram
    requests_by_outcome: Counter[str]


@runtime_checkable
class RequestMetricsSource(Protocol):
    """A trigger that serves requests (the webhook) and counts them by status code and latency."""

    def metrics(self) -> Any: ...


@runtime_checkable
class Elector(Protocol):
    """Leader election as the metrics see it: how often this replica took the Lease."""

    transitions: int


@runtime_checkable
class ShardOwner(Protocol):
    """Sharding as the metrics see it."""

    owned: frozenset[int]
    target: int
    members: tuple[str, ...]
    transitions: int


class TriggerCollector(Collector):
    def __init__(
        self,
        triggers: TriggerRegistry,
        status_writer: StatusWriter,
        events: EventRecorder | None = None,
        elector: Elector | None = None,
        shards: ShardOwner | None = None,
        watch: Sized | None = None,
    ) -> None:
        self.shards = shards
        self.watch = watch
        self.triggers = triggers
        self.status_writer = status_writer
        self.events = events
        self.elector = elector

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "trigger", "source", "target"]
        jobs = CounterMetricFamily("portico_jobs_created", "Jobs created, by trigger.", labels=labels)
        errors = CounterMetricFamily(
            "portico_trigger_errors", "Failed job creations and start failures, by trigger.", labels=labels
        )
        running = GaugeMetricFamily(
            "portico_trigger_running", "1 while the trigger can create jobs, by trigger.", labels=labels
        )
        phases = GaugeMetricFamily("portico_triggers", "Triggers by phase.", labels=["phase"])
        phase = GaugeMetricFamily(
            "portico_trigger_phase",
            "1 for the trigger's current phase, 0 for the others.",
            labels=[*labels, "phase"],
        )
        lateness = HistogramMetricFamily(
            "portico_schedule_fire_lateness_seconds",
            "How late schedule runs were dispatched after they came due (jitter included in the due time).",
            labels=labels,
        )
        requests = CounterMetricFamily(
            "portico_webhook_requests",
            "Webhook requests by trigger and HTTP status code.",
            labels=["namespace", "trigger", "code"],
        )
        latency = HistogramMetricFamily(
            "portico_webhook_request_duration_seconds",
            "Webhook request latency, by trigger.",
            labels=["namespace", "trigger"],
        )
        by_phase = dict.fromkeys(PHASES, 0)
        for managed in self.triggers.managed():
            if not self.triggers.counts_metrics(managed):
                continue
            trigger = managed.trigger
            n_jobs, n_errors = counters(managed, managed.health())
            values = [managed.ref.namespace, managed.ref.name, managed.source or "", managed.target or ""]
            jobs.add_metric(values, n_jobs)
            errors.add_metric(values, n_errors)
            running.add_metric(values, 1.0 if trigger is not None and trigger.is_running else 0.0)
            by_phase[managed.phase] = by_phase.get(managed.phase, 0) + 1
            for name in PHASES:
                phase.add_metric([*values, name], 1.0 if managed.phase == name else 0.0)
            if isinstance(trigger, FireLatenessSource):
                h = trigger.fire_lateness
                lateness.add_metric(values, [(_bound(b), n) for b, n in h.cumulative()], h.sum)
            if isinstance(trigger, RequestMetricsSource):
                self._add_requests(
                    requests, latency, managed.ref.namespace, managed.ref.name, trigger.metrics()
                )
        for name, count in by_phase.items():
            phases.add_metric([name], count)
        yield from (jobs, errors, running, phases, phase, lateness, requests, latency)

        creator = self.triggers.job_creator
        if isinstance(creator, QueueRequestMetrics):
            queue_requests = CounterMetricFamily(
                "portico_queue_requests", "Requests to the queue service, by outcome.", labels=["outcome"]
            )
            for outcome, count in sorted(creator.requests_by_outcome.items()):
                queue_requests.add_metric([outcome], count)
            yield queue_requests
            h = creator.request_seconds
            queue_latency = HistogramMetricFamily(
                "portico_queue_request_duration_seconds", "Latency of requests to the queue service."
            )
            queue_latency.add_metric([], [(_bound(b), n) for b, n in h.cumulative()], h.sum)
            yield queue_latency

        yield from self._leadership()
        patches = CounterMetricFamily("portico_status_patches", "Status patches written.")
        patches.add_metric([], self.status_writer.patches)
        yield patches
        patch_errors = CounterMetricFamily("portico_status_patch_errors", "Status patches that failed.")
        patch_errors.add_metric([], self.status_writer.errors)
        yield patch_errors
        if self.events is not None:
            posted = CounterMetricFamily("portico_events_posted", "Kubernetes Events posted.")
            posted.add_metric([], self.events.posted)
            yield posted
            dropped = CounterMetricFamily(
                "portico_events_dropped", "Kubernetes Events dropped by the per-object rate limit."
            )
            dropped.add_metric([], self.events.dropped)
            yield dropped

    def _leadership(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            "portico_leader",
            "1 while this replica runs single-active sources (holds the Lease or, sharded, at least one "
            "shard; or runs without leader election).",
        )
        runs_some = bool(self.shards.owned) if self.shards is not None else self.triggers.leading
        leader.add_metric([], 1.0 if runs_some else 0.0)
        yield leader
        if self.elector is not None:
            transitions = CounterMetricFamily(
                "portico_leader_transitions", "Times this replica became the leader."
            )
            transitions.add_metric([], self.elector.transitions)
            yield transitions
        if self.shards is not None:
            held = GaugeMetricFamily("portico_shards_held", "Shard Leases this replica holds.")
            held.add_metric([], len(self.shards.owned))
            yield held
            target = GaugeMetricFamily("portico_shards_target", "This replica's even share of the shards.")
            target.add_metric([], self.shards.target)
            yield target
            members = GaugeMetricFamily("portico_shard_members", "Replicas this replica sees alive.")
            members.add_metric([], len(self.shards.members))
            yield members
            moves = CounterMetricFamily(
                "portico_shard_transitions", "Shards this replica took or gave up (churn)."
            )
            moves.add_metric([], self.shards.transitions)
            yield moves
        if self.watch is not None:
            watched = GaugeMetricFamily(
                "portico_jobtriggers_watched",
                "JobTriggers this replica's watch shows: all of them, or, sharded, those of its shards, "
                "those every replica serves and those not labelled with a shard yet.",
            )
            watched.add_metric([], len(self.watch))
            yield watched

    @staticmethod
    def _add_requests(
        requests: CounterMetricFamily, latency: HistogramMetricFamily, namespace: str, name: str, m: Any
    ) -> None:
        for code, count in sorted(m.by_status.items()):
            requests.add_metric([namespace, name, str(code)], count)
        h = m.latency
        latency.add_metric([namespace, name], [(_bound(b), n) for b, n in h.cumulative()], h.sum)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class MetricsServer:
    """Serves `/metrics` from the trigger collector and the process-wide default registry."""

    def __init__(self, host: str, port: int, collector: TriggerCollector) -> None:
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._runner: web.AppRunner | None = None
        self._scraping = asyncio.Lock()
        """One exposition at a time: concurrent scrapes wait rather than each taking a thread."""

    async def _metrics(self, request: web.Request) -> web.Response:
        """The exposition is written in a thread: with thousands of triggers it takes seconds of
        interpreter, which on the event loop would hold every schedule's timer back. The thread takes
        the interpreter lock in short turns, so the loop's timers still run on time."""
        async with self._scraping:
            body = await asyncio.to_thread(self._exposition)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def _exposition(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
