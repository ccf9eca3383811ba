"""Time for the schedule trigger: what a schedule expression means (`Timetable`) and the one process-wide
`Scheduler` that wakes up when any schedule is due.

Expressions are parsed here, once, by the same code for `portico validate`, the operator's spec check and
the running trigger, so "valid" and "fires" never disagree.

Cron fields are matched in the schedule's local wall time and turned into instants with `zoneinfo`:

- a wall time that does not exist (the spring-forward gap) is read with the offset in force before the
  gap, so it fires once, shifted forward by the length of the gap (02:30 becomes 03:30 CEST), as RFC 5545
  prescribes for calendar events; if that instant is also a regular fire time it fires once;
- a wall time that occurs twice (the autumn fall-back hour) fires once, at its first occurrence.

`@every <duration>` counts elapsed time from the Unix epoch (1970-01-01T00:00:00Z), so its fire times do
not depend on when the trigger (re)started and ignore daylight-saving time.
"""

import asyncio
import bisect
import calendar
import heapq
import itertools
import logging
import re
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, available_timezones

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
"""The wall clock: returns the current time as an aware UTC datetime. Injectable so that tests can tie
wall time to a fast-forwarded event loop."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_SECOND = timedelta(seconds=1)
MAX_EVERY = timedelta(days=366)
SEARCH_YEARS = 30
"""How far ahead a cron search looks before giving up; a satisfiable expression (every accepted one)
always matches within 8 years (29 February in the next leap year, skipping 2100)."""
DST_MARGIN = timedelta(hours=3)
"""Longer than any daylight-saving shift in the tz database (the largest is 2 hours), so a search that
starts this much earlier sees every wall time of a gap that maps after the starting instant."""


class ScheduleError(ValueError):
    """An expression or time zone that cannot be scheduled; the message says exactly what is wrong."""


# --- cron expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    """Symbolic names for low, low+1, ... (JAN.. or SUN..)."""


_SECOND = _FieldSpec("second", 0, 59)
_MINUTE = _FieldSpec("minute", 0, 59)
_HOUR = _FieldSpec("hour", 0, 23)
_DAY = _FieldSpec("day-of-month", 1, 31)
_MONTH = _FieldSpec(
    "month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
)
_WEEKDAY = _FieldSpec("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _parse_value(text: str, spec: _FieldSpec) -> int:
    upper = text.upper()
    if upper in spec.names:
        return spec.low + spec.names.index(upper)
    if not text.isdigit():
        hint = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise ScheduleError(f"{text!r} is not a number{hint}")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise ScheduleError(f"{value} is out of range {spec.low}-{spec.high}")
    return value


def _parse_field(text: str, spec: _FieldSpec) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it is unrestricted (`*` or `?`, with no step or step 1),
    which decides how day-of-month and day-of-week combine."""
    values: set[int] = set()
    unrestricted = False
    for item in text.split(","):
        if not item:
            raise ScheduleError("empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"step {step_text!r} in {item!r} must be a positive integer")
            step = int(step_text)
        if base in ("*", "?"):
            if base == "?" and spec not in (_DAY, _WEEKDAY):
                raise ScheduleError("'?' is only allowed in the day-of-month and day-of-week fields")
            low, high = spec.low, spec.high
            unrestricted = unrestricted or step == 1
        elif "-" in base:
            low_text, _, high_text = base.partition("-")
            low, high = _parse_value(low_text, spec), _parse_value(high_text, spec)
            if low > high:
                raise ScheduleError(f"range {base!r} starts after it ends")
        else:
            low = _parse_value(base, spec)
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    if spec is _WEEKDAY and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values), unrestricted


@dataclass(frozen=True, eq=False)
class CronExpression:
    """A parsed cron expression, matched against naive wall times at one-second resolution.

    Day-of-month and day-of-week combine as in Vixie cron and Kubernetes CronJob: when both are
    restricted, a day matching either fires; when one is `*` (or `?`), the other alone decides.
    """

    source: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    """0 = Sunday, as in cron."""
    any_day: bool
    any_weekday: bool

    def next_match(self, after: datetime) -> datetime:
        """The first matching wall time strictly after `after` (naive)."""
        start = after.replace(microsecond=0) + ONE_SECOND
        y, mo, d, h, mi, s = start.year, start.month, start.day, start.hour, start.minute, start.second
        last_year = y + SEARCH_YEARS
        while y <= last_year:
            if mo > 12:
                y, mo, d, h, mi, s = y + 1, self.months[0], 1, 0, 0, 0
                continue
            if mo not in self.months:
                i = bisect.bisect_left(self.months, mo)
                if i == len(self.months):
                    y, mo = y + 1, self.months[0]
                else:
                    mo = self.months[i]
                d, h, mi, s = 1, 0, 0, 0
                continue
            day = self._next_day(y, mo, d)
            if day is None:
                mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
                continue
            if day != d:
                d, h, mi, s = day, 0, 0, 0
            hour = _next_in(self.hours, h)
            if hour is None:
                d, h, mi, s = d + 1, 0, 0, 0
                continue
            if hour != h:
                h, mi, s = hour, 0, 0
            minute = _next_in(self.minutes, mi)
            if minute is None:
                h, mi, s = h + 1, 0, 0
                continue
            if minute != mi:
                mi, s = minute, 0
            second = _next_in(self.seconds, s)
            if second is None:
                mi, s = mi + 1, 0
                continue
            return datetime(y, mo, d, h, mi, second)
        raise ScheduleError(f"cron expression {self.source!r} does not match any time")

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        """The first allowed day >= `day` in that month, or None."""
        last = calendar.monthrange(year, month)[1]
        if day > last:
            return None
        by_day: int | None = None
        if not self.any_day or self.any_weekday:
            found = _next_in(self.days, day)
            by_day = found if found is not None and found <= last else None
            if self.any_weekday:
                return by_day
        by_weekday: int | None = None
        weekday = (calendar.weekday(year, month, day) + 1) % 7
        for offset in range(7):
            if day + offset > last:
                break
            if (weekday + offset) % 7 in self.weekdays:
                by_weekday = day + offset
                break
        if self.any_day:
            return by_weekday
        candidates = [c for c in (by_day, by_weekday) if c is not None]
        return min(candidates) if candidates else None


