"""`ScheduleTrigger`: creates a job at every scheduled time of each of its schedules, never twice.

A run's job carries the idempotency key `<trigger key>:<scheduled time, RFC 3339 UTC>`, and
`lastScheduleTime` moves only after the queue service accepted that job, so a retry, a restart or a
fail-over may re-send a run but never creates it twice, and a run is never skipped without being counted
(`skippedRuns`, `missedRuns`) and reported in an Event. What is due when is decided in `planning`; this
module acts on it. Semantics, with examples: docs/schedule.md.
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from portico.domain.histogram import Histogram
from portico.domain.timestamps import rfc3339
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.sources.common.drain import InFlight
from portico.sources.common.emitter import JobEmitter
from portico.sources.schedule.cron import ScheduleError
from portico.sources.schedule.planning import RunTimes, as_utc, forbids, retry_delay, run_key, unrecorded
from portico.sources.schedule.scheduler import ScheduledCall, Scheduler
from portico.sources.schedule.spec import ScheduleConfig, default_name

logger = logging.getLogger(__name__)

LATENESS_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
"""Bounds (seconds) of the fire-lateness histogram."""
_NO_LATENESS = Histogram(LATENESS_BUCKETS)
"""What a trigger that has not fired yet reports; never observed into."""
STOP_GRACE_SECONDS = 5.0
"""How long stop() lets job creations already in flight finish before cancelling them."""


class _Run(RunTimes):
    """One schedule of a trigger: its times (`RunTimes`) and what happened to it."""

    __slots__ = (
        "config",
        "following",
        "handle",
        "last_job_id",
        "last_schedule_time",
        "lock",
        "missed",
        "next_time",
        "skipped",
    )

    def __init__(self, config: ScheduleConfig, key: str) -> None:
        spec = config.spec
        deadline = spec.starting_deadline_seconds
        super().__init__(
            spec.timetable,
            key,
            timedelta(seconds=spec.jitter_seconds),
            timedelta(seconds=deadline) if deadline else None,
        )
        self.config = config
        self.next_time: datetime | None = None
        """The scheduled time the scheduler will wake this schedule for."""
        self.following: datetime | None = None
        """The scheduled time after `next_time`, when known (the jitter of `next_time` needed it)."""
        self.handle: ScheduledCall | None = None
        self.last_schedule_time: datetime | None = None
        self.last_job_id: str | None = None
        self.lock: asyncio.Lock | None = None
        """Serialises the runs of a `Forbid` schedule, so two cannot both find no active job."""
        self.skipped = 0
        self.missed = 0


class ScheduleTrigger(JobTrigger):
    """Creates a job at every scheduled time of each of its schedules.

    Library use: `ScheduleTrigger(job_creator=..., schedules=[ScheduleConfig(cron="0 9 * * *",
    job_type="report.daily")])`, then `await trigger.start()`.

    To resume after a restart, pass what the previous instance reported: `last_schedule_time` (runs after
    it that were missed are caught up per `catch_up`), `last_job_id` (for `Forbid`). Until a first run has
    been recorded, `created_at` (when the trigger was defined, a resource's `creationTimestamp`) anchors
    the catch-up instead, as for a Kubernetes CronJob: a crash before `last_schedule_time` was saved then
    loses no run, and re-sending a run already accepted is harmless (same idempotency key). Without
    either, runs before start() are not caught up. `resume_from_now` fires nothing missed before
    start(), for a resumed suspension; start() after stop() on the same instance does the same.
    """

    def __init__(
        self,
        job_creator: JobCreator,
        schedules: Sequence[ScheduleConfig],
        *,
        ref: TriggerRef | None = None,
        events: TriggerEvents | None = None,
        scheduler: Scheduler | None = None,
        last_schedule_time: datetime | str | None = None,
        last_job_id: str | None = None,
        created_at: datetime | str | None = None,
        resume_from_now: bool = False,
        skipped_runs: int = 0,
        missed_runs: int = 0,
    ) -> None:
        if not schedules:
            raise ValueError("a ScheduleTrigger needs at least one schedule")
        names = [config.name for config in schedules if config.name is not None]
        if len(set(names)) != len(names) or "" in names:
            raise ValueError("the schedules of one trigger need distinct, non-empty names")
        self.ref = ref or TriggerRef(name=default_name(schedules))
        self.emitter = JobEmitter(job_creator, ref=self.ref, source="schedule", events=events)
        self.events = self.emitter.events
        self._scheduler = scheduler
        self._resume_from_now = resume_from_now
        self._created_at = as_utc(created_at)
        self._recorded = as_utc(last_schedule_time)
        self._started_at: datetime | None = None
        self._runs: list[_Run] = []
        for index, config in enumerate(schedules):
            label = config.name or (str(index) if len(schedules) > 1 else None)
            run = _Run(config, f"{self.ref.key}:{label}" if label else self.ref.key)
            run.last_schedule_time = self._recorded
            run.last_job_id = last_job_id
            self._runs.append(run)
        self._runs[0].skipped, self._runs[0].missed = skipped_runs, missed_runs
        self._running = False
        self._last_run_now: dict[str, str] | None = None
        # Created on first use: ten thousand idle triggers should not each hold a set or a histogram.
        self._in_flight: InFlight | None = None
        self._fire_lateness: Histogram | None = None
        self._stopping: asyncio.Future[None] | None = None

    # --- JobTrigger -------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def fire_lateness(self) -> Histogram:
        """Seconds between when each run was due (with its jitter) and when it was dispatched."""
        return self._fire_lateness or _NO_LATENESS

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = Scheduler.for_running_loop()
        return self._scheduler

    async def start(self) -> None:
        if self._running:
            return
        scheduler = self.scheduler
        if scheduler.closed:
            raise TriggerStartError("the schedule source is closed", reason="SchedulerClosed", retryable=True)
        self._running = True
        now = scheduler.now()
        self._started_at = now
        resume_from_now = self._resume_from_now
        try:
            for run in self._runs:
                self._plan(run, now, None if resume_from_now else self._anchor(run))
        except Exception as exc:
            await self.stop()
            self._resume_from_now = resume_from_now
            if isinstance(exc, ScheduleError):
                raise TriggerStartError(str(exc), reason="InvalidSchedule", retryable=False) from exc
            raise
        self.events.changed()

    def _anchor(self, run: _Run) -> datetime | None:
        """The last run handled: the last one accepted, else the creation of the trigger (every run
        after it is due, none was handled yet)."""
        return run.last_schedule_time or self._created_at

    async def stop(self) -> None:
        """Stop firing. Job creations in flight get `STOP_GRACE_SECONDS` to finish; retries waiting for
        their next attempt end at once (a later start() resumes from lastScheduleTime)."""
        if not self._running:
            return
        self._running = False
        self._resume_from_now = True
        if self._stopping is not None:
            self._stopping.set_result(None)
            self._stopping = None
        for run in self._runs:
            if run.handle is not None:
                run.handle.cancel()
            run.handle = run.next_time = run.following = None
        if self._in_flight is not None:
            await self._in_flight.drain(STOP_GRACE_SECONDS)
        self.events.changed()

    def get_health(self) -> TriggerHealth:
        return self.emitter.health(is_running=self._running, source_status=self.source_status())

    def source_status(self) -> dict[str, Any]:
        """`lastScheduleTime` (latest scheduled time whose job was accepted), `nextScheduleTime` (the
        next scheduled time, before jitter; None while stopped), `skippedRuns`, `missedRuns`, and
        `lastRunNow` (the last manual run's token and job, so a client that asked can see it done)."""
        last = [r.last_schedule_time for r in self._runs if r.last_schedule_time is not None]
        upcoming = [r.next_time for r in self._runs if r.next_time is not None]
        status: dict[str, Any] = {
            "lastScheduleTime": rfc3339(max(last)) if last else None,
            "nextScheduleTime": rfc3339(min(upcoming)) if upcoming and self._running else None,
            "skippedRuns": sum(r.skipped for r in self._runs),
            "missedRuns": sum(r.missed for r in self._runs),
        }
        if self._last_run_now is not None:
            status["lastRunNow"] = dict(self._last_run_now)
        return status

    async def run_now(self, token: str, *, schedule: int | str = 0) -> Job:
        """Fire once now, outside the schedule (the `run-now` annotation). The idempotency key comes
        from `token`, so repeating a token returns the same job. Ignores concurrencyPolicy, like
        `kubectl create job --from=cronjob/...`. Raises `JobCreationError`."""
        if not token:
            raise ValueError("a run-now token must not be empty")
        run = self._run_named(schedule)
        now = self.scheduler.now()
        job = await self._emit(run, now, f"{run.key}:run-now:{token}", extra={"run_now": token})
        run.last_job_id = job.id
        self._last_run_now = {"token": token, "jobId": job.id, "time": rfc3339(now)}
        self.events.changed()
        return job

    def _run_named(self, schedule: int | str) -> _Run:
        if isinstance(schedule, int):
            return self._runs[schedule]
        for run in self._runs:
            if run.config.name == schedule:
                return run
        raise KeyError(f"no schedule named {schedule!r}")

    # --- acting on the plan -----------------------------------------------------------------------

    def _plan(self, run: _Run, now: datetime, anchor: datetime | None) -> None:
        """Schedule the first run still to come and, when `anchor` (the last run handled) is given,
        handle the runs between it and now per the catch-up policy."""
        pending, run.following = run.first_pending(now, anchor)
        if anchor is not None:
            self._catch_up(run, anchor, pending, now)
        self._schedule(run, pending)

    def _catch_up(self, run: _Run, anchor: datetime, pending: datetime, now: datetime) -> None:
        """Fire the runs the catch-up policy picks among those missed; count and report the others."""
        plan = run.catch_up(anchor, pending, now, run.config.spec.catch_up)
        if plan is None:
            return
        for scheduled in plan.fire:
            self._dispatch(run, scheduled, horizon=pending)
        if plan.missed > 0:
            run.missed += plan.missed
            spec = run.config.spec
            self.events.event(
                "Warning", "ScheduleMissed", plan.describe(pending, spec.starting_deadline_seconds)
            )
            self.events.changed()

    def _schedule(self, run: _Run, scheduled: datetime) -> None:
        run.next_time = scheduled
        if run.following is None or run.following <= scheduled:
            run.following = run.after(scheduled) if run.jitter else None
        run.handle = self.scheduler.call_at(run.due(scheduled, run.following), partial(self._on_due, run))

    def _on_due(self, run: _Run) -> None:
        """The scheduler says the next run of `run` is due."""
        scheduled = run.next_time
        if not self._running or scheduled is None:
            return
        try:
            self._advance(run, scheduled)
        except Exception as exc:
            # Never stop firing in silence: a schedule that cannot go on says so where users look.
            logger.exception("%s: the schedule cannot continue", self.ref)
            run.next_time = None
            message = f"the schedule stopped after {rfc3339(scheduled)}: {type(exc).__name__}: {exc}"
            self.emitter.record_error(message)
            self.events.event("Warning", "ScheduleFailed", message[:1].upper() + message[1:] + ".")

    def _advance(self, run: _Run, scheduled: datetime) -> None:
        now = self.scheduler.now()
        successor = run.following if run.following is not None else run.after(scheduled)
        run.following = None
        step = run.step(scheduled, successor, now)
        if step == "behind":
            # Same as a restart: the catch-up policy decides.
            before = scheduled - timedelta(microseconds=1)
            pending, run.following = run.first_pending(now, before)
            self._catch_up(run, before, pending, now)
            self._schedule(run, pending)
        elif step == "late":
            self._report_missed(run, scheduled, f"it came due {now - scheduled} late, after its deadline")
            self._schedule(run, successor)
        else:
            if self._fire_lateness is None:
                self._fire_lateness = Histogram(LATENESS_BUCKETS)
            self._fire_lateness.observe(max(0.0, (now - run.due(scheduled, successor)).total_seconds()))
            self._dispatch(run, scheduled, horizon=successor)
            self._schedule(run, successor)
        self.events.changed()

    # --- firing -----------------------------------------------------------------------------------

    def _dispatch(self, run: _Run, scheduled: datetime, *, horizon: datetime) -> None:
        if self._in_flight is None:
            self._in_flight = InFlight()
        self._in_flight.start(self._fire(run, scheduled, horizon))

    async def _fire(self, run: _Run, scheduled: datetime, horizon: datetime) -> None:
        """Create the job of one run, retrying retryable failures with backoff until the next run is due
        (`horizon`) or the deadline passes; then the run is counted missed."""
        give_up_at = run.give_up_at(scheduled, horizon)
        key = run_key(run.key, scheduled)
        attempt = 0
        while self._running:
            try:
                job = await self._create(run, scheduled, key)
            except JobCreationError as exc:
                error: str = str(exc)
                retryable = exc.retryable
            except Exception as exc:
                logger.exception("%s: creating the run scheduled for %s failed", self.ref, rfc3339(scheduled))
                error = f"{type(exc).__name__}: {exc}"
                self.emitter.record_error(f"job creation failed: {error}")
                retryable = True
            else:
                if job is not None:
                    self._accepted(run, scheduled, job)
                return
            if not retryable:
                self._report_missed(run, scheduled, f"the queue service rejected it: {error}")
                return
            delay = retry_delay(attempt)
            attempt += 1
            if self.scheduler.now() + timedelta(seconds=delay) >= give_up_at:
                until = "its deadline" if give_up_at < horizon else "the next scheduled run"
                self._report_missed(run, scheduled, f"{error} (retried {attempt} time(s) until {until})")
                return
            if await self._wait_stopped(delay):
                return

    async def _create(self, run: _Run, scheduled: datetime, key: str) -> Job | None:
        """The job of one run, or None when Forbid skips it."""
        forbid = run.config.spec.concurrency_policy == "Forbid"
        if forbid and run.lock is None:
            run.lock = asyncio.Lock()
        async with run.lock if forbid and run.lock is not None else contextlib.nullcontext():
            async with self.scheduler.fire_slots:
                if forbid and run.last_job_id is not None:
                    previous = await self._get_job(run.last_job_id)
                    if previous is not None and forbids(previous, key):
                        self._skipped(run, scheduled, previous)
                        return None
                job = await self._emit(run, scheduled, key)
            run.last_job_id = job.id
            return job

    async def _get_job(self, job_id: str) -> Job | None:
        try:
            return await self.emitter.job_creator.get_job(job_id)
        except JobCreationError as exc:
            self.emitter.record_error(f"checking the previous job {job_id} failed: {exc}")
            raise

    async def _emit(
        self, run: _Run, scheduled: datetime, key: str, extra: Mapping[str, str] | None = None
    ) -> Job:
        job, name = run.config.job, run.config.name
        metadata = {**job.metadata, "scheduled_time": rfc3339(scheduled), **(extra or {})}
        if name:
            metadata["schedule"] = name
        return await self.emitter.emit(
            job_type=job.type,
            payload=job.payload,
            queue_name=job.queue,
            priority=job.priority,
            metadata=metadata,
            idempotency_key=key,
        )

    def _accepted(self, run: _Run, scheduled: datetime, job: Job) -> None:
        if job.existing and unrecorded(scheduled, self._started_at, self._recorded):
            self.emitter.jobs_created_count += 1
        if run.last_schedule_time is None or scheduled > run.last_schedule_time:
            run.last_schedule_time = scheduled
        self.events.changed()

    def _skipped(self, run: _Run, scheduled: datetime, previous: Job) -> None:
        run.skipped += 1
        self.events.event(
            "Warning",
            "ScheduleSkipped",
            f"Skipped the run scheduled for {rfc3339(scheduled)}: the previous job {previous.id} is still "
            f"{previous.status.value} (concurrencyPolicy: Forbid).",
        )
        self.events.changed()

    def _report_missed(self, run: _Run, scheduled: datetime, why: str) -> None:
        run.missed += 1
        self.events.event(
            "Warning", "ScheduleMissed", f"The run scheduled for {rfc3339(scheduled)} was not created: {why}."
        )
        self.events.changed()

    async def _wait_stopped(self, delay: float) -> bool:
        """Sleep `delay` seconds; True if the trigger was stopped meanwhile. (One future per trigger,
        made when a retry first waits: idle triggers stay small.)"""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_future()
        done, _ = await asyncio.wait({self._stopping}, timeout=delay)
        return bool(done)
