"""The schedule trigger on a fast-forwarded event loop (looptime): wall time is tied to loop time by
`LoopClock`, so a test can let days pass in milliseconds and check when each job was created."""

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import JobCreationError, JobStatus
from portico.ports.trigger_events import TriggerEvents
from portico.sources.schedule.planning import CATCH_UP_ALL_LIMIT
from portico.sources.schedule.scheduler import Scheduler
from portico.sources.schedule.spec import ScheduleConfig
from portico.sources.schedule.timetable import EPOCH
from portico.sources.schedule.trigger import ScheduleTrigger
from tests.sources.conftest import RecordingEvents
from tests.sources.schedule.conftest import MONDAY_0859, LoopClock, RecordingJobCreator, rfc, utc

REF = TriggerRef(name="nightly", namespace="reports", uid="8d1c7f5e-uid")
FOREVER = 10.0**9


def config(cron: str, **kwargs: Any) -> ScheduleConfig:
    defaults: dict[str, Any] = {
        "job_type": "report.daily",
        "payload": {"kind": "summary"},
        "queue_name": "reports",
    }
    return ScheduleConfig(cron=cron, **{**defaults, **kwargs})


@contextlib.asynccontextmanager
async def running(
    clock: LoopClock,
    creator: RecordingJobCreator,
    *schedules: ScheduleConfig,
    ref: TriggerRef | None = REF,
    events: TriggerEvents | None = None,
    recheck: float = FOREVER,
    **kwargs: Any,
) -> AsyncIterator[ScheduleTrigger]:
    scheduler = Scheduler(clock=clock, recheck_interval=recheck)
    trigger = ScheduleTrigger(
        job_creator=creator, schedules=list(schedules), ref=ref, events=events, scheduler=scheduler, **kwargs
    )
    await trigger.start()
    try:
        yield trigger
    finally:
        await trigger.stop()
        await scheduler.close()


# --- firing at the right times ---------------------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("cron", "start", "expected"),
    [
        ("*/5 * * * *", MONDAY_0859, [utc(2026, 3, 2, 9, 0), utc(2026, 3, 2, 9, 5), utc(2026, 3, 2, 9, 10)]),
        (
            "*/20 * * * * *",
            MONDAY_0859 + timedelta(seconds=5),
            [utc(2026, 3, 2, 8, 59, 20), utc(2026, 3, 2, 8, 59, 40), utc(2026, 3, 2, 9)],
        ),
        ("@hourly", MONDAY_0859, [utc(2026, 3, 2, 9), utc(2026, 3, 2, 10), utc(2026, 3, 2, 11)]),
        ("@daily", MONDAY_0859, [utc(2026, 3, 3), utc(2026, 3, 4), utc(2026, 3, 5)]),
        ("@weekly", MONDAY_0859, [utc(2026, 3, 8), utc(2026, 3, 15), utc(2026, 3, 22)]),
        ("@monthly", MONDAY_0859, [utc(2026, 4, 1), utc(2026, 5, 1), utc(2026, 6, 1)]),
        ("@yearly", utc(2026, 12, 31, 23, 59), [utc(2027, 1, 1)]),
        ("@annually", utc(2026, 12, 31, 23, 59), [utc(2027, 1, 1)]),
        ("@every 1h30m", MONDAY_0859, [utc(2026, 3, 2, 9), utc(2026, 3, 2, 10, 30), utc(2026, 3, 2, 12)]),
        (
            "0 9 * * MON-FRI",
            utc(2026, 3, 6, 12),
            [utc(2026, 3, 9, 9), utc(2026, 3, 10, 9), utc(2026, 3, 11, 9)],
        ),
    ],
)
async def test_fires_each_expression_form_on_time(
    cron: str, start: datetime, expected: list[datetime]
) -> None:
    clock = LoopClock(start)
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config(cron)):
        await clock.until(expected[-1] + timedelta(seconds=1))
    assert creator.scheduled_times() == [rfc(m) for m in expected]
    for (called_at, _), scheduled in zip(creator.calls, expected, strict=True):
        assert timedelta(0) <= called_at - scheduled < timedelta(milliseconds=1)


