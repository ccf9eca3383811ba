"""Jobs/s through `Worker`: claim → no-op handler → complete, against a bare loop on the HTTP API.

For each concurrency (1, 16, 64) the same number of jobs goes through, in the same run and against the
same `portico queue-service` process (SQLite on disk, WAL):

- the floor: `concurrency` tasks, each looping `POST /v1/queues/{q}/claim` (limit 1) then
  `POST /v1/jobs/{id}/complete` with its `lease_id`, on one aiohttp session: the least any client of
  the HTTP API must do per job;
- the worker: `Worker(HttpJobQueue(...), [no-op handler], concurrency=...)`, which also keeps leases,
  counts metrics and decides outcomes (it claims as many jobs per request as it has free slots).

Floor and worker alternate over rounds (F W, W F, ...) so a change in background load affects both
alike; medians are reported. Prints one JSON line per figure; the goals are at least 80 % of the floor
and at least 2,000 jobs/s at concurrency 64.

    .venv/bin/python bench/worker.py [--jobs 6000] [--rounds 3] [--concurrency 1 16 64]
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from portico.adapters.job_queue.http import HttpJobQueue
from portico.ports.job_creator import Job
from portico.ports.job_handler import handler
from portico.testing.processes import running_queue_service
from portico.worker.worker import Worker

BENCH = "worker"
GOAL_RATIO = 0.8
GOAL_JOBS_PER_S_AT_64 = 2000.0
LEASE_SECONDS = 60


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": BENCH, "metric": metric, "value": round(value, 2), **extra}), flush=True)


async def fill(queue: HttpJobQueue, queue_name: str, jobs: int) -> None:
    """Enqueue `jobs` no-op jobs (not measured)."""
    semaphore = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with semaphore:
            await queue.enqueue("bench.noop", {}, queue_name=queue_name, idempotency_key=f"{queue_name}-{i}")

    await asyncio.gather(*(one(i) for i in range(jobs)))


async def floor(url: str, queue_name: str, jobs: int, concurrency: int) -> float:
    """The bare claim/complete loop; jobs/s."""
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency + 8)
    async with aiohttp.ClientSession(connector=connector) as http:
        claim_url = f"{url}/v1/queues/{queue_name}/claim"
        claim_body = {"worker": "floor", "lease_seconds": LEASE_SECONDS, "limit": 1}

        async def loop() -> None:
            nonlocal done
            while done < jobs:
                async with http.post(claim_url, json=claim_body) as response:
                    claimed = (await response.json())["jobs"]
                if not claimed:
                    await asyncio.sleep(0.01)
                    continue
                job = claimed[0]
                async with http.post(
                    f"{url}/v1/jobs/{job['id']}/complete", json={"lease_id": job["lease_id"]}
                ) as response:
                    assert response.status == 200, await response.text()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return jobs / (time.perf_counter() - started)


class CountingQueue(HttpJobQueue):
    """Counts completions, so the run ends when the last job is completed."""

    completed = 0

    async def complete(self, job_id: str, *, lease_id: str) -> Job:
        job = await super().complete(job_id, lease_id=lease_id)
        self.completed += 1
        return job


@handler("bench.noop")
async def noop(job: Job) -> None:
    return None


async def through_worker(url: str, queue_name: str, jobs: int, concurrency: int) -> float:
    queue = CountingQueue(url, max_connections=concurrency + 8)
    worker = Worker(
        queue,
        [noop],
        queues=[queue_name],
        concurrency=concurrency,
        lease_seconds=LEASE_SECONDS,
        poll_interval=0.05,
    )
    started = time.perf_counter()
    run = asyncio.create_task(worker.run())
    while queue.completed < jobs:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.stop()
    await run
    await queue.close()
    return jobs / elapsed


async def bench(url: str, jobs: int, rounds: int, concurrencies: list[int]) -> bool:
    ok = True
    async with HttpJobQueue(url) as queue:
        for concurrency in concurrencies:
            count = jobs if concurrency > 1 else max(500, jobs // 10)
            floors: list[float] = []
            workers: list[float] = []
            for round_ in range(rounds):
                order = ("floor", "worker") if round_ % 2 == 0 else ("worker", "floor")
                for kind in order:
                    name = f"bench-{kind}-c{concurrency}-r{round_}"
                    await fill(queue, name, count)
                    if kind == "floor":
                        floors.append(await floor(url, name, count, concurrency))
                    else:
                        workers.append(await through_worker(url, name, count, concurrency))
            floor_rate = statistics.median(floors)
            worker_rate = statistics.median(workers)
            ratio = worker_rate / floor_rate
            goal_met = ratio >= GOAL_RATIO and (concurrency != 64 or worker_rate >= GOAL_JOBS_PER_S_AT_64)
            ok = ok and goal_met
            common = {"concurrency": concurrency, "jobs": count, "rounds": rounds}
            emit("floor_jobs_per_s", floor_rate, unit="jobs/s", **common)
            emit("worker_jobs_per_s", worker_rate, unit="jobs/s", **common)
            emit(
                "worker_vs_floor",
                ratio,
                unit="ratio",
                goal=GOAL_RATIO,
                **({"goal_jobs_per_s": GOAL_JOBS_PER_S_AT_64} if concurrency == 64 else {}),
                goal_met=goal_met,
                **common,
            )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=6000, help="jobs per measurement (a tenth at concurrency 1)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_queue_service(Path(tmp) / "queue.db") as url:
        asyncio.run(bench(url, args.jobs, args.rounds, args.concurrency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