def _next_in(values: tuple[int, ...], at_least: int) -> int | None:
    i = bisect.bisect_left(values, at_least)
    return values[i] if i < len(values) else None


_SHARED_VALUES: dict[Any, Any] = {}

_T = TypeVar("_T", tuple[int, ...], frozenset[int])


def _shared(values: _T) -> _T:
    """One object per distinct set of field values: thousands of expressions mostly repeat the same
    `*` fields, and each copy would cost hundreds of bytes per schedule."""
    shared: _T = _SHARED_VALUES.setdefault(values, values)
    return shared


@lru_cache(maxsize=4096)
def parse_cron(expression: str) -> CronExpression:
    """Parse a 5-field (`m h dom mon dow`) or 6-field (`s m h dom mon dow`) cron expression or a macro.
    Raises `ScheduleError` naming the field and the problem."""
    text = " ".join(expression.split())
    macro = MACROS.get(text.lower())
    fields_text = (macro or text).split(" ")
    if text.startswith("@") and macro is None:
        known = ", ".join([*MACROS, "@every <duration>"])
        raise ScheduleError(f"unknown macro {text!r} (known: {known})")
    if len(fields_text) == 5:
        fields_text = ["0", *fields_text]
    elif len(fields_text) != 6:
        raise ScheduleError(
            f"cron expression {text!r} has {len(fields_text)} fields; expected 5 (minute hour day-of-month "
            "month day-of-week) or 6 (a leading seconds field)"
        )
    parsed: list[tuple[frozenset[int], bool]] = []
    for field_text, spec in zip(fields_text, (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY), strict=True):
        try:
            parsed.append(_parse_field(field_text, spec))
        except ScheduleError as exc:
            raise ScheduleError(
                f"cron expression {text!r}: {spec.name} field {field_text!r}: {exc}"
            ) from None
    (seconds, _), (minutes, _), (hours, _), (days, any_day), (months, _), (weekdays, any_weekday) = parsed
    cron = CronExpression(
        source=text,
        seconds=_shared(tuple(sorted(seconds))),
        minutes=_shared(tuple(sorted(minutes))),
        hours=_shared(tuple(sorted(hours))),
        days=_shared(tuple(sorted(days))),
        months=_shared(tuple(sorted(months))),
        weekdays=_shared(weekdays),
        any_day=any_day,
        any_weekday=any_weekday,
    )
    if any_weekday and not any_day:
        longest = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in cron.months}
        if all(cron.days[0] > longest[m] for m in cron.months):
            names = ", ".join(_MONTH_NAMES[m - 1] for m in cron.months)
            raise ScheduleError(
                f"cron expression {text!r} never fires: day-of-month {fields_text[3]!r} "
                f"does not occur in {names}"
            )
    return cron


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def parse_every(text: str) -> timedelta:
    """The interval of `@every <duration>`: Go-style durations of h, m and s (`30s`, `1h30m`, `1.5h`),
    a whole number of seconds from 1s to 8784h (366 days)."""
    duration_text = text.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(duration_text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not duration_text or pos != len(duration_text):
        raise ScheduleError(
            f"@every duration {duration_text!r} is not a duration like 30s, 5m, 2h or 1h30m (units: h, m, s)"
        )
    if total != int(total):
        raise ScheduleError(f"@every duration {duration_text!r} is not a whole number of seconds")
    interval = timedelta(seconds=int(total))
    if interval < ONE_SECOND:
        raise ScheduleError(f"@every duration {duration_text!r} must be at least 1s")
    if interval > MAX_EVERY:
        raise ScheduleError(f"@every duration {duration_text!r} must be at most 8784h (366 days)")
    return interval


# --- time zones and timetables ----------------------------------------------------------------------


@cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


@lru_cache(maxsize=1024)
def parse_time_zone(name: str) -> ZoneInfo:
    """An IANA time zone by name (`Europe/Berlin`, `UTC`). Raises `ScheduleError`."""
    if name in ("localtime", "posixrules") or name not in _known_time_zones():
        raise ScheduleError(f"unknown time zone {name!r}: expected an IANA name such as UTC or Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ScheduleError(f"unknown time zone {name!r}: {exc}") from None


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
    """Check an expression without a time zone; returns it unchanged. Raises `ScheduleError`."""
    parse_timetable(expression)
    return expression


# --- the process-wide scheduler -----------------------------------------------------------------------


class ScheduledCall:
    """A pending wake-up in the scheduler. `cancel()` is O(1): the entry stays in the heap, ignored,
    until it reaches the top or the heap is compacted."""

    __slots__ = ("callback", "cancelled", "scheduler", "when")

    def __init__(self, scheduler: "Scheduler", when: float, callback: Callable[[], object]) -> None:
        self.scheduler = scheduler
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.scheduler._forget(self)


_default_schedulers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Scheduler]" = (
    weakref.WeakKeyDictionary()
)


