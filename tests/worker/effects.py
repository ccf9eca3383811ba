"""Handlers for the tests that run `portico worker` as a process. Each appends what it does, one JSON
line per event, to the file named by `PORTICO_TEST_EFFECTS` (O_APPEND: lines from several processes
never interleave), and the idempotent one writes its effect once per job id."""

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from portico.ports.job_creator import Job
from portico.ports.job_handler import handler


def record(job: Job, event: str) -> None:
    line = json.dumps(
        {"job": job.id, "event": event, "pid": os.getpid(), "attempt": job.attempts, "t": time.time()}
    )
    fd = os.open(os.environ["PORTICO_TEST_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@handler("work")
async def work(job: Job) -> None:
    """Sleeps `payload.seconds` (only `payload.first_attempt_seconds` on the first attempt, if set), then
    applies its effect idempotently: a marker file per job, created once whatever the attempts."""
    record(job, "start")
    seconds = job.payload.get("seconds", 0)
    if job.attempts == 1 and "first_attempt_seconds" in job.payload:
        seconds = job.payload["first_attempt_seconds"]
    await asyncio.sleep(seconds)
    marker = Path(os.environ["PORTICO_TEST_EFFECTS"]).with_name(f"effect-{job.id}")
    if not marker.exists():
        marker.write_text(str(os.getpid()))
    record(job, "end")


@handler("broken")
async def broken(job: Job) -> None:
    record(job, "start")
    raise RuntimeError("the downstream service is broken")


handlers = [work, broken]