@pytest.mark.looptime
async def test_job_carries_template_idempotency_key_and_scheduled_time() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    async with running(
        clock, creator, config("0 9 * * *", priority=5, metadata={"team": "finance"})
    ) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 0, 1))
        health = trigger.get_health()
    [job] = creator.jobs.values()
    assert (job.job_type, job.queue_name, job.priority, job.payload) == (
        "report.daily",
        "reports",
        5,
        {"kind": "summary"},
    )
    assert job.idempotency_key == "8d1c7f5e-uid:2026-03-02T09:00:00Z"
    assert job.metadata["scheduled_time"] == "2026-03-02T09:00:00Z"
    assert job.metadata["team"] == "finance"
    assert job.metadata["trigger.uid"] == "8d1c7f5e-uid"
    assert job.metadata["trigger.source"] == "schedule"
    assert health.jobs_created_count == 1
    assert health.last_job_id == job.id
    assert health.source_status == {
        "lastScheduleTime": "2026-03-02T09:00:00Z",
        "nextScheduleTime": "2026-03-03T09:00:00Z",
        "skippedRuns": 0,
        "missedRuns": 0,
    }


@pytest.mark.looptime
async def test_every_is_anchored_to_the_epoch_so_restarts_do_not_shift_it() -> None:
    clock = LoopClock(utc(2026, 3, 2, 8, 59, 17))
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("@every 7m")):
        await asyncio.sleep(30 * 60)
    async with running(clock, creator, config("@every 7m")):
        await asyncio.sleep(30 * 60)
    times = [datetime.fromisoformat(t) for t in creator.scheduled_times()]
    assert len(times) >= 8
    assert all((t - EPOCH) % timedelta(minutes=7) == timedelta(0) for t in times)
    assert all(b - a == timedelta(minutes=7) for a, b in itertools.pairwise(times))


@pytest.mark.looptime
async def test_several_schedules_in_one_trigger() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    schedules = [config("0 9 * * *", name="morning"), config("0 9 * * *", name="also", job_type="other")]
    async with running(clock, creator, *schedules):
        await clock.until(utc(2026, 3, 2, 9, 0, 1))
    assert sorted(j.idempotency_key or "" for j in creator.jobs.values()) == [
        "8d1c7f5e-uid:also:2026-03-02T09:00:00Z",
        "8d1c7f5e-uid:morning:2026-03-02T09:00:00Z",
    ]
    assert {j.metadata["schedule"] for j in creator.jobs.values()} == {"morning", "also"}


async def test_library_defaults_need_no_ref_or_events() -> None:
    trigger = ScheduleTrigger(
        job_creator=InMemoryJobCreator(),
        schedules=[ScheduleConfig(cron="0 9 * * *", job_type="report.daily", payload={"a": 1})],
    )
    assert trigger.ref.name.startswith("schedule-")
    again = ScheduleTrigger(
        job_creator=InMemoryJobCreator(),
        schedules=[ScheduleConfig(cron="0 9 * * *", job_type="report.daily", payload={"a": 1})],
    )
    assert again.ref == trigger.ref
    await trigger.start()
    await trigger.start()
    assert trigger.is_running
    assert trigger.get_health().source_status["nextScheduleTime"] is not None
    await trigger.stop()
    await trigger.stop()
    assert not trigger.is_running
    assert trigger.get_health().source_status["nextScheduleTime"] is None


# --- time zones, daylight saving, exclusions, jitter ---------------------------------------------------


