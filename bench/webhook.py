"""Signed webhook deliveries through the operator's webhook server into the reference queue service,
against the floor of a bare aiohttp handler that forwards the same body with `HttpJobCreator`.

Three processes per run: the load generator (this one), the server under test, and `portico
queue-service` (SQLite on disk, shared by both runs). The load is GitHub-style deliveries signed with
HMAC-SHA256 (`X-Hub-Signature-256`), each with its own `X-GitHub-Delivery`, at concurrency 64 for a fixed
count. The webhook path does everything it does in production — signature check, body cap, JSON parse,
metadata, idempotency key from the delivery id, 202 only after the queue service stored the job — and
the floor does only the forwarding. Prints one JSON line per figure; the goal is at least 70 % of the
floor's rate and a p99 of at most 50 ms.

    .venv/bin/python bench/webhook.py [--requests 5000] [--concurrency 64] [--rounds 4]

Rounds alternate which server runs first (webhook, floor, floor, webhook, ...), so the queue service's
growing database weighs on both alike.
"""

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from portico.adapters.job_creator.http import HttpJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.trigger_source import StaticSecrets
from portico.sources.webhook import WebhookAuthSpec, WebhookConfig, WebhookTrigger
from portico.sources.webhook.server import WebhookServer
from portico.testing.processes import cpu_seconds, listening_server, running_queue_service

BENCH = "webhook"
GOAL_RATIO = 0.7
GOAL_P99_MS = 50.0
SECRET = "bench-signing-secret"
PATH = "/hooks/bench/push"


async def _listen(app: web.Application, label: str) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    host, port = runner.addresses[0][:2]
    print(f"{label} listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


def serve_webhook(queue_url: str, concurrency: int) -> None:
    """The system under test: the operator's `WebhookServer` with one GitHub-preset trigger."""

    async def main() -> None:
        server = WebhookServer("127.0.0.1", 0)
        async with HttpJobCreator(queue_url, max_connections=concurrency) as creator:
            trigger = WebhookTrigger(
                creator,
                WebhookConfig(
                    path=PATH,
                    mode="payload",
                    auth=WebhookAuthSpec(
                        type="hmac", preset="github", secret_ref=SecretRef(name="gh", key="s")
                    ),
                ),
                ref=TriggerRef(name="push", namespace="bench", uid="bench-uid"),
                template=JobTemplate(type="ci.build", queue="builds"),
                secrets=StaticSecrets({("gh", "s"): SECRET}),
                server=server,
            )
            await server.start()
            await trigger.start()
            print(f"webhook listening on {server.url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def serve_floor(queue_url: str, concurrency: int) -> None:
    """The floor: read the body, parse it, forward it with `HttpJobCreator`, answer 202 — no checks."""

    async def main() -> None:
        async with HttpJobCreator(queue_url, max_connections=concurrency) as creator:

            async def forward(request: web.Request) -> web.Response:
                payload = json.loads(await request.read())
                job = await creator.create_job(
                    "ci.build",
                    payload,
                    queue_name="builds",
                    idempotency_key=request.headers["X-GitHub-Delivery"],
                )
                return web.json_response({"job_id": job.id}, status=202)

            app = web.Application()
            app.router.add_post(PATH, forward)
            await _listen(app, "floor")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def delivery(run: str, n: int) -> tuple[bytes, dict[str, str]]:
    """One signed GitHub push delivery (a realistic ~1 KB body)."""
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": f"{n:040x}",
            "after": f"{n + 1:040x}",
            "repository": {"id": 1296269, "full_name": "octo-org/octo-repo", "private": False},
            "pusher": {"name": "octocat", "email": "octocat@example.org"},
            "commits": [
                {"id": f"{n + 1:040x}", "message": "Fix the build " * 20, "author": {"name": "octocat"}},
            ],
        }
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": f"{run}-{n}",
        "X-Hub-Signature-256": signature,
        "User-Agent": "GitHub-Hookshot/bench",
    }


