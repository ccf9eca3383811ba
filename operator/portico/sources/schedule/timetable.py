"""When a schedule fires: a `Timetable` turns a parsed expression, a time zone and exclusion dates into
instants.

Cron fields are matched in the schedule's local wall time and turned into instants with `zoneinfo`:

- a wall time that does not exist (the spring-forward gap) is read with the offset in force before the
  gap, so it fires once, shifted forward by the length of the gap (02:30 becomes 03:30 CEST), as RFC 5545
  prescribes for calendar events; if that instant is also a regular fire time it fires once;
- a wall time that occurs twice (the autumn fall-back hour) fires once, at its first occurrence.

`@every <duration>` counts elapsed time from the Unix epoch (1970-01-01T00:00:00Z), so its fire times do
not depend on when the trigger (re)started and ignore daylight-saving time.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from portico.sources.schedule.cron import (
    ONE_SECOND,
    CronExpression,
    ScheduleError,
    parse_cron,
    parse_every,
    parse_time_zone,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DST_MARGIN = timedelta(hours=3)
"""Longer than any daylight-saving shift in the tz database (the largest is 2 hours), so a search that
starts this much earlier sees every wall time of a gap that maps after the starting instant."""

_NO_DATES: frozenset[date] = frozenset()


class Timetable(ABC):
    """The fire times of one schedule: instants (aware UTC datetimes) in increasing order."""

    def __init__(self, expression: str, tz: ZoneInfo, exclusion_dates: Iterable[date]) -> None:
        self.expression = expression
        self.tz = tz
        self.exclusion_dates = frozenset(exclusion_dates) or _NO_DATES

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment`, skipping excluded dates (in the schedule's
        time zone)."""
        found = self._next_raw(moment.astimezone(UTC))
        if not self.exclusion_dates:
            return found
        for _ in range(2 * len(self.exclusion_dates) + 2):
            local_date = found.astimezone(self.tz).date()
            if local_date not in self.exclusion_dates:
                return found
            next_day = datetime.combine(local_date + timedelta(days=1), time()).replace(tzinfo=self.tz)
            found = self._next_raw(max(found, next_day.astimezone(UTC) - timedelta(microseconds=1)))
        raise ScheduleError(f"schedule {self.expression!r} finds no time outside its exclusion dates")

    @abstractmethod
    def _next_raw(self, moment: datetime) -> datetime: ...


