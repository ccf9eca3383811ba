"""Which runs are due, late, missed or caught up: the pure rules, with plain datetimes."""

from datetime import datetime, timedelta

import pytest

from portico.ports.job_creator import Job, JobStatus
from portico.sources.schedule.planning import (
    CATCH_UP_ALL_LIMIT,
    MISSED_COUNT_LIMIT,
    RETRY_MAX_DELAY,
    CatchUpPolicy,
    RunTimes,
    forbids,
    retry_delay,
    run_key,
    unrecorded,
)
from portico.sources.schedule.timetable import parse_timetable
from tests.sources.schedule.conftest import utc


def times(expression: str, *, key: str = "uid", jitter: float = 0, deadline: float | None = None) -> RunTimes:
    return RunTimes(
        parse_timetable(expression),
        key,
        timedelta(seconds=jitter),
        None if deadline is None else timedelta(seconds=deadline),
    )


def test_the_idempotency_key_names_the_schedule_and_the_scheduled_time() -> None:
    assert (
        run_key("8d1c-uid:morning", utc(2026, 3, 2, 9, 0, 0, 999)) == "8d1c-uid:morning:2026-03-02T09:00:00Z"
    )


# --- jitter ----------------------------------------------------------------------------------------


def test_without_jitter_a_run_is_due_at_its_scheduled_time() -> None:
    hourly = times("0 * * * *")
    assert hourly.due(utc(2026, 3, 2, 9)) == utc(2026, 3, 2, 9)


def test_jitter_depends_only_on_the_key_and_the_scheduled_time() -> None:
    scheduled = utc(2026, 3, 2, 9)
    first = times("0 * * * *", key="a", jitter=600).due(scheduled)
    assert first == times("0 * * * *", key="a", jitter=600).due(scheduled)
    others = {times("0 * * * *", key=f"k{n}", jitter=600).due(scheduled) for n in range(20)}
    assert len(others) > 10
    assert all(scheduled <= due < scheduled + timedelta(seconds=600) for due in others)


def test_jitter_never_reaches_the_next_run() -> None:
    every_10s = times("@every 10s", jitter=3600)
    for n in range(200):
        scheduled = utc(2026, 3, 2, 9) + timedelta(seconds=10 * n)
        assert scheduled <= every_10s.due(scheduled) < scheduled + timedelta(seconds=10)
        assert every_10s.due(scheduled) == every_10s.due(scheduled, scheduled + timedelta(seconds=10))


# --- the first run still to come, and what a wake-up means ----------------------------------------------


def test_first_pending_without_an_anchor_is_the_next_scheduled_time() -> None:
    pending, successor = times("*/10 * * * *").first_pending(utc(2026, 3, 2, 9, 5), None)
    assert (pending, successor) == (utc(2026, 3, 2, 9, 10), utc(2026, 3, 2, 9, 20))


def test_first_pending_keeps_a_run_whose_jittered_time_is_still_ahead() -> None:
    jittered = times("0 * * * *", key="late-one", jitter=3000)
    due = jittered.due(utc(2026, 3, 2, 9))
    assert due > utc(2026, 3, 2, 9)
    just_before = due - timedelta(milliseconds=1)
    assert jittered.first_pending(just_before, None)[0] == utc(2026, 3, 2, 9)
    assert jittered.first_pending(due + timedelta(milliseconds=1), None)[0] == utc(2026, 3, 2, 10)


def test_first_pending_never_goes_back_before_the_anchor() -> None:
    pending, _ = times("* * * * *").first_pending(utc(2026, 3, 2, 9, 0, 30), utc(2026, 3, 2, 9, 5))
    assert pending == utc(2026, 3, 2, 9, 6)


@pytest.mark.parametrize(
    ("now", "deadline", "step"),
    [
        (utc(2026, 3, 2, 9, 0, 0, 2000), None, "fire"),
        (utc(2026, 3, 2, 9, 0, 59), 60, "fire"),
        (utc(2026, 3, 2, 9, 5), 60, "late"),
        (utc(2026, 3, 2, 10, 0, 1), None, "behind"),
        (utc(2026, 3, 2, 10, 0, 1), 60, "behind"),
    ],
)
def test_a_wake_up_fires_counts_a_late_run_or_notices_it_is_behind(
    now: datetime, deadline: float | None, step: str
) -> None:
    hourly = times("0 * * * *", deadline=deadline)
    assert hourly.step(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10), now) == step


# --- catch-up ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fired", "missed"),
    [
        ("None", [], 5),
        ("Latest", [utc(2026, 3, 2, 14)], 4),
        ("All", [utc(2026, 3, 2, h) for h in (10, 11, 12, 13, 14)], 0),
    ],
)
def test_catch_up_policies(policy: CatchUpPolicy, fired: list[datetime], missed: int) -> None:
    plan = times("0 * * * *").catch_up(
        utc(2026, 3, 2, 9), utc(2026, 3, 2, 15), utc(2026, 3, 2, 14, 30), policy
    )
    assert plan is not None
    assert (plan.fire, plan.missed, plan.capped, plan.first) == (fired, missed, False, utc(2026, 3, 2, 10))


def test_nothing_to_catch_up() -> None:
    hourly = times("0 * * * *")
    assert hourly.catch_up(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10), utc(2026, 3, 2, 9, 30), "All") is None


