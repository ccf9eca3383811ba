"""Which runs of a schedule are due, late, missed or caught up: pure functions of its timetable, the
last run handled, the clock and the spec's policies. No I/O and no event loop, so every rule of
docs/schedule.md can be checked with plain datetimes; the trigger asks, then acts.

A run is identified by its scheduled time. Its job carries the idempotency key
`<schedule key>:<scheduled time, RFC 3339 UTC>`, so re-sending a run is harmless and every rule below
may err towards sending.
"""

import hashlib
import random
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from portico.domain.timestamps import rfc3339
from portico.ports.job_creator import Job
from portico.sources.schedule.timetable import Timetable

CatchUpPolicy = Literal["None", "Latest", "All"]
ConcurrencyPolicy = Literal["Allow", "Forbid"]

CATCH_UP_ALL_LIMIT = 100
"""`catchUp: All` fires at most this many missed runs (the most recent); older ones are counted missed."""
CATCH_UP_LIMITS: dict[CatchUpPolicy, int] = {"None": 0, "Latest": 1, "All": CATCH_UP_ALL_LIMIT}
MISSED_COUNT_LIMIT = 10_000
"""Missed runs are counted one by one up to this many; beyond, the count and the Event say "at least"."""
RETRY_INITIAL_DELAY = 0.5
RETRY_MAX_DELAY = 30.0

Step = Literal["fire", "late", "behind"]
"""What to do with a run the scheduler says is due: `fire` it; it is `late` (past its deadline: count it
missed); or the process is `behind` (a later run is also due: handle them like a restart would)."""


@dataclass(frozen=True, slots=True)
class CatchUp:
    """The runs scheduled after the last one handled and before the first one still to come."""

    fire: list[datetime]
    """The runs to create now, oldest first (per catchUp and within the deadline)."""
    missed: int
    """The others, counted up to `MISSED_COUNT_LIMIT`."""
    capped: bool
    """True when there were at least `missed` (the count stopped at the limit)."""
    first: datetime
    """The first of them, for the Event."""
    policy: CatchUpPolicy

    def describe(self, pending: datetime, deadline_seconds: int | None) -> str:
        """The Event message for the missed runs."""
        what = f"at least {self.missed}" if self.capped else str(self.missed)
        fired = (
            f"; fired {len(self.fire)} (catchUp: {self.policy})"
            if self.fire
            else f" (catchUp: {self.policy})"
        )
        deadline = f", startingDeadlineSeconds: {deadline_seconds}" if deadline_seconds else ""
        return (
            f"{what} run(s) scheduled from {rfc3339(self.first)} to before {rfc3339(pending)} were not "
            f"created while the trigger was not running on time{fired}{deadline}."
        )


def as_utc(value: datetime | str | None) -> datetime | None:
    """A time as given by a caller or read back from status (RFC 3339, `Z` or an offset; naive means
    UTC). Raises `ValueError` for text that is not a time."""
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run_key(schedule_key: str, scheduled: datetime) -> str:
    """The idempotency key of the run of `scheduled`."""
    return f"{schedule_key}:{rfc3339(scheduled)}"


