"""What a cron expression means: the parser shared by `portico validate`, the operator's spec check and
the running trigger, so "valid" and "fires" never disagree, and the matcher that finds the next wall time
an expression allows.

Fields are matched in naive wall time, one-second resolution; turning wall times into instants (time
zones, daylight saving) is the timetable's job. Also here: `@every` durations and IANA time-zone names,
the other two things a schedule spells out.
"""

import bisect
import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, available_timezones

ONE_SECOND = timedelta(seconds=1)
MAX_EVERY = timedelta(days=366)
SEARCH_YEARS = 30
"""How far ahead a cron search looks before giving up; a satisfiable expression (every accepted one)
always matches within 8 years (29 February in the next leap year, skipping 2100)."""


class ScheduleError(ValueError):
    """An expression or time zone that cannot be scheduled; the message says exactly what is wrong."""


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
