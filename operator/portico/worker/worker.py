"""`Worker`: claim → handle → complete or fail, with leases kept while handlers run.

Guarantees, and what gives them:

- A job is only reported done by the worker holding its lease: every call carries the `lease_id`,
  and the queue answers `LeaseLost` once someone else may hold the job.
- A handler never outlives its lease: leases are renewed every third of their length while the
  handler runs; when renewal is refused, or cannot get through before the lease would run out (as
  this worker counts it, from before the request that took the lease), the handler is cancelled and
  the job is not completed. Two workers therefore never run one job at the same time, as long as
  handlers let themselves be cancelled (no blocking calls on the event loop).
- Shutdown (`stop()`): no new claims; running jobs get `shutdown_timeout` to finish; then they are
  cancelled and released back to the queue at once instead of waiting for their lease to run out.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from portico.ports.job_creator import Job, JobStatus
from portico.ports.job_handler import PermanentFailure, RetryLater
from portico.ports.job_queue import JobQueue, JobQueueError, LeaseLost
from portico.worker.handlers import Handlers, HandlerTable
from portico.worker.metrics import WorkerMetrics
from portico.worker.retry import RetryBackoff

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
"""Error texts sent to the queue are cut here (the reference service takes up to 4096)."""
MAX_CLAIM_LIMIT = 100


@dataclass(eq=False)
class _Running:
    job: Job
    lease_id: str
    expires: float
    """Loop time by which the lease surely ends: counted from before the request that set it."""
    renewed: float
    task: asyncio.Task[Any] | None = None
    """The attempt: handling, then reporting. Cancelled (while the handler runs, and only then) when
    the lease is lost or the shutdown timeout passes."""
    in_handler: bool = False
    lost: bool = False
    released: bool = False
    renewing: bool = False
    log: dict[str, Any] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Handlers,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int = 1,
        lease_seconds: float = 30.0,
        handler_timeout: float = 300.0,
        shutdown_timeout: float = 25.0,
        poll_interval: float = 1.0,
        backoff: RetryBackoff | None = None,
        max_payload_bytes: int = 1024 * 1024,
        worker_id: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease_seconds < 3:
            raise ValueError("lease_seconds must be at least 3 (renewal happens every third of it)")
        if min(handler_timeout, shutdown_timeout, poll_interval) <= 0:
            raise ValueError("handler_timeout, shutdown_timeout and poll_interval must be positive")
        self.queue = queue
        self.handlers = HandlerTable(handlers)
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.handler_timeout = handler_timeout
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval
        self.backoff = backoff or RetryBackoff()
        self.max_payload_bytes = max_payload_bytes
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.metrics = metrics or WorkerMetrics(self.handlers.job_types)
        self._running: dict[str, _Running] = {}
        self._renewals: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        """Set when a slot frees up or `stop()` is called: what a full claim loop waits for."""
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()
        self.queue_reachable = False
        """Whether the last claim got an answer: readiness."""

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming; `run()` then drains and returns. Safe to call from a signal handler."""
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Claim and handle jobs until `stop()`; then let running jobs finish (within `shutdown_timeout`)
        and release the rest."""
        keeper = asyncio.create_task(self._keep_leases(), name="worker-leases")
        self.started.set()
        logger.info(
            "worker %s started: queues %s, concurrency %d, job types %s",
            self.worker_id,
            ", ".join(self.queues),
            self.concurrency,
            ", ".join(self.handlers.job_types),
        )
        try:
            await self._claim_loop()
        finally:
            try:
                await self._drain()
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            logger.info("worker %s stopped", self.worker_id)

    async def _drain(self) -> None:
        tasks = {r.task for r in self._running.values() if r.task is not None}
        if tasks:
            logger.info("waiting up to %.0fs for %d running jobs", self.shutdown_timeout, len(tasks))
            _, late = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            if late:
                logger.warning("releasing %d jobs still running after the shutdown timeout", len(late))
                for running in list(self._running.values()):
                    running.released = True
                    self._interrupt(running)
                _, stuck = await asyncio.wait(late, timeout=self.lease_seconds)
                if stuck:
                    logger.error(
                        "%d handlers ignored cancellation; their jobs return to the queue when their "
                        "leases end",
                        len(stuck),
                    )

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on `stop()`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- claiming ----------------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        idle = 0.0
        failures = 0
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                jobs = await self._claim(free)
            except JobQueueError as exc:
                failures += 1
                self.queue_reachable = False
                delay = min(self.poll_interval * 5, self.backoff.ceiling(failures) / 10 + 0.1)
                logger.warning("claiming failed (%s); trying again in %.1fs", exc, delay)
                await self._pause(delay)
                continue
            failures = 0
            self.queue_reachable = True
            if not jobs:
                idle = min(self.poll_interval, max(0.01, idle * 2))
                await self._pause(idle)
                continue
            idle = 0.0
            for job in jobs:
                self._start(job)

    async def _claim(self, free: int) -> list[Job]:
        """Up to `free` jobs, from the queues in the order given: earlier queues are served first."""
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        for queue_name in self.queues:
            wanted = min(free - len(jobs), MAX_CLAIM_LIMIT)
            if wanted <= 0:
                break
            asked = loop.time()
            try:
                claimed = await self.queue.claim(
                    queue_name, worker=self.worker_id, lease_seconds=self.lease_seconds, limit=wanted
                )
            except JobQueueError:
                self.metrics.claims.labels(queue_name, "error").inc()
                if jobs:
                    break
                raise
            self.metrics.claims.labels(queue_name, "jobs" if claimed else "empty").inc()
            for job in claimed:
                if job.lease_id is None:
                    logger.error("the queue returned job %s without a lease; skipping it", job.id)
                    continue
                self._running[job.id] = _Running(job, job.lease_id, asked + self.lease_seconds, asked)
                jobs.append(job)
        if self._stopping.is_set():
            for job in jobs:
                self._running[job.id].released = True
        return jobs

    def _start(self, job: Job) -> None:
        running = self._running[job.id]
        running.log = {"job_id": job.id, "job_type": job.job_type, "attempt": job.attempts}
        running.task = asyncio.create_task(self._run(running), name=f"job-{job.id}")
        self.metrics.in_flight.inc()

    # -- one job -----------------------------------------------------------------------------------------

    async def _run(self, running: _Running) -> None:
        job = running.job
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = "unreported"
        try:
            outcome = await self._attempt(running)
        finally:
            self._running.pop(job.id, None)
            self._wakeup.set()
            self.metrics.in_flight.dec()
            seconds = loop.time() - started
            self.metrics.job_done(job.job_type, outcome, seconds)
            level = logging.INFO if outcome == "completed" else logging.WARNING
            logger.log(
                level,
                "job %s %s: %s",
                job.id,
                job.job_type,
                outcome,
                extra={**running.log, "outcome": outcome, "duration_seconds": round(seconds, 6)},
            )

    async def _attempt(self, running: _Running) -> str:
        job = running.job
        if running.released:
            return await self._report(running, error="released: the worker is stopping", retry_delay=0.0)
        handler = self.handlers.find(job.job_type)
        if handler is None:
            return await self._report(
                running,
                error=f"no handler for job type {job.job_type!r} on worker {self.worker_id}",
                retry_delay=self.backoff.delay(job.attempts),
            )
        if _payload_size(job) > self.max_payload_bytes:
            return await self._report(
                running, error=f"the payload is larger than {self.max_payload_bytes} bytes", retry=False
            )
        timeout = handler.timeout_seconds or self.handler_timeout
        logger.debug("job %s %s: started", job.id, job.job_type, extra=running.log)
        error: BaseException | None = None
        deadline = asyncio.timeout(timeout)
        running.in_handler = True
        try:
            async with deadline:
                await handler.handle(job)
        except asyncio.CancelledError:
            running.in_handler = False
            if not (running.lost or running.released):
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if running.lost:
                return "lease_lost"
            return await self._report(running, error="released: the worker is stopping", retry_delay=0.0)
        except Exception as exc:
            running.in_handler = False
            if deadline.expired():
                return await self._report(
                    running,
                    error=f"the handler did not finish within {timeout:g}s",
                    retry_delay=self.backoff.delay(job.attempts),
                )
            error = exc
        running.in_handler = False
        if running.lost:
            return "lease_lost"
        if error is None:
            return await self._complete(running)
        if isinstance(error, PermanentFailure):
            return await self._report(running, error=f"permanent failure: {error.reason}", retry=False)
        if isinstance(error, RetryLater):
            delay = error.delay if error.delay is not None else self.backoff.delay(job.attempts)
            return await self._report(running, error=f"retry requested: {error.reason}", retry_delay=delay)
        logger.warning(
            "job %s %s: the handler raised %s",
            job.id,
            job.job_type,
            type(error).__name__,
            exc_info=error,
            extra=running.log,
        )
        return await self._report(
            running, error=_describe(error), retry_delay=self.backoff.delay(job.attempts)
        )

    async def _complete(self, running: _Running) -> str:
        try:
            await self.queue.complete(running.job.id, lease_id=running.lease_id)
        except LeaseLost:
            return "lease_lost"
        except JobQueueError as exc:
            logger.error("job %s: could not report completion: %s", running.job.id, exc, extra=running.log)
            return "unreported"
        return "completed"

    async def _report(
        self, running: _Running, *, error: str, retry: bool = True, retry_delay: float = 0.0
    ) -> str:
        try:
            job = await self.queue.fail(
                running.job.id,
                lease_id=running.lease_id,
                error=error[:MAX_ERROR_CHARS],
                retry=retry,
                retry_delay=retry_delay,
            )
        except LeaseLost:
            return "lease_lost"
        except JobQueueError as exc:
            logger.error("job %s: could not report the failure: %s", running.job.id, exc, extra=running.log)
            return "unreported"
        if running.released and job.status == JobStatus.PENDING:
            return "released"
        return {JobStatus.PENDING: "retried", JobStatus.SCHEDULED: "retried", JobStatus.DEAD: "dead"}.get(
            job.status, "failed"
        )

    # -- leases ------------------------------------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Renew each running job's lease once a third of it has passed; give a job up (cancel its
        handler) when its lease would end before renewal gets through."""
        loop = asyncio.get_running_loop()
        third = self.lease_seconds / 3
        margin = min(1.0, self.lease_seconds / 10)
        while True:
            await asyncio.sleep(third / 2)
            now = loop.time()
            for running in list(self._running.values()):
                if running.lost or running.task is None:
                    continue
                if now >= running.expires - margin:
                    self._lose(running, "its lease ran out before it could be renewed")
                elif now - running.renewed >= third and not running.renewing:
                    running.renewing = True
                    renewal = asyncio.create_task(self._renew(running))
                    self._renewals.add(renewal)
                    renewal.add_done_callback(self._renewals.discard)

    async def _renew(self, running: _Running) -> None:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            await self.queue.extend(
                running.job.id, lease_id=running.lease_id, lease_seconds=self.lease_seconds
            )
        except LeaseLost:
            self.metrics.lease_extensions.labels("lost").inc()
            self._lose(running, "the queue says its lease is no longer held")
        except JobQueueError as exc:
            self.metrics.lease_extensions.labels("error").inc()
            logger.warning("job %s: renewing the lease failed: %s", running.job.id, exc, extra=running.log)
        else:
            self.metrics.lease_extensions.labels("ok").inc()
            running.expires = asked + self.lease_seconds
            running.renewed = asked
        finally:
            running.renewing = False

    def _lose(self, running: _Running, why: str) -> None:
        if running.lost:
            return
        running.lost = True
        logger.warning("job %s: giving it up, %s", running.job.id, why, extra=running.log)
        self._interrupt(running)

    @staticmethod
    def _interrupt(running: _Running) -> None:
        """Cancel the handler of an attempt, never its reporting (which is bounded by the queue's own
        deadline and must not be cut off half-way)."""
        if running.in_handler and running.task is not None:
            running.task.cancel()


def _payload_size(job: Job) -> int:
    """The size of the payload as compact JSON."""
    if not job.payload:
        return 2
    return len(json.dumps(job.payload, separators=(",", ":"), default=str))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