@pytest.mark.looptime
async def test_spring_forward_fires_the_skipped_time_once_shifted() -> None:
    clock = LoopClock(utc(2026, 3, 28, 12))
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("30 2 * * *", time_zone="Europe/Berlin")):
        await clock.until(utc(2026, 3, 30, 12))
    # 02:30 does not exist on 29 March in Berlin: fired at 03:30 CEST (01:30Z); then 02:30 CEST (00:30Z).
    assert creator.scheduled_times() == ["2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]
    assert [at for at, _ in creator.calls] == [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]


@pytest.mark.looptime
async def test_autumn_repeated_time_fires_once() -> None:
    clock = LoopClock(utc(2026, 10, 24, 12))
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("30 2 * * *", time_zone="Europe/Berlin")):
        await clock.until(utc(2026, 10, 26, 12))
    # 02:30 happens twice on 25 October (CEST, then CET): one run, at the first.
    assert creator.scheduled_times() == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]


@pytest.mark.looptime
async def test_time_zone_follows_daylight_saving_in_new_york() -> None:
    clock = LoopClock(utc(2026, 3, 6, 12))
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("0 9 * * *", time_zone="America/New_York")):
        await clock.until(utc(2026, 3, 10, 0))
    assert creator.scheduled_times() == [
        "2026-03-06T14:00:00Z",
        "2026-03-07T14:00:00Z",
        "2026-03-08T13:00:00Z",
        "2026-03-09T13:00:00Z",
    ]


@pytest.mark.looptime
async def test_exclusion_dates_are_read_in_the_schedule_time_zone() -> None:
    clock = LoopClock(utc(2026, 3, 1, 12))
    creator = RecordingJobCreator(clock)
    schedule = config("0 0 * * *", time_zone="Europe/Berlin", exclusion_dates=[date(2026, 3, 3)])
    async with running(clock, creator, schedule):
        await clock.until(utc(2026, 3, 5, 0))
    # Berlin midnight is 23:00 UTC the day before; Berlin's 3 March is skipped.
    assert creator.scheduled_times() == [
        "2026-03-01T23:00:00Z",
        "2026-03-03T23:00:00Z",
        "2026-03-04T23:00:00Z",
    ]


async def _fire_offsets(ref: TriggerRef, cron: str, jitter: float, until: datetime) -> list[timedelta]:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config(cron, jitter_seconds=jitter), ref=ref):
        await clock.until(until)
    return [at - _scheduled(key) for at, key in creator.calls]


def _scheduled(key: str | None) -> datetime:
    """The scheduled time from a key `<uid>:<time>` (test uids have no colon)."""
    assert key is not None
    return datetime.fromisoformat(key.split(":", 1)[1])


@pytest.mark.looptime
async def test_jitter_is_deterministic_per_trigger_and_scheduled_time() -> None:
    until = utc(2026, 3, 2, 13)
    first = await _fire_offsets(REF, "0 * * * *", 600, until)
    again = await _fire_offsets(REF, "0 * * * *", 600, until)
    other = await _fire_offsets(
        TriggerRef(name="other", namespace="reports", uid="other-uid"), "0 * * * *", 600, until
    )
    assert len(first) == 4
    assert first == again
    assert first != other
    assert all(timedelta(0) <= offset < timedelta(seconds=600) for offset in first + other)
    assert len(set(first)) > 1


@pytest.mark.looptime
async def test_jitter_never_reaches_the_next_run() -> None:
    offsets = await _fire_offsets(REF, "@every 10s", 3600, utc(2026, 3, 2, 9, 10))
    assert len(offsets) >= 60
    assert all(timedelta(0) <= offset < timedelta(seconds=10) for offset in offsets)


@pytest.mark.looptime
async def test_restart_during_a_jitter_delay_fires_at_the_same_jittered_time() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    schedule = config("0 9 * * *", jitter_seconds=3000)
    async with running(clock, creator, schedule) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 0, 0, 1000))
        assert not creator.calls
        assert trigger.get_health().source_status["nextScheduleTime"] == "2026-03-02T09:00:00Z"
    async with running(clock, creator, schedule):
        await clock.until(utc(2026, 3, 2, 10))
    [(at, key)] = creator.calls
    assert key == "8d1c7f5e-uid:2026-03-02T09:00:00Z"
    offsets = await _fire_offsets(REF, "0 9 * * *", 3000, utc(2026, 3, 2, 10))
    assert at - utc(2026, 3, 2, 9) == offsets[0]