class Scheduler:
    """One heap of wake-up times and one sleeper task for every schedule of the process.

    The sleeper computes how long to sleep from the wall clock (cron times are wall times) but sleeps on
    the event loop's monotonic timer, and re-reads the wall clock when it wakes: a clock stepped back
    makes it sleep again, a clock stepped forward (or a host that was suspended, which the monotonic
    clock does not count) is noticed within `recheck_interval`. With nothing due it sleeps until the
    earliest entry; with no entries at all the sleeper task ends, so an idle process spends no CPU.

    Callbacks run on the sleeper and must not block: they only compute the next time and start a task.
    `fire_slots` bounds how many job creations run at once across all schedules.
    """

    def __init__(
        self,
        *,
        clock: Clock = wall_clock,
        recheck_interval: float = 30.0,
        max_concurrent_fires: int = 256,
        batch_size: int = 512,
    ) -> None:
        self.clock = clock
        self.recheck_interval = recheck_interval
        self.max_concurrent_fires = max_concurrent_fires
        self.batch_size = batch_size
        self._heap: list[tuple[float, int, ScheduledCall]] = []
        self._sequence = itertools.count()
        self._live = 0
        self._cancelled = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleeper: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._wake_at: float | None = None
        self._fire_slots: asyncio.Semaphore | None = None
        self.closed = False

    @classmethod
    def for_running_loop(cls) -> "Scheduler":
        """The default scheduler of the running event loop, for triggers used without a source."""
        loop = asyncio.get_running_loop()
        scheduler = _default_schedulers.get(loop)
        if scheduler is None or scheduler.closed:
            scheduler = _default_schedulers[loop] = cls()
        return scheduler

    def __len__(self) -> int:
        """Live (not cancelled) entries."""
        return self._live

    @property
    def fire_slots(self) -> asyncio.Semaphore:
        if self._fire_slots is None:
            self._fire_slots = asyncio.Semaphore(self.max_concurrent_fires)
        return self._fire_slots

    def now(self) -> datetime:
        return self.clock()

    def call_at(self, when: datetime, callback: Callable[[], object]) -> ScheduledCall:
        """Run `callback` on the event loop once the wall clock reaches `when`. O(log n)."""
        if self.closed:
            raise RuntimeError("the scheduler is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None or self._sleeper is None or self._sleeper.done():
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("the scheduler is bound to another event loop")
        call = ScheduledCall(self, when.timestamp(), callback)
        heapq.heappush(self._heap, (call.when, next(self._sequence), call))
        self._live += 1
        if self._sleeper is None or self._sleeper.done():
            self._sleeper = loop.create_task(self._run(), name="portico schedule sleeper")
        elif self._wake_at is not None and call.when < self._wake_at:
            self._wake()
        return call

    async def close(self) -> None:
        self.closed = True
        sleeper, self._sleeper = self._sleeper, None
        self._heap.clear()
        self._live = self._cancelled = 0
        if sleeper is not None and not sleeper.done():
            sleeper.cancel()
            try:
                await sleeper
            except asyncio.CancelledError:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise

    def _forget(self, call: ScheduledCall) -> None:
        self._live -= 1
        self._cancelled += 1
        if self._live == 0:
            self._heap.clear()
            self._cancelled = 0
            self._wake()
        elif self._cancelled > 1024 and self._cancelled > self._live:
            self._heap[:] = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
                self._cancelled -= 1
            if not heap:
                return
            now = self.clock().timestamp()
            when = heap[0][0]
            if when > now:
                await self._sleep(loop, min(when - now, self.recheck_interval), when)
                continue
            for _ in range(self.batch_size):
                if not heap or heap[0][0] > now:
                    break
                _, _, call = heapq.heappop(heap)
                if call.cancelled:
                    self._cancelled -= 1
                    continue
                call.cancelled = True
                self._live -= 1
                try:
                    call.callback()
                except Exception:
                    logger.exception("schedule callback failed")
            else:
                await asyncio.sleep(0)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, delay: float, until: float) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._wakeup, self._wake_at = waiter, until
        handle = loop.call_at(loop.time() + delay, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._wakeup = self._wake_at = None


def _resolve(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)
