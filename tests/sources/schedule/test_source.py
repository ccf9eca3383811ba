"""`spec.schedule`: its validation (shared by `portico validate`, the operator and the CRD) and the
source that builds triggers from it."""

import asyncio
from datetime import date, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import TriggerContext
from portico.sources.schedule.trigger import ScheduleSource, ScheduleSpec, ScheduleTrigger
from tests.sources.conftest import RecordingEvents
from tests.sources.schedule.test_trigger import (
    MONDAY_0859,
    LoopClock,
    RecordingJobCreator,
    utc,
)

REF = TriggerRef(name="nightly", namespace="reports", uid="0b6e-uid")
TEMPLATE = JobTemplate(type="report.daily", queue="reports", priority=5, payload={"kind": "summary"})


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        ScheduleSpec.model_validate(data)
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors()]


def test_defaults_and_camel_case() -> None:
    spec = ScheduleSpec.model_validate({"cron": "0 9 * * *"})
    assert spec.to_resource() == {
        "cron": "0 9 * * *",
        "timeZone": "UTC",
        "jitterSeconds": 0,
        "exclusionDates": [],
        "catchUp": "Latest",
        "concurrencyPolicy": "Allow",
    }
    full = {
        "cron": "*/30 * * * * *",
        "timeZone": "Europe/Berlin",
        "startingDeadlineSeconds": 300,
        "jitterSeconds": 20,
        "exclusionDates": ["2026-12-25", date(2026, 12, 26)],
        "catchUp": "All",
        "concurrencyPolicy": "Forbid",
    }
    spec = ScheduleSpec.model_validate(full)
    assert spec.exclusion_dates == [date(2026, 12, 25), date(2026, 12, 26)]
    assert ScheduleSpec.model_validate(spec.to_resource()) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"cron": "61 * * * *"},
            "cron: Value error, cron expression '61 * * * *': minute field '61': 61 is out of range 0-59",
        ),
        ({"cron": "0 9 * *"}, "has 4 fields; expected 5"),
        ({"cron": "@every 5x"}, "@every duration '5x' is not a duration like 30s"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": ""}, "cron: String should have at least 1 character"),
        (
            {"cron": "0 9 * * *", "timeZone": "Europe/Gotham"},
            "timeZone: Value error, unknown time zone 'Europe/Gotham'",
        ),
        (
            {"cron": "0 9 * * *", "jitterSeconds": 3601},
            "jitterSeconds: Input should be less than or equal to 3600",
        ),
        (
            {"cron": "0 9 * * *", "jitterSeconds": 300, "startingDeadlineSeconds": 300},
            "jitterSeconds (300) must be less than startingDeadlineSeconds (300)",
        ),
        (
            {"cron": "0 9 * * *", "startingDeadlineSeconds": 0},
            "startingDeadlineSeconds: Input should be greater than or equal to 1",
        ),
        (
            {"cron": "0 9 * * *", "exclusionDates": ["2026-02-30"]},
            "exclusionDates.0: Input should be a valid date",
        ),
        ({"cron": "0 9 * * *", "catchUp": "Sometimes"}, "catchUp: Input should be 'None', 'Latest' or 'All'"),
        (
            {"cron": "0 9 * * *", "concurrencyPolicy": "Replace"},
            "concurrencyPolicy: Input should be 'Allow' or 'Forbid'",
        ),
        ({"cron": "0 9 * * *", "timezone": "UTC"}, "timezone: Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_name_the_field_and_the_problem(data: dict[str, Any], message: str) -> None:
    found = errors(data)
    assert any(message in e for e in found), found


def test_the_operator_spec_check_reports_the_exact_problem() -> None:
    """`portico validate` and the operator run `parse_spec`; the schedule block's errors come through with
    their field path."""
    from portico.operator.resource import SpecError, parse_spec

    spec: dict[str, Any] = {
        "job": {"type": "report.daily"},
        "schedule": {"cron": "0 25 * * *", "timeZone": "Mars/Base"},
    }
    with pytest.raises(SpecError) as info:
        parse_spec(spec, [ScheduleSource])
    problems = info.value.errors
    assert any(
        "spec.schedule.cron" in p and "hour field '25': 25 is out of range 0-23" in p for p in problems
    ), problems
    assert any("spec.schedule.timeZone" in p and "unknown time zone 'Mars/Base'" in p for p in problems), (
        problems
    )
    spec["schedule"] = {"cron": "@every 1h30m", "timeZone": "Europe/Berlin"}
    parsed = parse_spec(spec, [ScheduleSource])
    assert parsed.source == "schedule"
    assert parsed.source_spec == ScheduleSpec(cron="@every 1h30m", time_zone="Europe/Berlin")


def test_json_schema_describes_every_field_and_carries_the_cel_rule() -> None:
    schema = ScheduleSpec.model_json_schema(by_alias=True)
    properties = schema["properties"]
    assert set(properties) == {
        "cron",
        "timeZone",
        "startingDeadlineSeconds",
        "jitterSeconds",
        "exclusionDates",
        "catchUp",
        "concurrencyPolicy",
    }
    assert all(p.get("description", "").endswith(".") for p in properties.values()), properties
    assert properties["catchUp"]["enum"] == ["None", "Latest", "All"]
    assert properties["exclusionDates"]["items"] == {"format": "date", "type": "string"}
    [rule] = schema["x-kubernetes-validations"]
    assert "jitterSeconds < self.startingDeadlineSeconds" in rule["rule"]
    assert schema["required"] == ["cron"]


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