# --- restarts, catch-up, suspend ------------------------------------------------------------------------


@pytest.mark.looptime
async def test_restart_with_last_schedule_time_does_not_fire_twice() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("*/10 * * * *")) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 25))
        status = trigger.get_health().source_status
    assert status["lastScheduleTime"] == "2026-03-02T09:20:00Z"
    async with running(clock, creator, config("*/10 * * * *"), last_schedule_time=status["lastScheduleTime"]):
        await clock.until(utc(2026, 3, 2, 9, 45))
    assert creator.scheduled_times() == [f"2026-03-02T09:{m}:00Z" for m in ("00", "10", "20", "30", "40")]
    assert len(creator.keys_called()) == len(set(creator.keys_called())) == 5


@pytest.mark.looptime
async def test_restart_across_a_due_time_fires_the_missed_run_exactly_once() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    events = RecordingEvents()
    async with running(clock, creator, config("0 * * * *")) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 30))
        last = trigger.get_health().source_status["lastScheduleTime"]
    await clock.until(utc(2026, 3, 2, 10, 20))  # the operator is down at 10:00
    async with running(
        clock, creator, config("0 * * * *"), last_schedule_time=last, events=events
    ) as trigger:
        await asyncio.sleep(1)
        assert creator.scheduled_times() == ["2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"]
        await clock.until(utc(2026, 3, 2, 11, 0, 1))
        status = trigger.get_health().source_status
    assert creator.scheduled_times() == [
        "2026-03-02T09:00:00Z",
        "2026-03-02T10:00:00Z",
        "2026-03-02T11:00:00Z",
    ]
    assert creator.calls[1][0] == utc(2026, 3, 2, 10, 20)
    assert status["lastScheduleTime"] == "2026-03-02T11:00:00Z"
    assert status["missedRuns"] == 0
    assert events.events == []


@pytest.mark.looptime
async def test_a_status_that_lags_behind_re_sends_with_the_same_key_and_creates_no_duplicate() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("*/10 * * * *")):
        await clock.until(utc(2026, 3, 2, 9, 15))
    stale = utc(2026, 3, 2, 9, 0)  # the 09:10 run was accepted but not yet written to status
    async with running(clock, creator, config("*/10 * * * *"), last_schedule_time=stale):
        await asyncio.sleep(1)
    assert creator.keys_called().count("8d1c7f5e-uid:2026-03-02T09:10:00Z") == 2
    assert creator.scheduled_times() == ["2026-03-02T09:00:00Z", "2026-03-02T09:10:00Z"]


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("catch_up", "fired", "missed"),
    [
        ("None", [], 5),
        ("Latest", ["2026-03-02T14:00:00Z"], 4),
        ("All", [f"2026-03-02T{h}:00:00Z" for h in (10, 11, 12, 13, 14)], 0),
    ],
)
async def test_catch_up_policies(catch_up: str, fired: list[str], missed: int) -> None:
    clock = LoopClock(utc(2026, 3, 2, 14, 30))
    creator = RecordingJobCreator(clock)
    events = RecordingEvents()
    schedule = config("0 * * * *", catch_up=catch_up)
    async with running(
        clock, creator, schedule, last_schedule_time=utc(2026, 3, 2, 9), events=events
    ) as trigger:
        await asyncio.sleep(1)
        status = trigger.get_health().source_status
    assert creator.scheduled_times() == fired
    assert status["missedRuns"] == missed
    assert status["nextScheduleTime"] == "2026-03-02T15:00:00Z"
    if missed:
        [(kind, reason, message)] = events.events
        assert (kind, reason) == ("Warning", "ScheduleMissed")
        assert f"{missed} run(s) scheduled from 2026-03-02T10:00:00Z" in message
        assert f"catchUp: {catch_up}" in message
    else:
        assert events.events == []


