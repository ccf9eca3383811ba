"""What a schedule expression means: pure timetable logic, no event loop."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from portico.sources.schedule.cron import ScheduleError, parse_cron
from portico.sources.schedule.timetable import EPOCH, IntervalTimetable, parse_timetable
from tests.sources.schedule.conftest import fires, utc

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/15 * * * *", [utc(2026, 3, 2, 9, 15), utc(2026, 3, 2, 9, 30), utc(2026, 3, 2, 9, 45)]),
        ("0 9 * * MON-FRI", [utc(2026, 3, 3, 9), utc(2026, 3, 4, 9), utc(2026, 3, 5, 9)]),
        ("30 9 1,15 * *", [utc(2026, 3, 15, 9, 30), utc(2026, 4, 1, 9, 30), utc(2026, 4, 15, 9, 30)]),
        ("0 0 1 JAN-MAR/2 *", [utc(2027, 1, 1), utc(2027, 3, 1), utc(2028, 1, 1)]),
        ("0 12 * * 7", [utc(2026, 3, 8, 12), utc(2026, 3, 15, 12), utc(2026, 3, 22, 12)]),
        ("5/20 10 * * *", [utc(2026, 3, 2, 10, 5), utc(2026, 3, 2, 10, 25), utc(2026, 3, 2, 10, 45)]),
        ("*/20 * * * * *", [utc(2026, 3, 2, 9, 0, 20), utc(2026, 3, 2, 9, 0, 40), utc(2026, 3, 2, 9, 1)]),
        ("30 0 9 * * *", [utc(2026, 3, 2, 9, 0, 30), utc(2026, 3, 3, 9, 0, 30), utc(2026, 3, 4, 9, 0, 30)]),
        ("@yearly", [utc(2027, 1, 1), utc(2028, 1, 1), utc(2029, 1, 1)]),
        ("@annually", [utc(2027, 1, 1), utc(2028, 1, 1), utc(2029, 1, 1)]),
        ("@monthly", [utc(2026, 4, 1), utc(2026, 5, 1), utc(2026, 6, 1)]),
        ("@weekly", [utc(2026, 3, 8), utc(2026, 3, 15), utc(2026, 3, 22)]),
        ("@daily", [utc(2026, 3, 3), utc(2026, 3, 4), utc(2026, 3, 5)]),
        ("@hourly", [utc(2026, 3, 2, 10), utc(2026, 3, 2, 11), utc(2026, 3, 2, 12)]),
        ("@every 30s", [utc(2026, 3, 2, 9, 0, 30), utc(2026, 3, 2, 9, 1), utc(2026, 3, 2, 9, 1, 30)]),
        ("@every 1h30m", [utc(2026, 3, 2, 10, 30), utc(2026, 3, 2, 12), utc(2026, 3, 2, 13, 30)]),
        ("0 0 29 2 *", [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29)]),
    ],
)
def test_expression_forms(expression: str, expected: list[datetime]) -> None:
    assert fires(expression, utc(2026, 3, 2, 9, 0), 3) == expected


def test_every_is_anchored_to_the_epoch_whatever_the_starting_point() -> None:
    timetable = parse_timetable("@every 7m")
    assert isinstance(timetable, IntervalTimetable)
    for start in (utc(2026, 3, 2, 9, 0, 1), utc(2026, 3, 2, 9, 3, 59, 999999), utc(2031, 7, 7, 7, 7, 7)):
        first = timetable.next_after(start)
        assert first > start
        assert first - start <= timedelta(minutes=7)
        assert (first - EPOCH) % timedelta(minutes=7) == timedelta(0)


def test_every_ignores_daylight_saving_time() -> None:
    # Elapsed time: the spring-forward night still has a fire every hour.
    found = fires("@every 1h", utc(2026, 3, 29, 0, 0), 3, "Europe/Berlin")
    assert found == [utc(2026, 3, 29, 1), utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)]


def test_time_zone() -> None:
    found = fires("0 9 * * *", utc(2026, 3, 2), 1, "Europe/Berlin")
    assert found == [utc(2026, 3, 2, 8)]
    found = fires("0 9 * * *", utc(2026, 7, 2), 1, "Europe/Berlin")
    assert found == [utc(2026, 7, 2, 7)]
    assert [
        m.astimezone(NEW_YORK).hour for m in fires("0 9 * * *", utc(2026, 3, 6), 4, "America/New_York")
    ] == [
        9,
        9,
        9,
        9,
    ]


def test_spring_forward_gap_fires_once_shifted_by_the_gap() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    found = fires("30 2 * * *", utc(2026, 3, 28, 12), 3, "Europe/Berlin")
    local = [m.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for m in found]
    assert local == ["03-29 03:30 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]


def test_spring_forward_gap_does_not_fire_twice_when_the_shifted_time_is_also_scheduled() -> None:
    # 02:00, 02:15, ... land on 03:00, 03:15, ... which are scheduled anyway: each fires once.
    found = fires("*/15 * * * *", utc(2026, 3, 29, 0, 30), 6, "Europe/Berlin")
    assert found == [
        utc(2026, 3, 29, 0, 45),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 15),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 29, 1, 45),
        utc(2026, 3, 29, 2, 0),
    ]
    assert len(set(found)) == len(found)


def test_spring_forward_in_new_york() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    found = fires("30 2 * * *", utc(2026, 3, 7, 12), 2, "America/New_York")
    assert [m.astimezone(NEW_YORK).strftime("%d %H:%M %Z") for m in found] == ["08 03:30 EDT", "09 02:30 EDT"]


def test_autumn_repeated_time_fires_once_at_its_first_occurrence() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    found = fires("30 2 * * *", utc(2026, 10, 24, 12), 3, "Europe/Berlin")
    assert found == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]
    # Asked from inside the repeated hour (second occurrence of 02:10), the 02:30 of that day is past.
    assert fires("30 2 * * *", utc(2026, 10, 25, 1, 10), 1, "Europe/Berlin") == [utc(2026, 10, 26, 1, 30)]


def test_autumn_wildcard_hour_fires_each_wall_time_once() -> None:
    found = fires("0 * * * *", utc(2026, 10, 24, 22, 30), 4, "Europe/Berlin")
    assert [m.astimezone(BERLIN).strftime("%H:%M %Z") for m in found] == [
        "01:00 CEST",
        "02:00 CEST",
        "03:00 CET",
        "04:00 CET",
    ]


def test_exclusion_dates_are_calendar_dates_in_the_time_zone() -> None:
    # Midnight in Berlin is 23:00 UTC the day before: the excluded Berlin date decides.
    found = fires("0 0 * * *", utc(2026, 3, 1, 12), 3, "Europe/Berlin", exclusion_dates=[date(2026, 3, 3)])
    assert [m.astimezone(BERLIN).date() for m in found] == [
        date(2026, 3, 2),
        date(2026, 3, 4),
        date(2026, 3, 5),
    ]
    assert found[0] == utc(2026, 3, 1, 23)


def test_exclusion_dates_skip_whole_days_of_a_dense_schedule() -> None:
    excluded = [date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26)]
    found = fires("* * * * * *", utc(2026, 12, 23, 23, 59, 58), 3, "UTC", exclusion_dates=excluded)
    assert found == [utc(2026, 12, 23, 23, 59, 59), utc(2026, 12, 27, 0, 0, 0), utc(2026, 12, 27, 0, 0, 1)]
    # New York's 24 December starts at 05:00 UTC.
    found = fires("@every 1h", utc(2026, 12, 24, 3, 30), 2, "America/New_York", exclusion_dates=excluded)
    assert found == [utc(2026, 12, 24, 4), utc(2026, 12, 27, 5)]


# --- agreement with croniter, the reference implementation in UTC ------------------------------------

_minutes = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.tuples(st.integers(0, 59), st.integers(0, 59))
    .filter(lambda p: p[0] != p[1])
    .map(lambda p: f"{min(p)}-{max(p)}"),
    st.integers(2, 30).map(lambda s: f"*/{s}"),
    st.lists(st.integers(0, 59), min_size=2, max_size=4, unique=True).map(lambda v: ",".join(map(str, v))),
)
_hours = st.one_of(
    st.just("*"),
    st.integers(0, 23).map(str),
    st.tuples(st.integers(0, 23), st.integers(0, 23))
    .filter(lambda p: p[0] != p[1])
    .map(lambda p: f"{min(p)}-{max(p)}"),
    st.integers(2, 12).map(lambda s: f"*/{s}"),
)
_days = st.one_of(
    st.just("*"),
    st.integers(1, 28).map(str),
    st.tuples(st.integers(1, 31), st.integers(1, 31))
    .filter(lambda p: p[0] != p[1])
    .map(lambda p: f"{min(p)}-{max(p)}"),
    st.integers(2, 10).map(lambda s: f"*/{s}"),
    st.lists(st.integers(1, 31), min_size=2, max_size=3, unique=True).map(lambda v: ",".join(map(str, v))),
)
_months = st.one_of(
    st.just("*"),
    st.integers(1, 12).map(str),
    st.tuples(st.integers(1, 12), st.integers(1, 12))
    .filter(lambda p: p[0] != p[1])
    .map(lambda p: f"{min(p)}-{max(p)}"),
    st.integers(2, 6).map(lambda s: f"*/{s}"),
)
_weekdays = st.one_of(
    st.just("*"),
    st.integers(0, 6).map(str),
    st.tuples(st.integers(0, 6), st.integers(0, 6))
    .filter(lambda p: p[0] != p[1])
    .map(lambda p: f"{min(p)}-{max(p)}"),
    st.lists(st.integers(0, 6), min_size=2, max_size=3, unique=True).map(lambda v: ",".join(map(str, v))),
)
# Ranges are generated with distinct ends: croniter reads `a-a` as something other than the single value.


def _full_range_written_as_list_or_range(expression: str) -> bool:
    """croniter reads a day field that lists every value (`0-6`) as `*`; cron and Kubernetes read it as
    restricted, which matters for how day-of-month and day-of-week combine."""
    cron = parse_cron(expression)
    fields = expression.split()
    return (fields[-3] != "*" and len(cron.days) == 31) or (fields[-1] != "*" and len(cron.weekdays) == 7)


_starts = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31))


@settings(max_examples=300, deadline=None)
@given(
    fields=st.tuples(_minutes, _hours, _days, _months, _weekdays),
    start=_starts,
)
def test_five_field_expressions_agree_with_croniter(fields: tuple[str, ...], start: datetime) -> None:
    expression = " ".join(fields)
    try:
        timetable = parse_timetable(expression)
    except ScheduleError as exc:
        assert "never fires" in str(exc)
        return
    assume(not _full_range_written_as_list_or_range(expression))
    reference = croniter(expression, start.replace(tzinfo=UTC))
    moment = start.replace(tzinfo=UTC)
    for _ in range(5):
        moment = timetable.next_after(moment)
        assert moment == reference.get_next(datetime), expression


@settings(max_examples=150, deadline=None)
@given(seconds=_minutes, fields=st.tuples(_minutes, _hours, _days, _months, _weekdays), start=_starts)
def test_six_field_expressions_agree_with_croniter_seconds_first(
    seconds: str, fields: tuple[str, ...], start: datetime
) -> None:
    expression = " ".join((seconds, *fields))
    try:
        timetable = parse_timetable(expression)
    except ScheduleError as exc:
        assert "never fires" in str(exc)
        return
    assume(not _full_range_written_as_list_or_range(expression))
    reference = croniter(expression, start.replace(tzinfo=UTC), second_at_beginning=True)
    moment = start.replace(tzinfo=UTC)
    for _ in range(5):
        moment = timetable.next_after(moment)
        assert moment == reference.get_next(datetime), expression


_zones = st.sampled_from(
    ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Tehran"]
)


@settings(max_examples=200, deadline=None)
@given(fields=st.tuples(_minutes, _hours, _days, _months, _weekdays), zone=_zones, start=_starts)
def test_fire_times_increase_and_match_in_wall_time(
    fields: tuple[str, ...], zone: str, start: datetime
) -> None:
    """Whatever the zone's transitions: strictly increasing instants, each one a matching wall time (or a
    non-existent matching wall time shifted by its gap), never the second occurrence of a wall time."""
    expression = " ".join(fields)
    try:
        timetable = parse_timetable(expression, zone)
    except ScheduleError:
        return
    tz = ZoneInfo(zone)
    cron = parse_cron(expression)
    moment = start.replace(tzinfo=UTC)
    for _ in range(8):
        found = timetable.next_after(moment)
        assert found > moment
        local = found.astimezone(tz)
        wall = local.replace(tzinfo=None)
        if local.fold == 1:
            # Second occurrence of a repeated time: only allowed if it is not also a first occurrence
            # of a matching wall time... which it is by definition, so never.
            raise AssertionError(f"{expression} fired the second occurrence of {wall} in {zone}")
        matches = cron.next_match(wall - timedelta(seconds=1)) == wall
        if not matches:
            # A shifted gap time: some matching wall time inside the gap maps here.
            shift = found.astimezone(tz).utcoffset() - (found - timedelta(hours=3)).astimezone(tz).utcoffset()  # type: ignore[operator]
            assert shift > timedelta(0), (expression, zone, found)
            candidate = cron.next_match(wall - shift - timedelta(seconds=1))
            assert candidate.replace(tzinfo=tz).astimezone(UTC) == found, (expression, zone, found)
        moment = found


# --- daylight-saving transitions against a brute-force oracle -----------------------------------------


def _transitions(zone: str, year: int) -> list[datetime]:
    """Instants (to the minute) where the zone's offset changes during `year`, found by scanning."""
    tz = ZoneInfo(zone)
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(tz).utcoffset()
    while moment.year == year:
        step = moment + timedelta(hours=1)
        if step.astimezone(tz).utcoffset() != offset:
            minute = moment
            while minute.astimezone(tz).utcoffset() == offset:
                minute += timedelta(minutes=1)
            found.append(minute)
            offset = step.astimezone(tz).utcoffset()
        moment = step
    return found