def test_catch_up_stays_within_the_deadline() -> None:
    plan = times("*/5 * * * *", deadline=600).catch_up(
        utc(2026, 3, 2, 11), utc(2026, 3, 2, 12, 5), utc(2026, 3, 2, 12, 2), "All"
    )
    assert plan is not None
    assert plan.fire == [utc(2026, 3, 2, 11, 55), utc(2026, 3, 2, 12)]
    assert plan.missed == 10


def test_catch_up_all_fires_at_most_the_limit_most_recent_runs() -> None:
    plan = times("* * * * *").catch_up(
        utc(2026, 3, 2, 9), utc(2026, 3, 2, 12, 1), utc(2026, 3, 2, 12, 0, 30), "All"
    )
    assert plan is not None
    assert len(plan.fire) == CATCH_UP_ALL_LIMIT
    assert (plan.fire[0], plan.fire[-1]) == (utc(2026, 3, 2, 10, 21), utc(2026, 3, 2, 12))
    assert plan.missed == 180 - CATCH_UP_ALL_LIMIT


def test_a_long_outage_is_counted_up_to_a_limit_and_said_so() -> None:
    every_second = times("* * * * * *")
    plan = every_second.catch_up(utc(2025, 3, 2), utc(2026, 3, 2), utc(2026, 3, 2), "Latest")
    assert plan is not None
    assert plan.fire == [utc(2026, 3, 2) - timedelta(seconds=1)]
    assert (plan.missed, plan.capped) == (MISSED_COUNT_LIMIT - 1, True)
    message = plan.describe(utc(2026, 3, 2), None)
    assert message.startswith(f"at least {MISSED_COUNT_LIMIT - 1} run(s) scheduled from 2025-03-02T00:00:01Z")
    assert "fired 1 (catchUp: Latest)" in message


def test_the_catch_up_message_names_the_deadline() -> None:
    plan = times("0 * * * *", deadline=300).catch_up(
        utc(2026, 3, 2, 10), utc(2026, 3, 2, 12), utc(2026, 3, 2, 11, 30), "Latest"
    )
    assert plan is not None
    assert plan.fire == []
    assert plan.describe(utc(2026, 3, 2, 12), 300) == (
        "1 run(s) scheduled from 2026-03-02T11:00:00Z to before 2026-03-02T12:00:00Z were not created while "
        "the trigger was not running on time (catchUp: Latest), startingDeadlineSeconds: 300."
    )


def test_latest_runs_are_oldest_first_and_bounded_by_the_window() -> None:
    hourly = times("0 * * * *")
    assert hourly.latest_runs(utc(2026, 3, 2, 9), utc(2026, 3, 2, 13), 2) == [
        utc(2026, 3, 2, 11),
        utc(2026, 3, 2, 12),
    ]
    assert hourly.latest_runs(utc(2026, 3, 2, 9), utc(2026, 3, 2, 13), 10) == [
        utc(2026, 3, 2, 10),
        utc(2026, 3, 2, 11),
        utc(2026, 3, 2, 12),
    ]
    assert hourly.latest_runs(utc(2026, 3, 2, 13), utc(2026, 3, 2, 9), 10) == []


# --- retries, Forbid, counting ------------------------------------------------------------------------


def test_retries_give_up_at_the_next_run_or_the_deadline() -> None:
    scheduled, horizon = utc(2026, 3, 2, 9), utc(2026, 3, 2, 10)
    assert times("0 * * * *").give_up_at(scheduled, horizon) == horizon
    assert times("0 * * * *", deadline=60).give_up_at(scheduled, horizon) == utc(2026, 3, 2, 9, 1)


def test_retry_delays_grow_with_jitter_and_are_capped() -> None:
    assert all(0.25 <= retry_delay(0) <= 0.5 for _ in range(100))
    assert all(0.5 <= retry_delay(1) <= 1.0 for _ in range(100))
    assert all(RETRY_MAX_DELAY / 2 <= retry_delay(30) <= RETRY_MAX_DELAY for _ in range(100))


def _job(status: JobStatus, key: str) -> Job:
    return Job(id="j-1", job_type="report.daily", status=status, idempotency_key=key)


def test_forbid_skips_only_while_another_run_is_active() -> None:
    assert forbids(_job(JobStatus.RUNNING, "uid:09:00"), "uid:10:00")
    assert forbids(_job(JobStatus.PENDING, "uid:09:00"), "uid:10:00")
    assert not forbids(_job(JobStatus.COMPLETED, "uid:09:00"), "uid:10:00")
    assert not forbids(_job(JobStatus.RUNNING, "uid:10:00"), "uid:10:00")  # this run, re-sent
    assert not forbids(None, "uid:10:00")


def test_a_run_accepted_but_not_recorded_by_an_earlier_instance_counts_here() -> None:
    started, recorded = utc(2026, 3, 2, 9, 35), utc(2026, 3, 2, 9, 0)
    assert unrecorded(utc(2026, 3, 2, 9, 10), started, recorded)
    assert unrecorded(utc(2026, 3, 2, 9, 10), started, None)
    assert not unrecorded(utc(2026, 3, 2, 9, 0), started, recorded)
    assert not unrecorded(utc(2026, 3, 2, 9, 40), started, recorded)
    assert not unrecorded(utc(2026, 3, 2, 9, 10), None, recorded)
