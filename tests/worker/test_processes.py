"""`portico worker` processes against the real queue service process: a worker killed with SIGKILL
mid-job (another one re-runs the job after the lease, and it is completed exactly once), two workers
sharing a queue (never the same job at the same time), a broken handler (retried with backoff until
the job is dead), and SIGTERM (running jobs finish)."""

import asyncio
import itertools
import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from portico.adapters.job_queue.http import HttpJobQueue
from portico.ports.job_creator import Job
from portico.testing.processes import worker_command
from tests.conftest import QueueServiceProcess
from tests.e2e.conftest import Process
from tests.worker.effects import events

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    return tmp_path / "effects" / "events.jsonl"


@pytest.fixture
def start_worker(
    queue_service_process: QueueServiceProcess, effects: Path, tmp_path: Path
) -> Iterator[Callable[..., Process]]:
    effects.parent.mkdir()
    started: list[Process] = []

    def start(*extra: str, concurrency: int = 1, lease_seconds: float = 30.0) -> Process:
        process = Process(
            worker_command(
                queue_url=queue_service_process.url,
                handlers="tests.worker.effects:handlers",
                queues=("jobs",),
                concurrency=concurrency,
                lease_seconds=lease_seconds,
                extra=("--id", f"worker-{len(started)}", "--poll-interval", "0.2", *extra),
            ),
            tmp_path / f"worker-{len(started)}.log",
            env={
                "PORTICO_TEST_EFFECTS": str(effects),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            },
        ).start()
        started.append(process)
        process.wait_for_log("worker metrics listening on")
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


@pytest.fixture
async def queue(queue_service_process: QueueServiceProcess) -> AsyncIterator[HttpJobQueue]:
    async with HttpJobQueue(queue_service_process.url) as job_queue:
        yield job_queue


async def wait_until(queue: HttpJobQueue, job_id: str, *statuses: str, timeout: float = 60) -> Job:
    async def poll() -> Job:
        while True:
            job = await queue.get(job_id)
            if job is not None and job.status in statuses:
                return job
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def test_a_killed_workers_job_is_rerun_by_another_and_completed_once(
    queue: HttpJobQueue, start_worker: Callable[..., Process], effects: Path
) -> None:
    job = await queue.enqueue("work", {"first_attempt_seconds": 60, "seconds": 0.1}, queue_name="jobs")
    first = start_worker(lease_seconds=3)
    await wait_until(queue, job.id, "running")
    while not any(e["event"] == "start" for e in events(effects)):
        await asyncio.sleep(0.05)
    assert first.proc is not None
    first.proc.kill()  # SIGKILL: no shutdown code, the lease is simply never renewed
    first.proc.wait()

    start_worker(lease_seconds=3)
    done = await wait_until(queue, job.id, "completed", "dead", "failed", timeout=30)
    assert (done.status, done.attempts, done.worker) == ("completed", 2, "worker-1")
    log = events(effects)
    assert [(e["event"], e["attempt"]) for e in log] == [("start", 1), ("start", 2), ("end", 2)]
    assert log[0]["pid"] != log[1]["pid"]
    assert [p.name for p in effects.parent.glob("effect-*")] == [f"effect-{job.id}"], "one effect"


async def test_two_workers_on_one_queue_never_run_the_same_job_at_once(
    queue: HttpJobQueue, start_worker: Callable[..., Process], effects: Path
) -> None:
    start_worker(concurrency=8, lease_seconds=3)
    start_worker(concurrency=8, lease_seconds=3)
    # Jobs that outlive their lease (renewed, never handed to the other worker), then short ones.
    jobs = list(
        await asyncio.gather(
            *(queue.enqueue("work", {"seconds": 7}, queue_name="jobs", priority=1) for _ in range(4))
        )
    )
    jobs += await asyncio.gather(
        *(queue.enqueue("work", {"seconds": 0.05}, queue_name="jobs") for _ in range(150))
    )
    for job in jobs:
        done = await wait_until(queue, job.id, "completed", "dead", "failed", timeout=90)
        assert (done.status, done.attempts) == ("completed", 1)

    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events(effects):
        runs[event["job"]].append(event)
    assert set(runs) == {job.id for job in jobs}
    for job_id, log in runs.items():
        assert [e["event"] for e in log] == ["start", "end"], (job_id, log)
    pids = {e["pid"] for log in runs.values() for e in log}
    assert len(pids) == 2, "both workers took jobs"


async def test_a_broken_handler_is_retried_with_backoff_until_dead(
    queue: HttpJobQueue, start_worker: Callable[..., Process], effects: Path
) -> None:
    job = await queue.enqueue("broken", {}, queue_name="jobs", max_attempts=3)
    start_worker("--retry-backoff-base", "0.6")
    dead = await wait_until(queue, job.id, "dead", "failed", "completed", timeout=30)
    assert (dead.status, dead.attempts) == ("dead", 3)
    assert dead.last_error == "RuntimeError: the downstream service is broken"
    starts = [e["t"] for e in events(effects)]
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Equal jitter: at least half of 0.6 s, then of 1.2 s (the queue service enforces run_at).
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps


async def test_sigterm_lets_the_running_job_finish(
    queue: HttpJobQueue, start_worker: Callable[..., Process], effects: Path
) -> None:
    job = await queue.enqueue("work", {"seconds": 2}, queue_name="jobs")
    worker = start_worker("--shutdown-timeout", "20")
    probes = worker.wait_for_log(r"worker metrics listening on (http://\S+)").group(1)
    await wait_until(queue, job.id, "running")
    while not events(effects):
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(probes + path) as response:
                assert response.status == 200, path
        async with http.get(probes + "/metrics") as response:
            assert "portico_worker_jobs_in_flight 1.0" in await response.text()
    assert worker.stop(signal.SIGTERM, timeout=30) == 0
    done = await queue.get(job.id)
    assert done is not None and (done.status, done.attempts) == ("completed", 1)
    assert '"outcome": "completed"' in worker.log() and done.id in worker.log()
