"""The schedule source: cron and interval schedules (`spec.schedule`) that create a job per fire.

A run is identified by its scheduled time. Its job carries the idempotency key
`<trigger key>:<scheduled time, RFC 3339 UTC>`, and `lastScheduleTime` moves only after the queue service
accepted that job, so a retry, a restart or a fail-over may re-send a run but never creates it twice,
and a run is never skipped without being counted (`skippedRuns`, `missedRuns`) and reported in an Event.
Semantics, with examples: docs/schedule.md.
"""

import asyncio
import contextlib
import hashlib
import logging
import random
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache, partial
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from portico.domain.histogram import Histogram
from portico.domain.model import SpecModel
from portico.domain.trigger import PRIORITY_MAX, PRIORITY_MIN, JobTemplate, TriggerRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.common.emitter import JobEmitter
from portico.sources.schedule.timing import (
    Clock,
    ScheduledCall,
    ScheduleError,
    Scheduler,
    Timetable,
    parse_time_zone,
    parse_timetable,
    validate_expression,
    wall_clock,
)

__all__ = [
    "CATCH_UP_ALL_LIMIT",
    "ScheduleConfig",
    "ScheduleError",
    "ScheduleSource",
    "ScheduleSpec",
    "ScheduleTrigger",
    "Scheduler",
]

logger = logging.getLogger(__name__)

CATCH_UP_ALL_LIMIT = 100
"""`catchUp: All` fires at most this many missed runs (the most recent); older ones are counted missed."""
LATENESS_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
"""Bounds (seconds) of the fire-lateness histogram."""
MISSED_COUNT_LIMIT = 10_000
"""Missed runs are counted one by one up to this many; beyond, the count and the Event say "at least"."""
MAX_JITTER_SECONDS = 3600
MAX_DEADLINE_SECONDS = 31 * 24 * 3600
RETRY_INITIAL_DELAY = 0.5
RETRY_MAX_DELAY = 30.0
STOP_GRACE_SECONDS = 5.0
"""How long stop() lets job creations already in flight finish before cancelling them."""

CatchUpPolicy = Literal["None", "Latest", "All"]
ConcurrencyPolicy = Literal["Allow", "Forbid"]


def _valid_expression(value: str) -> str:
    return validate_expression(value)


def _valid_time_zone(value: str) -> str:
    parse_time_zone(value)
    return value


CronExpressionText = Annotated[str, AfterValidator(_valid_expression)]
TimeZoneName = Annotated[str, AfterValidator(_valid_time_zone)]


def _check_jitter_within_deadline(jitter: float, deadline: int | None) -> None:
    if deadline is not None and jitter >= deadline:
        raise ValueError(
            f"jitterSeconds ({jitter:g}) must be less than startingDeadlineSeconds ({deadline}): "
            "a jittered run would always miss its deadline"
        )