@pytest.mark.looptime
async def test_catch_up_all_is_capped() -> None:
    clock = LoopClock(utc(2026, 3, 2, 12, 0, 30))
    creator = RecordingJobCreator(clock)
    async with running(
        clock, creator, config("* * * * *", catch_up="All"), last_schedule_time=utc(2026, 3, 2, 9)
    ) as trigger:
        await asyncio.sleep(1)
        status = trigger.get_health().source_status
    assert len(creator.jobs) == CATCH_UP_ALL_LIMIT
    assert creator.scheduled_times()[0] == "2026-03-02T10:21:00Z"
    assert creator.scheduled_times()[-1] == "2026-03-02T12:00:00Z"
    assert status["missedRuns"] == 180 - CATCH_UP_ALL_LIMIT


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("catch_up", "fired"),
    [
        ("Latest", ["2026-03-02T12:00:00Z"]),
        ("All", ["2026-03-02T11:55:00Z", "2026-03-02T12:00:00Z"]),
    ],
)
async def test_catch_up_stays_within_the_starting_deadline(catch_up: str, fired: list[str]) -> None:
    clock = LoopClock(utc(2026, 3, 2, 12, 2))
    creator = RecordingJobCreator(clock)
    schedule = config("*/5 * * * *", catch_up=catch_up, starting_deadline_seconds=600)
    async with running(clock, creator, schedule, last_schedule_time=utc(2026, 3, 2, 11)) as trigger:
        await asyncio.sleep(1)
        status = trigger.get_health().source_status
    assert creator.scheduled_times() == fired
    assert status["missedRuns"] == 12 - len(fired)


@pytest.mark.looptime
async def test_a_missed_run_past_its_deadline_is_not_fired() -> None:
    clock = LoopClock(utc(2026, 3, 2, 11, 30))
    creator = RecordingJobCreator(clock)
    schedule = config("0 * * * *", starting_deadline_seconds=300)
    async with running(clock, creator, schedule, last_schedule_time=utc(2026, 3, 2, 10)) as trigger:
        await asyncio.sleep(1)
        assert trigger.get_health().source_status["missedRuns"] == 1
    assert creator.calls == []


@pytest.mark.looptime
async def test_suspend_then_resume_does_not_fire_the_runs_missed_meanwhile() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    events = RecordingEvents()
    scheduler = Scheduler(clock=clock, recheck_interval=FOREVER)
    trigger = ScheduleTrigger(creator, [config("0 * * * *")], ref=REF, events=events, scheduler=scheduler)
    await trigger.start()
    await clock.until(utc(2026, 3, 2, 9, 5))
    await trigger.stop()  # suspend
    await clock.until(utc(2026, 3, 2, 12, 30))
    await trigger.start()  # resume
    await clock.until(utc(2026, 3, 2, 13, 0, 1))
    await trigger.stop()
    assert creator.scheduled_times() == ["2026-03-02T09:00:00Z", "2026-03-02T13:00:00Z"]
    assert trigger.get_health().source_status["missedRuns"] == 0
    assert "ScheduleMissed" not in events.reasons()


@pytest.mark.looptime
async def test_a_new_instance_resumed_from_now_does_not_catch_up() -> None:
    clock = LoopClock(utc(2026, 3, 2, 12, 30))
    creator = RecordingJobCreator(clock)
    async with running(
        clock, creator, config("0 * * * *"), last_schedule_time=utc(2026, 3, 2, 9), resume_from_now=True
    ):
        await clock.until(utc(2026, 3, 2, 13, 0, 1))
    assert creator.scheduled_times() == ["2026-03-02T13:00:00Z"]


