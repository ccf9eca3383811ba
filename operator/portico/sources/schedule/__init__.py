"""Cron and interval schedules: `ScheduleTrigger` creates a job at every due time, never twice."""

from portico.sources.schedule.trigger import ScheduleConfig, ScheduleSource, ScheduleSpec, ScheduleTrigger

__all__ = ["ScheduleConfig", "ScheduleSource", "ScheduleSpec", "ScheduleTrigger"]