class CronTimetable(Timetable):
    def __init__(self, cron: CronExpression, tz: ZoneInfo, exclusion_dates: Iterable[date] = ()) -> None:
        super().__init__(cron.source, tz, exclusion_dates)
        self.cron = cron
        self._fixed_offset = _fixed_offset(tz)

    def _next_raw(self, moment: datetime) -> datetime:
        offset = self._fixed_offset
        if offset is not None:
            local = (moment.astimezone(UTC) + offset).replace(tzinfo=None)
            return (self.cron.next_match(local) - offset).replace(tzinfo=UTC)
        if self._transition_near(moment):
            return self._next_near_transition(moment, moment, None)
        wall = self.cron.next_match(moment.astimezone(self.tz).replace(tzinfo=None))
        found = self._instant(wall)
        if not self._transition_near(found):
            return found
        return self._next_near_transition(moment, found, wall)

    def _next_near_transition(
        self, moment: datetime, near: datetime, first_wall: datetime | None
    ) -> datetime:
        """Next to a daylight-saving transition, wall times and instants are not in the same order (the
        walls of a spring gap map after the transition, onto instants also reached by later walls).

        Walls before `boundary` are read with the offset before the transition (gap and repeated walls
        included, fold=0), walls from it on with the offset after; each side is monotonic, so the answer
        is the earlier of the first candidate on each side. `first_wall` is the first matching wall after
        `moment`'s own wall time, when `moment` is far from the transition."""
        transition, before, after = self._transition(near)
        boundary = (transition + max(before, after)).replace(tzinfo=None)
        candidates: list[datetime] = []
        if first_wall is None:
            wall = self.cron.next_match((moment + before).replace(tzinfo=None))
        else:
            wall = first_wall
        if wall < boundary:
            candidates.append((wall - before).replace(tzinfo=UTC))
        start = (moment + after).replace(tzinfo=None) if first_wall is None else first_wall - ONE_SECOND
        wall = self.cron.next_match(max(start, boundary - ONE_SECOND))
        if wall - boundary <= DST_MARGIN:
            candidates.append((wall - after).replace(tzinfo=UTC))
        else:
            # Nothing right after the transition: continue from where the order is plain again.
            candidates.append(self._next_raw(max(moment, transition + DST_MARGIN)))
        return min(candidates)

    def _transition(self, near: datetime) -> tuple[datetime, timedelta, timedelta]:
        """The transition within `DST_MARGIN` of `near`: its instant (to the second) and the offsets
        before and after it."""
        low = near.astimezone(UTC).replace(microsecond=0) - DST_MARGIN
        high = low + 2 * DST_MARGIN
        before, after = self._offset(low), self._offset(high)
        while high - low > ONE_SECOND:
            middle = low + (high - low) // 2
            middle = middle.replace(microsecond=0)
            if self._offset(middle) == before:
                low = middle
            else:
                high = middle
        return high, before, after

    def _offset(self, moment: datetime) -> timedelta:
        offset = moment.astimezone(self.tz).utcoffset()
        assert offset is not None
        return offset

    def _instant(self, wall: datetime) -> datetime:
        """A wall time as an instant: fold=0 reads a repeated time as its first occurrence and a
        non-existent time with the offset before the gap."""
        return wall.replace(tzinfo=self.tz).astimezone(UTC)

    def _transition_near(self, moment: datetime) -> bool:
        return self._offset(moment - DST_MARGIN) != self._offset(moment + DST_MARGIN)


class IntervalTimetable(Timetable):
    """`@every`: multiples of the interval since the Unix epoch."""

    def __init__(
        self, expression: str, interval: timedelta, tz: ZoneInfo, exclusion_dates: Iterable[date] = ()
    ) -> None:
        super().__init__(expression, tz, exclusion_dates)
        self.interval = interval

    def _next_raw(self, moment: datetime) -> datetime:
        periods = (moment.astimezone(UTC) - EPOCH) // self.interval
        return EPOCH + (periods + 1) * self.interval


_FIXED_ZONES = frozenset({"UTC", "UCT", "GMT", "Greenwich", "Universal", "Zulu"})


def _fixed_offset(tz: ZoneInfo) -> timedelta | None:
    """The offset of a zone that is fixed by definition (UTC, Etc/GMT+5), else None."""
    if tz.key in _FIXED_ZONES or tz.key.startswith("Etc/"):
        return EPOCH.astimezone(tz).utcoffset()
    return None


def parse_timetable(
    expression: str, time_zone: str = "UTC", exclusion_dates: Sequence[date] = ()
) -> Timetable:
    """The timetable of a schedule expression: 5- or 6-field cron, a macro, or `@every <duration>`.
    Raises `ScheduleError` (a `ValueError`) with the exact problem."""
    tz = parse_time_zone(time_zone)
    text = " ".join(expression.split())
    if not text:
        raise ScheduleError("the schedule expression is empty")
    keyword, _, rest = text.partition(" ")
    if keyword.lower() == "@every":
        return IntervalTimetable(text, parse_every(rest), tz, exclusion_dates)
    return CronTimetable(parse_cron(text), tz, exclusion_dates)


def validate_expression(expression: str) -> str:
    """Check an expression without a time zone; returns it unchanged. Raises `ScheduleError`. (Through
    the cache: the timetable of a UTC schedule is then the one its trigger runs on.)"""
    shared_timetable(expression, "UTC", ())
    return expression


@lru_cache(maxsize=4096)
def shared_timetable(expression: str, time_zone: str, exclusion_dates: tuple[date, ...]) -> Timetable:
    """`parse_timetable`, one object per distinct schedule: timetables are immutable, so the triggers of
    an operator that share a schedule share its timetable."""
    return parse_timetable(expression, time_zone, exclusion_dates)