@pytest.mark.looptime
async def test_a_clock_stepped_forward_is_handled_like_a_restart() -> None:
    clock = LoopClock(MONDAY_0859 + timedelta(seconds=30))
    creator = RecordingJobCreator(clock)
    events = RecordingEvents()
    async with running(clock, creator, config("* * * * *"), events=events, recheck=30) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 0, 10))
        clock.jump(timedelta(hours=1))
        await clock.until(utc(2026, 3, 2, 10, 1, 1))
        status = trigger.get_health().source_status
    assert creator.scheduled_times() == [
        "2026-03-02T09:00:00Z",
        "2026-03-02T10:00:00Z",
        "2026-03-02T10:01:00Z",
    ]
    assert creator.calls[1][0] <= utc(2026, 3, 2, 10, 0, 40)  # noticed within the recheck interval
    assert status["missedRuns"] == 59
    assert events.reasons() == ["ScheduleMissed"]


@pytest.mark.looptime
async def test_a_clock_stepped_back_never_fires_a_time_twice() -> None:
    clock = LoopClock(MONDAY_0859 + timedelta(seconds=30))
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("* * * * *"), recheck=30):
        await clock.until(utc(2026, 3, 2, 9, 1, 10))
        clock.jump(timedelta(minutes=-30))
        await asyncio.sleep(32 * 60)
    times = creator.scheduled_times()
    assert times[:3] == ["2026-03-02T09:00:00Z", "2026-03-02T09:01:00Z", "2026-03-02T09:02:00Z"]
    assert len(times) == len(set(times))
    assert creator.calls[2][0] >= utc(2026, 3, 2, 9, 2)


# --- concurrency policy ----------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_forbid_skips_while_the_previous_job_is_active() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    events = RecordingEvents()
    async with running(
        clock, creator, config("*/10 * * * *", concurrency_policy="Forbid"), events=events
    ) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 0, 1))
        [first] = creator.jobs
        creator.set_status(first, JobStatus.RUNNING)
        await clock.until(utc(2026, 3, 2, 9, 25))
        assert trigger.get_health().source_status["skippedRuns"] == 2
        creator.set_status(first, JobStatus.COMPLETED)
        await clock.until(utc(2026, 3, 2, 9, 30, 1))
        status = trigger.get_health().source_status
    assert creator.scheduled_times() == ["2026-03-02T09:00:00Z", "2026-03-02T09:30:00Z"]
    assert status["skippedRuns"] == 2
    assert status["lastScheduleTime"] == "2026-03-02T09:30:00Z"
    skipped = [e for e in events.events if e[1] == "ScheduleSkipped"]
    assert len(skipped) == 2
    assert skipped[0][0] == "Warning"
    assert "2026-03-02T09:10:00Z" in skipped[0][2] and first in skipped[0][2]


@pytest.mark.looptime
async def test_allow_overlaps() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("*/10 * * * *")):
        await clock.until(utc(2026, 3, 2, 9, 0, 1))
        creator.set_status(next(iter(creator.jobs)), JobStatus.RUNNING)
        await clock.until(utc(2026, 3, 2, 9, 20, 1))
    assert len(creator.jobs) == 3


@pytest.mark.looptime
async def test_forbid_remembers_the_last_job_across_a_restart() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    running_job = await creator.create_job("report.daily", {})
    creator.set_status(running_job.id, JobStatus.PENDING)
    schedule = config("0 9 * * *", concurrency_policy="Forbid")
    async with running(clock, creator, schedule, last_job_id=running_job.id) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 0, 1))
        assert trigger.get_health().source_status["skippedRuns"] == 1
    assert len(creator.jobs) == 1


