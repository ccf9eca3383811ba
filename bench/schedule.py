"""Schedule trigger: fire lateness under load, many simultaneous fires, and what idle schedules cost.

(a) lateness (job handed to the creator minus scheduled time) p50/p99 of one every-second schedule while
    10,000 other schedules are registered in the same process-wide scheduler;
(b) 10,000 schedules due in the same second: seconds from that second until every job was handed to an
    in-process creator, and until every job was accepted by the reference queue service
    (`portico queue-service`, SQLite on disk, in its own process) through `HttpJobCreator`;
(c) CPU used by the process while 10,000 schedules wait (percent of one core over --idle-seconds), and RSS
    per registered schedule.

The baseline, measured in the same run, is the design the scheduler replaces: one asyncio task per
schedule, sleeping until its next croniter time. Each part runs in a fresh process so that memory figures
do not inherit another part's heap. Goals: lateness p99 <= 10 ms; 10,000 fires in <= 1 s in-process and
<= 8 s end to end; idle CPU < 1 %; <= 5 KB per schedule. One JSON line per figure.

    .venv/bin/python bench/schedule.py [--schedules 10000] [--lateness-seconds 60] [--idle-seconds 30]
                                       [--lead-seconds 4]
"""

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import Job, JobCreator
from portico.sources.schedule import ScheduleConfig, Scheduler, ScheduleTrigger
from portico.testing.processes import running_queue_service

BENCH = "schedule"
GOAL_LATENESS_P99_MS = 10.0
GOAL_IN_PROCESS_S = 1.0
GOAL_END_TO_END_S = 8.0
GOAL_IDLE_CPU_PERCENT = 1.0
GOAL_BYTES_PER_SCHEDULE = 5 * 1024


# --- creators that measure --------------------------------------------------------------------------


class MeasuringCreator(JobCreator):
    """Hands jobs to an inner creator; records lateness and signals when `expected` jobs were handed
    over (`handed`) and accepted (`accepted`)."""

    def __init__(self, inner: JobCreator, expected: int, *, measure_type: str | None = None) -> None:
        self.inner = inner
        self.expected = expected
        self.measure_type = measure_type
        self.handed = 0
        self.accepted = 0
        self.lateness_ms: list[float] = []
        self.all_handed = asyncio.Event()
        self.all_accepted = asyncio.Event()
        self.handed_at = self.accepted_at = 0.0

    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        metadata, idempotency_key = self.with_context(metadata, idempotency_key)
        now = time.time()
        if job_type == self.measure_type and metadata:
            scheduled = datetime.fromisoformat(metadata["scheduled_time"]).timestamp()
            self.lateness_ms.append((now - scheduled) * 1000)
        self.handed += 1
        if self.handed == self.expected:
            self.handed_at = now
            self.all_handed.set()
        job = await self.inner.create_job(job_type, payload, queue_name, priority, metadata, idempotency_key)
        self.accepted += 1
        if self.accepted == self.expected:
            self.accepted_at = time.time()
            self.all_accepted.set()
        return job

    async def get_job(self, job_id: str) -> Job | None:
        return await self.inner.get_job(job_id)

    async def close(self) -> None:
        await self.inner.close()


# --- helpers ------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def daily_crons(count: int, *, avoid_from: datetime, avoid_seconds: float, seed: int = 1) -> list[str]:
    """`count` distinct daily six-field crons (second minute hour), none due in the avoided window."""
    rng = random.Random(seed)
    start = avoid_from.hour * 3600 + avoid_from.minute * 60 + avoid_from.second - 60
    end = start + avoid_seconds + 180
    chosen: set[int] = set()
    while len(chosen) < count:
        second_of_day = rng.randrange(86400)
        shifted = (second_of_day - start) % 86400
        if shifted > end - start:
            chosen.add(second_of_day)
    return [f"{s % 60} {s // 60 % 60} {s // 3600} * * *" for s in sorted(chosen)]


def cron_at(moment: datetime) -> str:
    return f"{moment.second} {moment.minute} {moment.hour} * * *"


def make_triggers(
    creator: JobCreator, crons: list[str], scheduler: Scheduler, prefix: str
) -> list[ScheduleTrigger]:
    return [
        ScheduleTrigger(
            creator,
            [ScheduleConfig(cron=cron, job_type="bench.job", payload={"n": n}, queue_name="bench")],
            ref=TriggerRef(name=f"{prefix}-{n}", namespace="bench", uid=f"{prefix}-uid-{n}"),
            scheduler=scheduler,
        )
        for n, cron in enumerate(crons)
    ]


async def start_all(triggers: list[ScheduleTrigger]) -> None:
    for trigger in triggers:
        await trigger.start()