class ScheduleSpec(SpecModel):
    """Fire on a cron or interval schedule (`spec.schedule`), like a Kubernetes CronJob.

    Every fire creates one job from spec.job; runs missed while the operator was down are caught up per
    catchUp within startingDeadlineSeconds.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!has(self.startingDeadlineSeconds)"
                        " || self.jitterSeconds < self.startingDeadlineSeconds"
                    ),
                    "message": "jitterSeconds must be less than startingDeadlineSeconds",
                }
            ]
        }
    )

    cron: CronExpressionText = Field(
        min_length=1,
        max_length=256,
        description=(
            "When to fire: a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. "
            "'0 9 * * MON-FRI'), a 6-field one with a leading seconds field ('*/10 * * * * *'), a macro "
            "(@yearly, @annually, @monthly, @weekly, @daily, @hourly) or '@every <duration>' "
            "('@every 30s', '@every 1h30m', counted from the Unix epoch)."
        ),
    )
    time_zone: TimeZoneName = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description=(
            "IANA time zone the cron fields and exclusionDates are read in, e.g. 'Europe/Berlin'. A time "
            "skipped by a daylight-saving change fires once, shifted forward by the change; a repeated "
            "time fires once, at its first occurrence."
        ),
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DEADLINE_SECONDS,
        description=(
            "A run not started within this many seconds after its scheduled time (operator down, queue "
            "service unavailable) is counted as missed instead of being created late. Unset: no deadline."
        ),
    )
    jitter_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_JITTER_SECONDS,
        description=(
            "Delay each run by up to this many seconds, the same delay for the same trigger and scheduled "
            "time (so a restart does not move it), never reaching the next scheduled time. Spreads load "
            "when many triggers share a schedule."
        ),
    )
    exclusion_dates: list[date] = Field(
        default_factory=list,
        max_length=1000,
        description="Calendar dates (YYYY-MM-DD, in timeZone) on which nothing fires, e.g. public holidays.",
    )
    catch_up: CatchUpPolicy = Field(
        default="Latest",
        description=(
            "Runs missed while the trigger was not running (operator restart, fail-over) and still within "
            "startingDeadlineSeconds: None fires none of them, Latest fires the most recent one, All fires "
            f"each of them (at most the {CATCH_UP_ALL_LIMIT} most recent). Runs missed while suspended are "
            "never caught up."
        ),
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default="Allow",
        description=(
            "Allow creates every run; Forbid skips a run (counted in skippedRuns, with an Event) while "
            "the previous job of this trigger is still pending or running in the queue service."
        ),
    )

    @model_validator(mode="after")
    def _jitter_within_deadline(self) -> "ScheduleSpec":
        _check_jitter_within_deadline(self.jitter_seconds, self.starting_deadline_seconds)
        return self


class ScheduleConfig(BaseModel):
    """One schedule of a `ScheduleTrigger` and the job it creates (the library form of spec.schedule
    plus spec.job)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cron: CronExpressionText = Field(min_length=1, max_length=256)
    job_type: str = Field(min_length=1, max_length=253)
    payload: dict[str, Any] = Field(default_factory=dict)
    queue_name: str = Field(default="default", min_length=1, max_length=253)
    priority: int = Field(default=0, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    metadata: dict[str, str] = Field(default_factory=dict)
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Distinguishes the schedules of one trigger in idempotency keys and job metadata.",
    )
    time_zone: TimeZoneName = "UTC"
    starting_deadline_seconds: int | None = Field(default=None, ge=1, le=MAX_DEADLINE_SECONDS)
    jitter_seconds: float = Field(default=0, ge=0, le=MAX_JITTER_SECONDS)
    exclusion_dates: tuple[date, ...] = ()
    catch_up: CatchUpPolicy = "Latest"
    concurrency_policy: ConcurrencyPolicy = "Allow"

    @model_validator(mode="after")
    def _jitter_within_deadline(self) -> "ScheduleConfig":
        _check_jitter_within_deadline(self.jitter_seconds, self.starting_deadline_seconds)
        return self

    @classmethod
    def from_spec(cls, spec: ScheduleSpec, job: JobTemplate) -> "ScheduleConfig":
        return cls(
            cron=spec.cron,
            job_type=job.type,
            payload=job.payload,
            queue_name=job.queue,
            priority=job.priority,
            metadata=job.metadata,
            time_zone=spec.time_zone,
            starting_deadline_seconds=spec.starting_deadline_seconds,
            jitter_seconds=spec.jitter_seconds,
            exclusion_dates=tuple(spec.exclusion_dates),
            catch_up=spec.catch_up,
            concurrency_policy=spec.concurrency_policy,
        )

    def timetable(self) -> Timetable:
        return parse_timetable(self.cron, self.time_zone, self.exclusion_dates)