async def load(
    url: str, *, requests: int, concurrency: int, warmup: int, run: str, pid: int
) -> tuple[float, list[float], float]:
    """`requests` deliveries from `concurrency` concurrent senders: seconds taken, latency of each, and
    the CPU seconds the server (process `pid`) spent on them."""
    prepared = {n: delivery(run, n) for n in range(-warmup, requests)}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender(numbers: Iterator[int], record: bool) -> None:
            for n in numbers:
                body, headers = prepared[n]
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                if record:
                    latencies.append(time.perf_counter() - started)

        warm = iter(range(-warmup, 0))
        await asyncio.gather(*(sender(warm, False) for _ in range(concurrency)))
        numbers = iter(range(requests))
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(sender(numbers, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before
    if set(statuses) != {202}:
        raise SystemExit(f"{run}: expected only 202 answers, got {statuses}")
    return elapsed, latencies, cpu


def summarize(runs: list[tuple[float, list[float], float]]) -> dict[str, float]:
    """Rate over all rounds together, latency percentiles over every request of every round, and the
    server's CPU per request (what load on a shared machine disturbs least)."""
    latencies = sorted(latency for _, round_latencies, _ in runs for latency in round_latencies)
    return {
        "requests_per_s": len(latencies) / sum(elapsed for elapsed, _, _ in runs),
        "cpu_us_per_request": sum(cpu for _, _, cpu in runs) / len(latencies) * 1e6,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": BENCH, "metric": metric, "value": round(value, 2), **extra}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds per target, alternating which goes first"
    )
    parser.add_argument("--serve", choices=["webhook", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--queue-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "webhook":
        serve_webhook(args.queue_url, args.concurrency)
        return 0
    if args.serve == "floor":
        serve_floor(args.queue_url, args.concurrency)
        return 0

    shape = {"requests": args.requests, "concurrency": args.concurrency, "rounds": args.rounds}
    runs: dict[str, list[tuple[float, list[float], float]]] = {"webhook": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp:
        db = Path(tmp) / "queue.db"
        with running_queue_service(db) as queue_url:
            for round_number in range(args.rounds):
                order = ("webhook", "floor") if round_number % 2 == 0 else ("floor", "webhook")
                for target in order:
                    command = [sys.executable, __file__, "--serve", target, "--queue-url", queue_url]
                    server = listening_server([*command, "--concurrency", str(args.concurrency)])
                    with server as (url, process):
                        runs[target].append(
                            asyncio.run(
                                load(
                                    url + PATH,
                                    requests=args.requests,
                                    concurrency=args.concurrency,
                                    warmup=args.warmup,
                                    run=f"{target}{round_number}",
                                    pid=process.pid,
                                )
                            )
                        )
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            by_webhook = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE idempotency_key LIKE 'bench-uid:%'"
            ).fetchone()[0]
    expected = 2 * args.rounds * (args.requests + args.warmup)
    if stored != expected or by_webhook != expected // 2:
        raise SystemExit(
            f"the queue service stored {stored} jobs ({by_webhook} by the webhook), expected {expected}"
        )

    figures = {target: summarize(target_runs) for target, target_runs in runs.items()}
    webhook, floor = figures["webhook"], figures["floor"]
    for target, result in (("webhook", webhook), ("floor", floor)):
        emit("requests_per_s", result["requests_per_s"], target=target, unit="req/s", **shape)
        emit("p50_latency", result["p50_ms"], target=target, unit="ms", **shape)
        p99_goal = {"goal": GOAL_P99_MS} if target == "webhook" else {}
        emit("p99_latency", result["p99_ms"], target=target, unit="ms", **p99_goal, **shape)
        emit("server_cpu_per_request", result["cpu_us_per_request"], target=target, unit="us", **shape)
    emit(
        "cpu_ratio_to_floor",
        webhook["cpu_us_per_request"] / floor["cpu_us_per_request"],
        unit="webhook/floor server CPU per request",
        **shape,
    )
    ratio = webhook["requests_per_s"] / floor["requests_per_s"]
    emit("ratio_to_floor", ratio, unit="webhook/floor req per s", goal=GOAL_RATIO, **shape)
    met = ratio >= GOAL_RATIO and webhook["p99_ms"] <= GOAL_P99_MS
    emit("goal_met", float(met), stored=stored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
