"""Cron expressions, `@every` durations and time-zone names: parsing and matching, no event loop."""

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from portico.sources.schedule.cron import ScheduleError, parse_cron, parse_every, parse_time_zone
from portico.sources.schedule.timetable import parse_timetable
from tests.sources.schedule.conftest import fires, utc


def test_day_of_month_and_day_of_week_match_either_when_both_are_restricted() -> None:
    # The 13th or any Friday, as in Vixie cron and Kubernetes CronJob.
    assert fires("0 0 13 * FRI", utc(2026, 3, 1), 4) == [
        utc(2026, 3, 6),
        utc(2026, 3, 13),
        utc(2026, 3, 20),
        utc(2026, 3, 27),
    ]
    # A star (or ?) in one of them leaves the other alone in charge.
    assert fires("0 0 ? * FRI", utc(2026, 3, 1), 2) == [utc(2026, 3, 6), utc(2026, 3, 13)]
    assert fires("0 0 13 * *", utc(2026, 3, 1), 2) == [utc(2026, 3, 13), utc(2026, 4, 13)]


def test_whitespace_and_case_do_not_matter() -> None:
    assert fires("  0   9 * *  mon-fri ", utc(2026, 3, 2, 9), 1) == [utc(2026, 3, 3, 9)]
    assert fires("@DAILY", utc(2026, 3, 2), 1) == [utc(2026, 3, 3)]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("* * * *", "has 4 fields; expected 5"),
        ("* * * * * * *", "has 7 fields"),
        ("61 * * * *", "minute field '61': 61 is out of range 0-59"),
        ("0 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field '13': 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field '8': 8 is out of range 0-7"),
        ("60 * * * * *", "second field '60': 60 is out of range 0-59"),
        ("*/0 * * * *", "step '0' in '*/0' must be a positive integer"),
        ("5-1 * * * *", "range '5-1' starts after it ends"),
        ("0 0 * FOO *", "'FOO' is not a number or a name (JAN, FEB"),
        ("0 0 1,,2 * *", "empty list item"),
        ("? * * * *", "'?' is only allowed in the day-of-month and day-of-week fields"),
        ("0 0 30 2 *", "never fires: day-of-month '30' does not occur in February"),
        ("0 0 31 4,6 *", "does not occur in April, June"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("@every", "@every duration '' is not a duration"),
        ("@every 10", "is not a duration like 30s"),
        ("@every 1d", "'1d' is not a duration like 30s, 5m, 2h or 1h30m"),
        ("@every 0s", "must be at least 1s"),
        ("@every 500ms", "is not a duration"),
        ("@every 1.25s", "is not a whole number of seconds"),
        ("@every 9000h", "must be at most 8784h"),
    ],
)
def test_invalid_expressions_say_exactly_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_timetable(expression)
    assert message in str(info.value)


def test_every_durations() -> None:
    assert parse_every("30s") == timedelta(seconds=30)
    assert parse_every("1h30m") == timedelta(minutes=90)
    assert parse_every("1.5h") == timedelta(minutes=90)
    assert parse_every("2m10s") == timedelta(seconds=130)


def test_time_zones_are_iana_names() -> None:
    assert parse_time_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    for bad in ("Mars/Olympus", "Europe", "", "utc", "localtime", "../etc/passwd", "/usr/share/zoneinfo/UTC"):
        with pytest.raises(ScheduleError, match="unknown time zone"):
            parse_time_zone(bad)


def test_parsed_expressions_are_shared() -> None:
    assert parse_cron("0 9 * * *") is parse_cron("0 9 * * *")
