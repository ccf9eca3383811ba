"""Durable job creation through the reference queue service, against the HTTP floor.

`HttpJobCreator` at concurrency 64 posts 20,000 jobs to `portico queue-service` (SQLite on disk, WAL, each
201 only after its commit), and the same load to a bare aiohttp handler that answers 201 without storing
anything: the most the client and HTTP stack can do on this machine. Each server runs in its own process,
so client and server do not share an event loop. The two alternate over a few rounds (D F, F D, D F) so
that a change in background load affects both alike; the medians are reported. Prints one JSON line per
figure; the goal is at least 2,500 durable jobs/s and at least half the floor's rate.

    .venv/bin/python bench/queue_service.py [--jobs 20000] [--concurrency 64] [--rounds 3]
"""

import argparse
import asyncio
import contextlib
import json
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from portico.adapters.job_creator.http import HttpJobCreator
from portico.testing.processes import listening_process, running_queue_service

BENCH = "queue_service"
GOAL_JOBS_PER_S = 2500.0
GOAL_RATIO = 0.5

_FLOOR_JOB = json.dumps(
    {
        "id": "00000000-0000-0000-0000-000000000000",
        "job_type": "bench.job",
        "queue_name": "default",
        "priority": 0,
        "payload": {},
        "metadata": {},
        "status": "pending",
        "idempotency_key": None,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z",
        "attempts": 0,
        "max_attempts": 3,
    }
).encode()


def serve_floor() -> None:
    """The floor: read the body, answer 201 with a fixed job, store nothing."""

    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=_FLOOR_JOB, status=201, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/jobs", create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"floor listening on http://{host}:{port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


async def load(url: str, *, jobs: int, concurrency: int, warmup: int, run: str) -> dict[str, float]:
    """Create `jobs` jobs from `concurrency` concurrent callers; latency of each `create_job` call."""
    latencies: list[float] = []
    async with HttpJobCreator(url, max_connections=concurrency) as creator:

        async def caller(numbers: Iterator[int], record: bool) -> None:
            for n in numbers:
                started = time.perf_counter()
                await creator.create_job(
                    "bench.job",
                    {"n": n, "note": "benchmark"},
                    metadata={"bench": run},
                    idempotency_key=f"{run}-{n}",
                )
                if record:
                    latencies.append(time.perf_counter() - started)

        warm = iter(range(-warmup, 0))
        await asyncio.gather(*(caller(warm, False) for _ in range(concurrency)))
        numbers = iter(range(jobs))
        started = time.perf_counter()
        await asyncio.gather(*(caller(numbers, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "jobs_per_s": jobs / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "seconds": elapsed,
    }


def _sample(exposition: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", exposition, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{name} missing from the service's metrics")
    return float(match.group(1))


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": BENCH, "metric": metric, "value": round(value, 2), **extra}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating durable/floor rounds; medians are reported"
    )
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor()
        return 0

    shape = {"jobs": args.jobs, "concurrency": args.concurrency, "rounds": args.rounds}
    results: dict[str, list[dict[str, float]]] = {"durable": [], "floor": []}
    with contextlib.ExitStack() as servers, tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp:
        db = Path(tmp) / "queue.db"
        urls = {
            "durable": servers.enter_context(running_queue_service(db)),
            "floor": servers.enter_context(listening_process([sys.executable, __file__, "--serve-floor"])),
        }
        for round_number in range(args.rounds):
            order = ("durable", "floor") if round_number % 2 == 0 else ("floor", "durable")
            for target in order:
                figures = asyncio.run(
                    load(
                        urls[target],
                        jobs=args.jobs,
                        concurrency=args.concurrency,
                        warmup=args.warmup if round_number == 0 else 0,
                        run=f"{target}-{round_number}",
                    )
                )
                results[target].append(figures)
        with urllib.request.urlopen(f"{urls['durable']}/metrics", timeout=30) as response:
            metrics = response.read().decode()
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    expected = args.jobs * args.rounds + args.warmup
    if stored != expected:
        raise SystemExit(f"the queue service stored {stored} jobs, expected {expected}")

    median = {
        target: {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        for target, rounds in results.items()
    }
    for target, figures in median.items():
        goal = {"goal": GOAL_JOBS_PER_S} if target == "durable" else {}
        per_round = [round(r["jobs_per_s"], 1) for r in results[target]]
        emit(
            "jobs_per_s",
            figures["jobs_per_s"],
            target=target,
            unit="jobs/s",
            **goal,
            per_round=per_round,
            **shape,
        )
        emit("p50_latency", figures["p50_ms"], target=target, unit="ms", **shape)
        emit("p99_latency", figures["p99_ms"], target=target, unit="ms", **shape)
    commits = _sample(metrics, "portico_queue_commits_total")
    emit(
        "mean_group_commit",
        _sample(metrics, "portico_queue_committed_operations_total") / commits,
        unit="writes/commit",
    )
    ratio = median["durable"]["jobs_per_s"] / median["floor"]["jobs_per_s"]
    emit("ratio_to_floor", ratio, unit="durable/floor jobs per s (medians)", goal=GOAL_RATIO, **shape)
    met = median["durable"]["jobs_per_s"] >= GOAL_JOBS_PER_S and ratio >= GOAL_RATIO
    emit("goal_met", float(met), stored=stored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
