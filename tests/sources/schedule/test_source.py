"""The schedule source: builds triggers from a resource's spec.schedule, spec.job and status, and shares
its scheduler among them."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import TriggerContext
from portico.sources.schedule.source import ScheduleSource
from portico.sources.schedule.spec import ScheduleSpec
from portico.sources.schedule.trigger import ScheduleTrigger
from tests.sources.conftest import RecordingEvents
from tests.sources.schedule.conftest import MONDAY_0859, LoopClock, RecordingJobCreator, utc

REF = TriggerRef(name="nightly", namespace="reports", uid="0b6e-uid")
TEMPLATE = JobTemplate(type="report.daily", queue="reports", priority=5, payload={"kind": "summary"})


def test_source_identity() -> None:
    source = ScheduleSource()
    assert source.name == "schedule"
    assert source.spec_model is ScheduleSpec
    assert source.single_active
    assert source.secret_refs(ScheduleSpec(cron="0 9 * * *")) == ()


def _context(creator: RecordingJobCreator, events: RecordingEvents, status: dict[str, Any]) -> TriggerContext:
    return TriggerContext(ref=REF, template=TEMPLATE, job_creator=creator, events=events, status=status)


@pytest.mark.looptime
async def test_build_uses_the_job_template_and_the_resource_status() -> None:
    clock = LoopClock(utc(2026, 3, 2, 11, 30))
    creator = RecordingJobCreator(clock)
    events = RecordingEvents()
    source = ScheduleSource(clock=clock)
    await source.open()
    status = {
        "lastScheduleTime": "2026-03-02T09:00:00Z",
        "missedRuns": 3,
        "skippedRuns": 2,
        "lastJobId": "j-1",
    }
    trigger = source.build(ScheduleSpec(cron="0 * * * *"), _context(creator, events, status))
    assert isinstance(trigger, ScheduleTrigger)
    await trigger.start()
    await asyncio.sleep(1)
    [job] = creator.jobs.values()
    assert (job.job_type, job.queue_name, job.priority, job.payload) == (
        "report.daily",
        "reports",
        5,
        {"kind": "summary"},
    )
    assert job.idempotency_key == "0b6e-uid:2026-03-02T11:00:00Z"  # caught up: 10:00 missed, 11:00 fired
    assert job.metadata["trigger.name"] == "nightly"
    source_status = trigger.get_health().source_status
    assert source_status["missedRuns"] == 4
    assert source_status["skippedRuns"] == 2
    assert events.reasons() == ["ScheduleMissed"]
    assert events.changes > 0
    await trigger.stop()
    await source.close()


@pytest.mark.looptime
async def test_build_after_a_suspension_resumes_from_now() -> None:
    clock = LoopClock(utc(2026, 3, 2, 11, 30))
    creator = RecordingJobCreator(clock)
    source = ScheduleSource(clock=clock)
    await source.open()
    status = {
        "lastScheduleTime": "2026-03-02T09:00:00Z",
        "phase": "Suspended",
        "resumedAt": "2026-03-02T11:30:00Z",
    }
    trigger = source.build(ScheduleSpec(cron="0 * * * *"), _context(creator, RecordingEvents(), status))
    await trigger.start()
    await clock.until(utc(2026, 3, 2, 12, 0, 1))
    assert creator.scheduled_times() == ["2026-03-02T12:00:00Z"]
    await trigger.stop()
    await source.close()


@pytest.mark.looptime
async def test_triggers_of_one_source_share_its_scheduler() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    source = ScheduleSource(clock=clock)
    await source.open()
    triggers = [
        source.build(ScheduleSpec(cron=f"{i} 9 * * *"), _context(creator, RecordingEvents(), {}))
        for i in range(50)
    ]
    for trigger in triggers:
        await trigger.start()
    assert len(source.scheduler) == 50
    await asyncio.sleep(timedelta(hours=1).total_seconds())
    assert len(creator.jobs) == 50
    for trigger in triggers:
        await trigger.stop()
    assert len(source.scheduler) == 0
    await source.close()
    with pytest.raises(TriggerStartError, match="closed"):
        await triggers[0].start()
    await source.open()
    assert not source.scheduler.closed
    await source.close()


def test_build_rejects_an_unreadable_status_time() -> None:
    source = ScheduleSource()
    with pytest.raises(TriggerStartError, match="invalid schedule"):
        source.build(
            ScheduleSpec(cron="0 9 * * *"),
            _context(
                RecordingJobCreator.__new__(RecordingJobCreator),
                RecordingEvents(),
                {"lastScheduleTime": "yesterday"},
            ),
        )


@pytest.mark.looptime
async def test_build_without_a_last_schedule_time_anchors_on_the_resource_creation() -> None:
    clock = LoopClock(utc(2026, 3, 2, 11, 30))
    creator = RecordingJobCreator(clock)
    source = ScheduleSource(clock=clock)
    await source.open()
    context = TriggerContext(
        ref=REF,
        template=TEMPLATE,
        job_creator=creator,
        events=RecordingEvents(),
        created_at=utc(2026, 3, 2, 9, 59, 59),
    )
    trigger = source.build(ScheduleSpec(cron="0 * * * *", catchUp="All"), context)
    await trigger.start()
    await asyncio.sleep(1)
    await trigger.stop()
    await source.close()
    assert creator.scheduled_times() == ["2026-03-02T10:00:00Z", "2026-03-02T11:00:00Z"]