async def stop_all(triggers: list[ScheduleTrigger]) -> None:
    for trigger in triggers:
        await trigger.stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class BaselineTasks:
    """The design the scheduler replaces: one task per schedule sleeping until its next croniter time."""

    def __init__(self, creator: JobCreator, crons: list[str]) -> None:
        self.creator = creator
        self.crons = crons
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(n, cron)) for n, cron in enumerate(self.crons)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _run(self, n: int, cron: str) -> None:
        schedule = croniter(cron, datetime.now(UTC), second_at_beginning=True)
        while True:
            scheduled = schedule.get_next(datetime)
            await asyncio.sleep(max(0.0, scheduled.timestamp() - time.time()))
            await self.creator.create_job(
                "bench.job",
                {"n": n},
                queue_name="bench",
                metadata={"scheduled_time": scheduled.strftime("%Y-%m-%dT%H:%M:%SZ")},
                idempotency_key=f"baseline-{n}:{scheduled.isoformat()}",
            )


# --- the parts, each in its own process ----------------------------------------------------------------


async def part_lateness(schedules: int, seconds: float) -> dict[str, Any]:
    scheduler = Scheduler()
    creator = MeasuringCreator(InMemoryJobCreator(), expected=-1, measure_type="bench.measured")
    others = make_triggers(
        creator,
        daily_crons(schedules, avoid_from=datetime.now(UTC), avoid_seconds=seconds + 30),
        scheduler,
        "other",
    )
    await start_all(others)
    measured = ScheduleTrigger(
        creator,
        [ScheduleConfig(cron="* * * * * *", job_type="bench.measured")],
        ref=TriggerRef(name="measured", namespace="bench", uid="measured-uid"),
        scheduler=scheduler,
    )
    await measured.start()
    await asyncio.sleep(seconds)
    await measured.stop()
    registered = len(scheduler)
    await stop_all(others)
    await scheduler.close()
    samples = creator.lateness_ms[1:]  # the first fire may be a run due at start
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples),
        "samples": len(samples),
        "registered": registered,
    }


async def simultaneous(
    creator: MeasuringCreator, schedules: int, *, baseline: bool, lead: float
) -> dict[str, Any]:
    """`schedules` schedules all due at one second `lead` seconds ahead (time enough to set them all up,
    or a run would be missed); seconds from it until all jobs were handed over and accepted."""
    due = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    crons = [cron_at(due)] * schedules
    scheduler = Scheduler()
    started = time.perf_counter()
    if baseline:
        tasks = BaselineTasks(creator, crons)
        tasks.start()
    else:
        triggers = make_triggers(creator, crons, scheduler, "due")
        await start_all(triggers)
    setup = time.perf_counter() - started
    await asyncio.wait_for(creator.all_accepted.wait(), timeout=120)
    figures = {
        "handed_s": creator.handed_at - due.timestamp(),
        "accepted_s": creator.accepted_at - due.timestamp(),
        "setup_s": setup,
        "jobs": creator.accepted,
    }
    if baseline:
        await tasks.stop()
    else:
        await stop_all(triggers)
    await scheduler.close()
    return figures


async def part_burst(schedules: int, baseline: bool, lead: float) -> dict[str, Any]:
    creator = MeasuringCreator(InMemoryJobCreator(), expected=schedules)
    return await simultaneous(creator, schedules, baseline=baseline, lead=lead)


async def part_end_to_end(schedules: int, url: str, lead: float) -> dict[str, Any]:
    from portico.adapters.job_creator.http import HttpJobCreator

    inner = HttpJobCreator(url, max_connections=64, deadline=60)
    creator = MeasuringCreator(inner, expected=schedules)
    try:
        return await simultaneous(creator, schedules, baseline=False, lead=lead)
    finally:
        await creator.close()


async def part_idle(schedules: int, seconds: float, baseline: bool) -> dict[str, Any]:
    creator = InMemoryJobCreator()
    crons = daily_crons(schedules, avoid_from=datetime.now(UTC), avoid_seconds=seconds + 30, seed=2)
    gc.collect()
    await asyncio.sleep(0.2)
    before = rss_bytes()
    scheduler = Scheduler()
    if baseline:
        tasks = BaselineTasks(creator, crons)
        tasks.start()
        await asyncio.sleep(0.5)  # let every task compute its first time and go to sleep
    else:
        triggers = make_triggers(creator, crons, scheduler, "idle")
        await start_all(triggers)
    del crons
    gc.collect()
    await asyncio.sleep(0.2)
    after = rss_bytes()
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    if baseline:
        await tasks.stop()
    else:
        await stop_all(triggers)
    await scheduler.close()
    return {
        "cpu_percent": cpu / wall * 100,
        "cpu_seconds": cpu,
        "bytes_per_schedule": (after - before) / schedules,
        "jobs_during_idle": len(creator.jobs),
    }


# --- orchestration --------------------------------------------------------------------------------------


