"""Cron and interval schedules: `ScheduleTrigger` creates a job at every due time, never twice.

`cron` and `timetable` say when a schedule fires, `planning` which runs are due, missed or caught up,
`scheduler` wakes the process when any run is due; `spec` is the one model of a schedule, `trigger` the
library's `ScheduleTrigger` and `source` the operator's side.
"""

from portico.sources.schedule.cron import ScheduleError
from portico.sources.schedule.scheduler import Scheduler
from portico.sources.schedule.source import ScheduleSource
from portico.sources.schedule.spec import ScheduleConfig, ScheduleSpec
from portico.sources.schedule.trigger import ScheduleTrigger

__all__ = [
    "ScheduleConfig",
    "ScheduleError",
    "ScheduleSource",
    "ScheduleSpec",
    "ScheduleTrigger",
    "Scheduler",
]