def _matches(expression: str, wall: datetime) -> bool:
    """Whether a wall time matches, from the parsed field sets alone (not the search code)."""
    cron = parse_cron(expression)
    if wall.minute not in cron.minutes or wall.hour not in cron.hours or wall.month not in cron.months:
        return False
    by_day = wall.day in cron.days
    by_weekday = (wall.weekday() + 1) % 7 in cron.weekdays
    if cron.any_day or cron.any_weekday:
        return by_day and by_weekday
    return by_day or by_weekday


def _oracle(expression: str, zone: str, moment: datetime, hours: int) -> datetime | None:
    """The earliest instant after `moment` that is the fold=0 reading of a matching wall time, among
    wall times within `hours` of `moment`; None if there is none in that window."""
    tz = ZoneInfo(zone)
    wall = (moment - timedelta(hours=4)).astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    end = wall + timedelta(hours=hours + 8)
    best = None
    while wall <= end:
        if _matches(expression, wall):
            instant = wall.replace(tzinfo=tz).astimezone(UTC)
            if instant > moment and (best is None or instant < best):
                best = instant
        wall += timedelta(minutes=1)
    if best is not None and best - moment > timedelta(hours=hours):
        return None
    return best


_dense_hours = st.one_of(
    st.just("*"),
    st.sampled_from(["1", "2", "3", "1-3", "0,2", "2,3", "*/2", "1-4/3", "23,0,1"]),
)
_dense_minutes = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.integers(2, 30).map(lambda s: f"*/{s}"),
    st.sampled_from(["0", "30", "0,30", "15-45", "59", "45"]),
)
_transition_zones = st.sampled_from(
    ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "America/Havana"]
)


@settings(max_examples=300, deadline=None)
@given(
    minute=_dense_minutes,
    hour=_dense_hours,
    weekday=st.sampled_from(["*", "0", "1-5", "SAT,SUN"]),
    zone=_transition_zones,
    year=st.integers(2024, 2030),
    which=st.integers(0, 1),
    shift_minutes=st.integers(-6 * 60, 6 * 60),
    seconds=st.integers(0, 59),
)
def test_next_fire_near_transitions_matches_the_brute_force_oracle(
    minute: str, hour: str, weekday: str, zone: str, year: int, which: int, shift_minutes: int, seconds: int
) -> None:
    transitions = _transitions(zone, year)
    assume(len(transitions) > which)
    moment = transitions[which] + timedelta(minutes=shift_minutes, seconds=seconds)
    expression = f"{minute} {hour} * * {weekday}"
    expected = _oracle(expression, zone, moment, hours=30)
    assume(expected is not None)
    assert parse_timetable(expression, zone).next_after(moment) == expected, (expression, zone, moment)
