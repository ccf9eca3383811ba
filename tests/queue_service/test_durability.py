"""Every acknowledged job survives `kill -9` of the service, and its idempotency key still holds after the
restart."""

import asyncio
import sqlite3

import aiohttp

from portico.adapters.job_creator.http import HttpJobCreator
from portico.ports.job_creator import JobCreationError
from tests.conftest import QueueServiceProcess

ACKNOWLEDGED_BEFORE_KILL = 400
CALLERS = 32


async def test_acknowledged_jobs_survive_kill_9(queue_service_process: QueueServiceProcess) -> None:
    acknowledged: dict[str, str] = {}
    enough = asyncio.Event()
    numbers = iter(range(100_000))
    creator = HttpJobCreator(
        queue_service_process.url, deadline=0.5, backoff_base=0.05, max_connections=CALLERS
    )

    async def caller() -> None:
        for n in numbers:
            key = f"job-{n}"
            try:
                job = await creator.create_job("durable.test", {"n": n}, idempotency_key=key)
            except JobCreationError:
                return
            acknowledged[key] = job.id
            if len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL:
                enough.set()

    async with creator:
        callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
        await asyncio.wait_for(enough.wait(), timeout=120)
        queue_service_process.kill()
        await asyncio.wait_for(asyncio.gather(*callers), timeout=60)

    with sqlite3.connect(queue_service_process.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    queue_service_process.start()
    stored: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        cursor = None
        while True:
            params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            async with http.get(f"{queue_service_process.url}/v1/jobs", params=params) as response:
                page = await response.json()
            stored.update((job["idempotency_key"], job["id"]) for job in page["jobs"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    missing = {key for key in acknowledged if stored.get(key) != acknowledged[key]}
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged jobs were lost"

    key, job_id = next(iter(acknowledged.items()))
    async with HttpJobCreator(queue_service_process.url) as creator:
        again = await creator.create_job("durable.test", {}, idempotency_key=key)
    assert again.id == job_id


async def test_sigterm_commits_and_exits_cleanly(queue_service_process: QueueServiceProcess) -> None:
    async with HttpJobCreator(queue_service_process.url) as creator:
        jobs = await asyncio.gather(
            *(creator.create_job("t", {}, idempotency_key=f"k{n}") for n in range(50))
        )
    queue_service_process.stop()
    assert queue_service_process.proc is not None
    assert queue_service_process.proc.returncode == 0
    with sqlite3.connect(queue_service_process.db_path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM jobs")}
    assert stored == {job.id for job in jobs}