# --- failures ------------------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_failed_creation_is_retried_with_the_same_key() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock, failures=3)
    async with running(clock, creator, config("0 9 * * *")) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 0, 0, 100))
        assert trigger.get_health().source_status["lastScheduleTime"] is None
        await clock.until(utc(2026, 3, 2, 9, 1))
        health = trigger.get_health()
    assert creator.keys_called() == ["8d1c7f5e-uid:2026-03-02T09:00:00Z"] * 4
    assert creator.scheduled_times() == ["2026-03-02T09:00:00Z"]
    assert health.source_status["lastScheduleTime"] == "2026-03-02T09:00:00Z"
    assert health.errors_count == 3
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(creator.calls)]
    assert gaps[0] < gaps[2]  # backing off
    assert all(gap >= timedelta(seconds=0.25) for gap in gaps)


@pytest.mark.looptime
async def test_retries_stop_at_the_next_scheduled_time_and_count_the_run_missed() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock, failures=None)
    events = RecordingEvents()
    async with running(clock, creator, config("*/10 * * * *"), events=events) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 10, 0, 1000))
        status = trigger.get_health().source_status
    first_run = [at for at, key in creator.calls if key and key.endswith("09:00:00Z")]
    assert len(first_run) > 5
    assert first_run[-1] < utc(2026, 3, 2, 9, 10)
    assert status["missedRuns"] == 1
    assert status["lastScheduleTime"] is None
    [(kind, reason, message)] = events.events
    assert (kind, reason) == ("Warning", "ScheduleMissed")
    assert "2026-03-02T09:00:00Z" in message and "until the next scheduled run" in message


@pytest.mark.looptime
async def test_retries_stop_at_the_deadline() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock, failures=None)
    events = RecordingEvents()
    async with running(
        clock, creator, config("0 9 * * *", starting_deadline_seconds=60), events=events
    ) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 5))
        assert trigger.get_health().source_status["missedRuns"] == 1
    assert creator.calls[-1][0] < utc(2026, 3, 2, 9, 1)
    assert "until its deadline" in events.events[0][2]


@pytest.mark.looptime
async def test_a_non_retryable_failure_is_counted_at_once() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock, failures=None, retryable=False)
    events = RecordingEvents()
    async with running(clock, creator, config("0 9 * * *"), events=events) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 5))
        health = trigger.get_health()
    assert len(creator.calls) == 1
    assert health.source_status["missedRuns"] == 1
    assert health.errors_count == 1
    assert "rejected" in events.events[0][2]


@pytest.mark.looptime
async def test_stop_ends_retries_without_counting_a_miss() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock, failures=None)
    async with running(clock, creator, config("0 9 * * *")) as trigger:
        await clock.until(utc(2026, 3, 2, 9, 0, 5))
    assert trigger.get_health().source_status["missedRuns"] == 0
    assert not trigger.is_running


# --- manual runs ----------------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_run_now_fires_once_per_token() -> None:
    clock = LoopClock(utc(2026, 3, 2, 10, 17, 3))
    creator = RecordingJobCreator(clock)
    async with running(clock, creator, config("0 9 * * *", concurrency_policy="Forbid")) as trigger:
        first = await trigger.run_now("2026-03-02-a")
        creator.set_status(first.id, JobStatus.RUNNING)
        assert trigger.source_status()["lastRunNow"] == {
            "token": "2026-03-02-a",
            "jobId": first.id,
            "time": "2026-03-02T10:17:03Z",
        }
        again = await trigger.run_now("2026-03-02-a")
        other = await trigger.run_now("b")
        assert trigger.source_status()["lastRunNow"]["jobId"] == other.id
    assert first.id == again.id
    assert other.id != first.id
    assert first.idempotency_key == "8d1c7f5e-uid:run-now:2026-03-02-a"
    assert first.metadata["run_now"] == "2026-03-02-a"
    assert first.metadata["scheduled_time"] == "2026-03-02T10:17:03Z"
    assert len(creator.jobs) == 2


