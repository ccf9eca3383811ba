"""`spec.schedule`, the one model of a schedule: the CRD schema, `portico validate`, the operator and the
library all read it, and the trigger takes it already validated.

`ScheduleConfig` is the seed's name for one schedule of a `ScheduleTrigger` with its job. It only builds
a `ScheduleSpec` and a `JobTemplate` (the `spec.job` model) from the seed's keyword arguments: every rule
is theirs.
"""

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic_core import to_json

from portico.domain.model import SpecModel
from portico.domain.trigger import JobTemplate
from portico.sources.schedule.cron import parse_time_zone
from portico.sources.schedule.planning import CATCH_UP_ALL_LIMIT, CatchUpPolicy, ConcurrencyPolicy
from portico.sources.schedule.timetable import Timetable, shared_timetable, validate_expression

MAX_JITTER_SECONDS = 3600
MAX_DEADLINE_SECONDS = 31 * 24 * 3600


def _valid_time_zone(value: str) -> str:
    parse_time_zone(value)
    return value


CronExpressionText = Annotated[str, AfterValidator(validate_expression)]
TimeZoneName = Annotated[str, AfterValidator(_valid_time_zone)]


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
        deadline = self.starting_deadline_seconds
        if deadline is not None and self.jitter_seconds >= deadline:
            raise ValueError(
                f"jitterSeconds ({self.jitter_seconds}) must be less than startingDeadlineSeconds "
                f"({deadline}): a jittered run would always miss its deadline"
            )
        return self

    @property
    def timetable(self) -> Timetable:
        """The fire times this spec means, from the parser that validated it (one object for every spec
        with the same schedule, kept by that parser's cache rather than by each spec)."""
        return shared_timetable(self.cron, self.time_zone, tuple(self.exclusion_dates))


class ScheduleConfig:
    """One schedule of a `ScheduleTrigger` and the job it creates, as the seed writes it:
    `ScheduleConfig(cron="0 9 * * *", job_type="report.daily", payload={...}, queue_name="reports",
    priority=5)`.

    Any other `spec.schedule` field may be given in snake_case (`time_zone="Europe/Berlin"`,
    `catch_up="All"`, ...); `name` tells the schedules of one trigger apart in idempotency keys and job
    metadata. Invalid values raise pydantic's `ValidationError`, from `ScheduleSpec` or `JobTemplate`.
    """

    __slots__ = ("job", "name", "spec")

    spec: ScheduleSpec
    job: JobTemplate
    name: str | None

    def __init__(
        self,
        cron: str,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        queue_name: str = "default",
        priority: int = 0,
        metadata: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        **schedule: Any,
    ) -> None:
        self.spec = ScheduleSpec(cron=cron, **schedule)
        job: dict[str, Any] = {"type": job_type, "queue": queue_name, "priority": priority}
        # Only what was given: the model keeps the names of the fields set, and five names cost three
        # times what four do, for each of thousands of schedules.
        if payload is not None:
            job["payload"] = payload
        if metadata is not None:
            job["metadata"] = metadata
        self.job = JobTemplate(**job)
        self.name = name

    @classmethod
    def of(cls, spec: ScheduleSpec, job: JobTemplate, *, name: str | None = None) -> "ScheduleConfig":
        """The pair from models already validated (a resource's spec.schedule and spec.job): nothing is
        parsed again."""
        config = cls.__new__(cls)
        config.spec, config.job, config.name = spec, job, name
        return config

    @property
    def cron(self) -> str:
        return self.spec.cron

    @property
    def job_type(self) -> str:
        return self.job.type

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def queue_name(self) -> str:
        return self.job.queue

    @property
    def priority(self) -> int:
        return self.job.priority

    @property
    def metadata(self) -> dict[str, str]:
        return self.job.metadata

    def __repr__(self) -> str:
        return f"ScheduleConfig(spec={self.spec!r}, job={self.job!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScheduleConfig):
            return NotImplemented
        return (self.spec, self.job, self.name) == (other.spec, other.job, other.name)


def default_name(schedules: Sequence[ScheduleConfig]) -> str:
    """A name derived from the schedules themselves, so two library triggers with different schedules
    never share idempotency keys, and the same trigger keeps its keys across restarts and upgrades (the
    digest is taken over the same JSON the earlier single-model `ScheduleConfig` dumped)."""
    lines = []
    for config in schedules:
        spec, job = config.spec, config.job
        lines.append(
            to_json(
                {
                    "cron": spec.cron,
                    "job_type": job.type,
                    "payload": job.payload,
                    "queue_name": job.queue,
                    "priority": job.priority,
                    "metadata": job.metadata,
                    "name": config.name,
                    "time_zone": spec.time_zone,
                    "starting_deadline_seconds": spec.starting_deadline_seconds,
                    "jitter_seconds": float(spec.jitter_seconds),
                    "exclusion_dates": spec.exclusion_dates,
                    "catch_up": spec.catch_up,
                    "concurrency_policy": spec.concurrency_policy,
                }
            ).decode()
        )
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return f"schedule-{digest[:12]}"