class RunTimes:
    """The times of one schedule of one trigger: its timetable, its jitter and its deadline.

    Slotted, and subclassed by the trigger's per-schedule state rather than held by it, so that ten
    thousand idle schedules cost one object each.
    """

    __slots__ = ("deadline", "jitter", "key", "timetable")

    def __init__(self, timetable: Timetable, key: str, jitter: timedelta, deadline: timedelta | None) -> None:
        self.timetable = timetable
        self.key = key
        """Identifies the schedule in idempotency keys and in the jitter: the trigger's key, plus the
        schedule's name (or index) when a trigger has several."""
        self.jitter = jitter
        self.deadline = deadline

    def after(self, moment: datetime) -> datetime:
        return self.timetable.next_after(moment)

    def due(self, scheduled: datetime, successor: datetime | None = None) -> datetime:
        """When the run of `scheduled` fires: its scheduled time plus a delay derived from the schedule key
        and the scheduled time (so a restart does not move it), shorter than the gap to the next run
        (`successor`, computed when not given) so runs keep their order."""
        if not self.jitter:
            return scheduled
        if successor is None:
            successor = self.after(scheduled)
        digest = hashlib.blake2b(f"{self.key}|{rfc3339(scheduled)}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
        span_ms = min(self.jitter, successor - scheduled) // timedelta(milliseconds=1)
        return scheduled + timedelta(milliseconds=int(fraction * span_ms))

    def first_pending(self, now: datetime, anchor: datetime | None) -> tuple[datetime, datetime]:
        """The first scheduled time after `anchor` (the last run handled) whose jittered fire time is not
        yet past, and the scheduled time after it."""
        start = now - self.jitter - timedelta(seconds=1)
        if anchor is not None and anchor > start:
            start = anchor
        scheduled = self.after(start)
        while True:
            successor = self.after(scheduled)
            if self.due(scheduled, successor) >= now:
                return scheduled, successor
            scheduled = successor

    def step(self, scheduled: datetime, successor: datetime, now: datetime) -> Step:
        """What to do with the run of `scheduled` when the scheduler wakes for it at `now`."""
        if self.due(successor) < now:
            # More than one run came due at once: the process was not running on time (a blocked event
            # loop, a suspended host, a clock stepped forward).
            return "behind"
        if self.deadline is not None and now - scheduled > self.deadline:
            return "late"
        return "fire"

    def catch_up(
        self, anchor: datetime, pending: datetime, now: datetime, policy: CatchUpPolicy
    ) -> CatchUp | None:
        """The runs scheduled after `anchor` and before `pending`: which to fire per `policy` (within the
        deadline) and how many are missed; None when there are none."""
        eligible_after = anchor
        if self.deadline is not None:
            eligible_after = max(anchor, now - self.deadline - timedelta(microseconds=1))
        chosen = self.latest_runs(eligible_after, pending, CATCH_UP_LIMITS[policy])
        total, capped = self.count_runs(anchor, pending)
        if total == 0:
            return None
        return CatchUp(
            fire=chosen, missed=total - len(chosen), capped=capped, first=self.after(anchor), policy=policy
        )

    def latest_runs(self, after: datetime, before: datetime, limit: int) -> list[datetime]:
        """Up to `limit` most recent scheduled times in (after, before), oldest first. Searches windows
        that double back from `before`, so the cost follows the number of runs returned, not the length
        of the outage."""
        if limit == 0 or after >= before:
            return []
        span = timedelta(seconds=1)
        while True:
            start = max(after, before - span)
            found: deque[datetime] = deque(maxlen=limit)
            scheduled = self.after(start)
            count = 0
            while scheduled < before:
                found.append(scheduled)
                count += 1
                scheduled = self.after(scheduled)
            if count >= limit or start == after:
                return list(found)
            span *= 2

    def count_runs(self, after: datetime, before: datetime) -> tuple[int, bool]:
        """How many scheduled times lie in (after, before), and whether counting stopped at
        `MISSED_COUNT_LIMIT` (a years-long outage of a every-second schedule is not walked through)."""
        count = 0
        scheduled = self.after(after)
        while scheduled < before:
            count += 1
            if count >= MISSED_COUNT_LIMIT:
                return count, True
            scheduled = self.after(scheduled)
        return count, False

    def give_up_at(self, scheduled: datetime, horizon: datetime) -> datetime:
        """Until when creating the run of `scheduled` is retried: the next run (`horizon`) or the
        deadline, whichever comes first."""
        if self.deadline is None:
            return horizon
        return min(horizon, scheduled + self.deadline)


def retry_delay(attempt: int) -> float:
    """Seconds before retry `attempt` (0-based) of a failed creation: exponential, capped, with jitter so
    that the runs of many schedules that failed together do not retry together."""
    backoff: float = min(RETRY_MAX_DELAY, RETRY_INITIAL_DELAY * 2**attempt)
    return backoff * random.uniform(0.5, 1.0)


def forbids(previous: Job | None, key: str) -> bool:
    """Whether `concurrencyPolicy: Forbid` skips the run with idempotency key `key`: the previous job is
    still pending or running, and is not this very run (a re-send after a restart is not a second run)."""
    return previous is not None and previous.status.is_active and previous.idempotency_key != key


def unrecorded(scheduled: datetime, started_at: datetime | None, recorded: datetime | None) -> bool:
    """Whether a run the queue service already had was accepted by an earlier instance that could not
    record it (killed before its status was written): due before this instance started, after the last
    run it was told about. Its job then counts here, or nobody counts it."""
    return started_at is not None and scheduled < started_at and (recorded is None or scheduled > recorded)