@lru_cache(maxsize=4096)
def _timetable(cron: str, time_zone: str, exclusion_dates: tuple[date, ...]) -> Timetable:
    """Timetables are immutable, so triggers with the same schedule share one."""
    return parse_timetable(cron, time_zone, exclusion_dates)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_utc(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class _Run:
    """The state of one schedule of a trigger."""

    __slots__ = (
        "config",
        "deadline",
        "following",
        "handle",
        "jitter",
        "key",
        "last_job_id",
        "last_schedule_time",
        "lock",
        "missed",
        "next_time",
        "skipped",
        "timetable",
    )

    def __init__(self, config: ScheduleConfig, key: str) -> None:
        self.config = config
        self.key = key
        self.timetable = _timetable(config.cron, config.time_zone, config.exclusion_dates)
        self.jitter = timedelta(seconds=config.jitter_seconds)
        self.deadline = (
            timedelta(seconds=config.starting_deadline_seconds) if config.starting_deadline_seconds else None
        )
        self.next_time: datetime | None = None
        self.following: datetime | None = None
        self.handle: ScheduledCall | None = None
        self.last_schedule_time: datetime | None = None
        self.last_job_id: str | None = None
        self.lock: asyncio.Lock | None = None
        self.skipped = 0
        self.missed = 0

    def after(self, moment: datetime) -> datetime:
        return self.timetable.next_after(moment)

    def successor(self, scheduled: datetime) -> datetime:
        if self.next_time == scheduled and self.following is not None:
            return self.following
        return self.after(scheduled)

    def due(self, scheduled: datetime, successor: datetime | None = None) -> datetime:
        """When the run of `scheduled` fires: its scheduled time plus a delay derived from the trigger
        key and the scheduled time, shorter than the gap to the next run so runs keep their order."""
        if not self.jitter:
            return scheduled
        successor = successor or self.successor(scheduled)
        digest = hashlib.blake2b(f"{self.key}|{rfc3339(scheduled)}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
        span_ms = min(self.jitter, successor - scheduled) // timedelta(milliseconds=1)
        return scheduled + timedelta(milliseconds=int(fraction * span_ms))


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
        self.schedules = list(schedules)
        self.ref = ref or TriggerRef(name=_default_name(self.schedules))
        self.emitter = JobEmitter(job_creator, ref=self.ref, source="schedule", events=events)
        self.fire_lateness = Histogram(LATENESS_BUCKETS)
        """Seconds between when each run was due (with its jitter) and when it was dispatched."""
        self.events = self.emitter.events
        self._scheduler = scheduler
        self._resume_from_now = resume_from_now
        self._created_at = _as_utc(created_at)
        self._recorded = _as_utc(last_schedule_time)
        self._started_at: datetime | None = None
        self._runs: list[_Run] = []
        names = [c.name for c in self.schedules if c.name is not None]
        if len(set(names)) != len(names):
            raise ValueError("the schedules of one trigger need distinct names")
        for index, config in enumerate(self.schedules):
            label = config.name or (str(index) if len(self.schedules) > 1 else None)
            run = _Run(config, f"{self.ref.key}:{label}" if label else self.ref.key)
            run.last_schedule_time = _as_utc(last_schedule_time)
            run.last_job_id = last_job_id
            self._runs.append(run)
        self._runs[0].skipped, self._runs[0].missed = skipped_runs, missed_runs
        self._running = False
        self._last_run_now: dict[str, str] | None = None
        self._tasks: set[asyncio.Task[None]] | None = None
        self._stop_waiters: set[asyncio.Future[bool]] | None = None

    # --- JobTrigger -------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._running

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
        for waiter in list(self._stop_waiters or ()):
            if not waiter.done():
                waiter.set_result(True)
        for run in self._runs:
            if run.handle is not None:
                run.handle.cancel()
            run.handle = run.next_time = run.following = None
        tasks = set(self._tasks or ())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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

    # --- planning ---------------------------------------------------------------------------------

    def _run_named(self, schedule: int | str) -> _Run:
        if isinstance(schedule, int):
            return self._runs[schedule]
        for run in self._runs:
            if run.config.name == schedule:
                return run
        raise KeyError(f"no schedule named {schedule!r}")

    def _plan(self, run: _Run, now: datetime, anchor: datetime | None) -> None:
        """Schedule the first run still to come and, when `anchor` (the last run handled) is given,
        handle the runs between it and now per the catch-up policy."""
        pending = self._first_pending(run, now, anchor)
        if anchor is not None:
            self._catch_up(run, anchor, pending, now)
        self._schedule(run, pending)

    def _first_pending(self, run: _Run, now: datetime, anchor: datetime | None) -> datetime:
        """The first scheduled time after `anchor` whose (jittered) fire time is not yet past."""
        start = now - run.jitter - timedelta(seconds=1)
        if anchor is not None and anchor > start:
            start = anchor
        scheduled = run.after(start)
        while True:
            successor = run.after(scheduled)
            if run.due(scheduled, successor) >= now:
                run.following = successor
                return scheduled
            scheduled = successor

    def _catch_up(self, run: _Run, anchor: datetime, pending: datetime, now: datetime) -> None:
        """Runs scheduled after `anchor` and before `pending` were missed: fire some per catch_up (within
        the deadline), count and report the others."""
        policy = run.config.catch_up
        eligible_after = anchor
        if run.deadline is not None:
            eligible_after = max(anchor, now - run.deadline - timedelta(microseconds=1))
        limit = {"None": 0, "Latest": 1, "All": CATCH_UP_ALL_LIMIT}[policy]
        chosen = self._latest_runs(run, eligible_after, pending, limit)
        total, capped = self._count_runs(run, anchor, pending)
        if total == 0:
            return
        for scheduled in chosen:
            self._dispatch(run, scheduled, horizon=pending)
        missed = total - len(chosen)
        if missed > 0:
            run.missed += missed
            what = f"at least {missed}" if capped else str(missed)
            first = run.after(anchor)
            fired = f"; fired {len(chosen)} (catchUp: {policy})" if chosen else f" (catchUp: {policy})"
            deadline = (
                f", startingDeadlineSeconds: {run.config.starting_deadline_seconds}" if run.deadline else ""
            )
            self.events.event(
                "Warning",
                "ScheduleMissed",
                f"{what} run(s) scheduled from {rfc3339(first)} to before {rfc3339(pending)} were not "
                f"created while the trigger was not running on time{fired}{deadline}.",
            )
            self.events.changed()

    def _latest_runs(self, run: _Run, after: datetime, before: datetime, limit: int) -> list[datetime]:
        """Up to `limit` most recent scheduled times in (after, before), oldest first. Searches windows
        that double back from `before`, so the cost follows the number of runs returned, not the length
        of the outage."""
        if limit == 0 or after >= before:
            return []
        span = timedelta(seconds=1)
        while True:
            start = max(after, before - span)
            found: deque[datetime] = deque(maxlen=limit)
            scheduled = run.after(start)
            count = 0
            while scheduled < before:
                found.append(scheduled)
                count += 1
                scheduled = run.after(scheduled)
            if count >= limit or start == after:
                return list(found)
            span *= 2

    def _count_runs(self, run: _Run, after: datetime, before: datetime) -> tuple[int, bool]:
        count = 0
        scheduled = run.after(after)
        while scheduled < before:
            count += 1
            if count >= MISSED_COUNT_LIMIT:
                return count, True
            scheduled = run.after(scheduled)
        return count, False

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
        if run.due(successor, run.after(successor) if run.jitter else None) < now:
            # More than one run came due at once: the process was not running on time (a blocked event
            # loop, a suspended host, a clock stepped forward). Same as a restart: the catch-up policy.
            before = scheduled - timedelta(microseconds=1)
            pending = self._first_pending(run, now, before)
            self._catch_up(run, before, pending, now)
            self._schedule(run, pending)
        elif run.deadline is not None and now - scheduled > run.deadline:
            self._report_missed(run, scheduled, f"it came due {now - scheduled} late, after its deadline")
            self._schedule(run, successor)
        else:
            self.fire_lateness.observe(max(0.0, (now - run.due(scheduled, successor)).total_seconds()))
            self._dispatch(run, scheduled, horizon=successor)
            self._schedule(run, successor)
        self.events.changed()

    # --- firing -----------------------------------------------------------------------------------

    def _dispatch(self, run: _Run, scheduled: datetime, *, horizon: datetime) -> None:
        task = asyncio.get_running_loop().create_task(self._fire(run, scheduled, horizon))
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire(self, run: _Run, scheduled: datetime, horizon: datetime) -> None:
        """Create the job of one run, retrying retryable failures with backoff until the next run is due
        (`horizon`) or the deadline passes; then the run is counted missed."""
        give_up_at = horizon
        if run.deadline is not None:
            give_up_at = min(give_up_at, scheduled + run.deadline)
        key = f"{run.key}:{rfc3339(scheduled)}"
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
            delay = min(RETRY_MAX_DELAY, RETRY_INITIAL_DELAY * 2**attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            if self.scheduler.now() + timedelta(seconds=delay) >= give_up_at:
                until = "its deadline" if give_up_at < horizon else "the next scheduled run"
                self._report_missed(run, scheduled, f"{error} (retried {attempt} time(s) until {until})")
                return
            if await self._wait_stopped(delay):
                return

    async def _create(self, run: _Run, scheduled: datetime, key: str) -> Job | None:
        """The job of one run, or None when Forbid skips it."""
        forbid = run.config.concurrency_policy == "Forbid"
        if forbid and run.lock is None:
            run.lock = asyncio.Lock()
        async with run.lock if forbid and run.lock is not None else contextlib.nullcontext():
            async with self.scheduler.fire_slots:
                if forbid and run.last_job_id is not None:
                    previous = await self._get_job(run.last_job_id)
                    if previous is not None and previous.status.is_active and previous.idempotency_key != key:
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
        config = run.config
        metadata = {**config.metadata, "scheduled_time": rfc3339(scheduled), **(extra or {})}
        if config.name:
            metadata["schedule"] = config.name
        return await self.emitter.emit(
            job_type=config.job_type,
            payload=config.payload,
            queue_name=config.queue_name,
            priority=config.priority,
            metadata=metadata,
            idempotency_key=key,
        )

    def _accepted(self, run: _Run, scheduled: datetime, job: Job) -> None:
        if job.existing and self._unrecorded(scheduled):
            self.emitter.jobs_created_count += 1
        if run.last_schedule_time is None or scheduled > run.last_schedule_time:
            run.last_schedule_time = scheduled
        self.events.changed()

    def _unrecorded(self, scheduled: datetime) -> bool:
        """Whether a run the queue service already had was accepted by an earlier instance that could not
        record it (killed before its status was written): due before this instance started, after the
        last run it was told about. Its job then counts here, or nobody counts it."""
        return (
            self._started_at is not None
            and scheduled < self._started_at
            and (self._recorded is None or scheduled > self._recorded)
        )

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
        """Sleep `delay` seconds; True if the trigger was stopped meanwhile. (A future per wait rather
        than an Event per trigger: idle triggers stay small.)"""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        if self._stop_waiters is None:
            self._stop_waiters = set()
        self._stop_waiters.add(waiter)
        handle = loop.call_later(delay, _resolve, waiter, False)
        try:
            return await waiter
        finally:
            handle.cancel()
            self._stop_waiters.discard(waiter)


def _resolve(waiter: "asyncio.Future[bool]", value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _default_name(schedules: Sequence[ScheduleConfig]) -> str:
    """A name derived from the schedules themselves, so two library triggers with different schedules
    never share idempotency keys, and the same trigger keeps its keys across restarts."""
    digest = hashlib.sha256("\n".join(c.model_dump_json() for c in schedules).encode()).hexdigest()
    return f"schedule-{digest[:12]}"


class ScheduleSource(TriggerSource[ScheduleSpec]):
    """Builds schedule triggers; owns the process-wide `Scheduler` they all share."""

    name = "schedule"
    spec_model = ScheduleSpec

    def __init__(self, *, clock: Clock = wall_clock, max_concurrent_fires: int = 256) -> None:
        self._clock = clock
        self._max_concurrent_fires = max_concurrent_fires
        self.scheduler = self._new_scheduler()

    def _new_scheduler(self) -> Scheduler:
        return Scheduler(clock=self._clock, max_concurrent_fires=self._max_concurrent_fires)

    async def open(self) -> None:
        if self.scheduler.closed:
            self.scheduler = self._new_scheduler()

    async def close(self) -> None:
        await self.scheduler.close()

    def build(self, spec: ScheduleSpec, context: TriggerContext) -> ScheduleTrigger:
        """A trigger resuming from the resource's status: `lastScheduleTime` (else the resource's
        creation), `lastJobId` and the counters; `resumedAt` (set by the operator when a suspension
        ends) means runs missed before now are not caught up."""
        status = context.status
        try:
            config = ScheduleConfig.from_spec(spec, context.template)
            last_schedule_time = _as_utc(status.get("lastScheduleTime"))
        except (ValueError, TypeError) as exc:
            raise TriggerStartError(
                f"invalid schedule: {exc}", reason="InvalidSpec", retryable=False
            ) from None
        return ScheduleTrigger(
            context.job_creator,
            [config],
            ref=context.ref,
            events=context.events,
            scheduler=self.scheduler,
            last_schedule_time=last_schedule_time,
            last_job_id=status.get("lastJobId") or None,
            created_at=context.created_at,
            resume_from_now=bool(status.get("resumedAt")),
            skipped_runs=int(status.get("skippedRuns") or 0),
            missed_runs=int(status.get("missedRuns") or 0),
        )
