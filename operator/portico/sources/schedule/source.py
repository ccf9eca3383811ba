"""The operator's side of the schedule source: builds a `ScheduleTrigger` from a resource's validated
`spec.schedule`, `spec.job` and last status, and owns the process-wide `Scheduler` they all share."""

from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.schedule.planning import as_utc
from portico.sources.schedule.scheduler import Clock, Scheduler, wall_clock
from portico.sources.schedule.spec import ScheduleConfig, ScheduleSpec
from portico.sources.schedule.trigger import ScheduleTrigger


class ScheduleSource(TriggerSource[ScheduleSpec]):
    """Builds schedule triggers; owns the `Scheduler` they share (one heap and one sleeper task for
    every schedule of the process)."""

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
        ends) means runs missed before now are not caught up. The spec and the job template are used as
        validated: nothing is parsed again."""
        status = context.status
        try:
            last_schedule_time = as_utc(status.get("lastScheduleTime"))
        except (ValueError, TypeError) as exc:
            raise TriggerStartError(
                f"invalid schedule status: lastScheduleTime: {exc}", reason="InvalidStatus", retryable=False
            ) from None
        return ScheduleTrigger(
            context.job_creator,
            [ScheduleConfig.of(spec, context.template)],
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
