"""What a schedule trigger adds to its JobTrigger's status."""

from datetime import datetime

from pydantic import Field

from portico.domain.model import SpecModel


class RunNowStatus(SpecModel):
    token: str = Field(description="The value of the run-now annotation that asked for this run.")
    job_id: str = Field(description="ID of the job the queue service accepted for it.")
    time: datetime = Field(description="When the manual run fired.")


class ScheduleStatus(SpecModel):
    last_schedule_time: datetime | None = Field(
        default=None, description="Schedule: the last scheduled time whose job the queue service accepted."
    )
    next_schedule_time: datetime | None = Field(
        default=None, description="Schedule: the next time the schedule fires."
    )
    skipped_runs: int | None = Field(
        default=None, description="Schedule: runs skipped by concurrencyPolicy Forbid."
    )
    missed_runs: int | None = Field(
        default=None, description="Schedule: runs that could not be created before their deadline."
    )
    last_run_now: RunNowStatus | None = Field(
        default=None,
        description="Schedule: the last manual run (the run-now annotation) whose job was accepted.",
    )