def run_part(args: argparse.Namespace, part: str, *extra: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--schedules",
        str(args.schedules),
        "--lateness-seconds",
        str(args.lateness_seconds),
        "--idle-seconds",
        str(args.idle_seconds),
        "--lead-seconds",
        str(args.lead_seconds),
        *extra,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def emit(metric: str, value: float | None, **extra: Any) -> None:
    line = {"bench": BENCH, "metric": metric, "value": None if value is None else round(value, 4), **extra}
    print(json.dumps(line), flush=True)


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline else None


def queue_service_available() -> str | None:
    """Why the end-to-end part cannot run, or None."""
    for module in ("portico.adapters.job_creator.http", "portico.queue_service.server"):
        if importlib.util.find_spec(module) is None:
            return f"{module} does not exist yet"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--lateness-seconds", type=float, default=60.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument(
        "--lead-seconds",
        type=float,
        default=4.0,
        help="how far ahead the simultaneous runs are due; raise it on a busy machine, where setting up "
        "every schedule (or every baseline task) takes longer",
    )
    parser.add_argument("--skip-end-to-end", action="store_true", help="do not start the queue service")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.schedules

    if args.part:
        coroutine = {
            "lateness": lambda: part_lateness(n, args.lateness_seconds),
            "burst": lambda: part_burst(n, baseline=False, lead=args.lead_seconds),
            "burst-baseline": lambda: part_burst(n, baseline=True, lead=args.lead_seconds),
            "end-to-end": lambda: part_end_to_end(n, args.url, args.lead_seconds),
            "idle": lambda: part_idle(n, args.idle_seconds, baseline=False),
            "idle-baseline": lambda: part_idle(n, args.idle_seconds, baseline=True),
        }[args.part]()
        print(json.dumps(asyncio.run(coroutine)), flush=True)
        return 0

    lateness = run_part(args, "lateness")
    emit(
        "fire_lateness_p50",
        lateness["p50_ms"],
        unit="ms",
        registered=lateness["registered"],
        samples=lateness["samples"],
    )
    emit(
        "fire_lateness_p99",
        lateness["p99_ms"],
        unit="ms",
        goal=GOAL_LATENESS_P99_MS,
        meets_goal=lateness["p99_ms"] <= GOAL_LATENESS_P99_MS,
        max_ms=round(lateness["max_ms"], 3),
        registered=lateness["registered"],
        samples=lateness["samples"],
    )

    burst = run_part(args, "burst")
    burst_baseline = run_part(args, "burst-baseline")
    emit(
        "simultaneous_fires_in_process",
        burst["handed_s"],
        unit="s",
        schedules=n,
        goal=GOAL_IN_PROCESS_S,
        meets_goal=burst["handed_s"] <= GOAL_IN_PROCESS_S,
        baseline_task_per_schedule=round(burst_baseline["handed_s"], 4),
        ratio_to_baseline=ratio(burst["handed_s"], burst_baseline["handed_s"]),
        jobs=burst["jobs"],
    )

    skipped = "--skip-end-to-end given" if args.skip_end_to_end else queue_service_available()
    if skipped:
        emit(
            "simultaneous_fires_end_to_end",
            None,
            unit="s",
            schedules=n,
            goal=GOAL_END_TO_END_S,
            skipped=True,
            reason=skipped,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp:
            db = Path(tmp) / "queue.db"
            with running_queue_service(db) as url:
                end_to_end = run_part(args, "end-to-end", "--url", url)
            with sqlite3.connect(db) as conn:
                stored = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        emit(
            "simultaneous_fires_end_to_end",
            end_to_end["accepted_s"],
            unit="s",
            schedules=n,
            goal=GOAL_END_TO_END_S,
            meets_goal=end_to_end["accepted_s"] <= GOAL_END_TO_END_S and stored == n,
            handed_s=round(end_to_end["handed_s"], 4),
            stored=stored,
        )

    idle = run_part(args, "idle")
    idle_baseline = run_part(args, "idle-baseline")
    emit(
        "idle_cpu",
        idle["cpu_percent"],
        unit="% of one core",
        seconds=args.idle_seconds,
        registered=n,
        goal=GOAL_IDLE_CPU_PERCENT,
        meets_goal=idle["cpu_percent"] < GOAL_IDLE_CPU_PERCENT,
        baseline_task_per_schedule=round(idle_baseline["cpu_percent"], 4),
        ratio_to_baseline=ratio(idle["cpu_percent"], idle_baseline["cpu_percent"]),
    )
    emit(
        "rss_per_schedule",
        idle["bytes_per_schedule"] / 1024,
        unit="KiB",
        registered=n,
        goal=GOAL_BYTES_PER_SCHEDULE / 1024,
        meets_goal=idle["bytes_per_schedule"] <= GOAL_BYTES_PER_SCHEDULE,
        baseline_task_per_schedule=round(idle_baseline["bytes_per_schedule"] / 1024, 3),
        ratio_to_baseline=ratio(idle["bytes_per_schedule"], idle_baseline["bytes_per_schedule"]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