@pytest.mark.looptime
async def test_run_now_reports_a_failure() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock, failures=None)
    async with running(clock, creator, config("0 9 * * *")) as trigger:
        with pytest.raises(JobCreationError):
            await trigger.run_now("x")
        assert "lastRunNow" not in trigger.source_status()


@pytest.mark.looptime
async def test_a_schedule_that_cannot_go_on_says_so() -> None:
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    events = RecordingEvents()
    async with running(clock, creator, config("0 9 * * *"), events=events) as trigger:
        timetable = trigger._runs[0].timetable

        def broken(moment: datetime) -> datetime:
            raise RuntimeError("timetable exhausted")

        trigger._runs[0].timetable = type(
            "Broken", (), {"next_after": staticmethod(broken), "tz": timetable.tz}
        )()  # type: ignore[assignment]
        await clock.until(utc(2026, 3, 3, 9, 0, 1))  # the first run was planned at start
        health = trigger.get_health()
    assert creator.scheduled_times() == ["2026-03-02T09:00:00Z"]
    assert events.reasons() == ["ScheduleFailed"]
    assert "timetable exhausted" in events.events[0][2]
    assert health.errors_count == 1
    assert health.source_status["nextScheduleTime"] is None


# --- a crash before the first status write ---------------------------------------------------------


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("catch_up", "fired"),
    [
        ("All", ["09:00", "09:10", "09:20", "09:30"]),
        ("Latest", ["09:00", "09:30"]),
    ],
)
async def test_a_crash_before_the_first_status_write_loses_no_run(catch_up: str, fired: list[str]) -> None:
    """The first run is accepted, the process dies before `lastScheduleTime` is written, and stays down
    across two due times: the next instance anchors on the trigger's creation, like a CronJob."""
    clock = LoopClock(MONDAY_0859)
    creator = RecordingJobCreator(clock)
    schedule = config("*/10 * * * *", catch_up=catch_up)
    created = MONDAY_0859 - timedelta(seconds=30)
    async with running(clock, creator, schedule, created_at=created):
        await clock.until(utc(2026, 3, 2, 9, 0, 0, 50_000))  # killed 50 ms after the first run
    await clock.until(utc(2026, 3, 2, 9, 35))
    events = RecordingEvents()
    async with running(clock, creator, schedule, created_at=created, events=events) as trigger:
        await asyncio.sleep(1)
        health = trigger.get_health()
    assert creator.scheduled_times() == [f"2026-03-02T{hm}:00Z" for hm in fired]
    keys = [job.idempotency_key for job in creator.jobs.values()]
    assert len(keys) == len(set(keys)) == len(fired)
    assert health.source_status["lastScheduleTime"] == "2026-03-02T09:30:00Z"
    # The 09:00 run the first instance could not record is counted once, by the instance that re-sent it.
    assert health.jobs_created_count == (4 if catch_up == "All" else 1)


@pytest.mark.looptime
async def test_the_creation_time_anchors_only_until_a_run_is_recorded() -> None:
    clock = LoopClock(utc(2026, 3, 2, 12, 30))
    creator = RecordingJobCreator(clock)
    async with running(
        clock,
        creator,
        config("0 * * * *", catch_up="All"),
        created_at=utc(2026, 3, 2, 8, 30),
        last_schedule_time=utc(2026, 3, 2, 11),
    ):
        await asyncio.sleep(1)
    assert creator.scheduled_times() == ["2026-03-02T12:00:00Z"]


@pytest.mark.looptime
async def test_a_new_trigger_fires_the_runs_due_since_its_creation() -> None:
    clock = LoopClock(utc(2026, 3, 2, 9, 0, 7))
    creator = RecordingJobCreator(clock)
    async with running(
        clock, creator, config("*/5 * * * * *", catch_up="All"), created_at=utc(2026, 3, 2, 8, 59, 58)
    ):
        await asyncio.sleep(1)
    assert creator.scheduled_times() == ["2026-03-02T09:00:00Z", "2026-03-02T09:00:05Z"]
