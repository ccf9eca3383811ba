"""A hostile run: generated hostile requests against the operator's webhook server (a request-mode and a
payload-mode trigger, both with a bearer token) and against the reference queue service (with its own
token), then workers draining every queue the run filled.

Each case is one request from `portico.testing.hostile` (plus, per target, the shapes reported in the issue
that made this necessary, well-formed and authenticated): nesting from 1 to 100,000 levels, NaN,
Infinity, 1e400, 5,000-digit integers, lone surrogates, control characters in job types and queue names,
truncated or non-UTF-8 bytes, gzip, deflate, corrupt and bomb bodies, unknown encodings, and malformed
header lines carrying the real token. Every case has its own delivery id, so each job can be traced back
to the request that made it.

Prints one JSON line per target and a total:

- `cases`, `answered_5xx` (a 5xx other than the deliberate 503), `answered_503`, `no_answer`;
- `jobs_wrongly_created`: jobs in the queue whose request was not answered 2xx (stored, but the sender was
  told it failed, so it retries and duplicates);
- `jobs_lost`: 2xx answers whose job is not in the queue, plus jobs that went `dead` while workers
  drained the queues (claims that failed after leasing);
- `claims_5xx`: worker claims answered 5xx;
- `secrets_echoed` / `secrets_logged`: answers and log lines (of this process and of the queue service)
  containing the token;
- `p99_ms` / `max_ms`: time to an answer (or to the server closing).

    .venv/bin/python bench/hostile.py [--cases 400] [--seed 12] [--concurrency 16]
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from portico.adapters.job_creator.http import HttpJobCreator
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.trigger import WebhookAuthSpec, WebhookConfig, WebhookTrigger
from portico.testing.hostile import TOKEN, LogRecorder, exchange, hostile_case, reported_cases, status_of
from portico.testing.processes import LISTENING, die_with_parent

BENCH = "hostile"
UID = "bench-uid"


@dataclass
class Target:
    name: str
    port: int
    path: str
    envelope: bool
    key_prefix: str
    statuses: list[int | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    job_ids: dict[str, str] = field(default_factory=dict)
    answered: dict[str, int | None] = field(default_factory=dict)
    echoed: int = 0


async def run_target(target: Target, cases: int, rng: random.Random, concurrency: int) -> None:
    built = [
        (
            f"{target.name}-{n}",
            hostile_case(rng.choice, envelope=target.envelope, delivery_id=f"{target.name}-{n}"),
        )
        for n in range(cases)
    ]
    for n, case in enumerate(reported_cases(envelope=target.envelope)):
        delivery = f"{target.name}-reported-{n}"
        case.headers["Idempotency-Key"] = delivery
        built.append((delivery, case))
    gate = asyncio.Semaphore(concurrency)

    async def one(delivery: str, raw: bytes) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                answer = await exchange(target.port, raw, wait=30)
            except (TimeoutError, OSError):
                answer = b""
            target.seconds.append(time.perf_counter() - started)
        status = status_of(answer)
        target.statuses.append(status)
        target.answered[delivery] = status
        target.echoed += TOKEN.encode() in answer
        if status is not None and 200 <= status < 300:
            body = answer.split(b"\r\n\r\n", 1)[1]
            found = json.loads(body)
            job_id = found.get("job_id") or found.get("id")
            if job_id:
                target.job_ids[delivery] = job_id

    await asyncio.gather(*(one(delivery, case.raw(target.path)) for delivery, case in built))


async def all_jobs(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        async with http.get(f"{url}/v1/jobs", params=params) as response:
            page = await response.json()
        jobs.extend(page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


async def drain(http: aiohttp.ClientSession, url: str, queues: set[str]) -> int:
    """Workers claiming and completing everything; returns the number of claims answered 5xx."""
    failures = 0
    for queue in sorted(queues):
        for _ in range(50):
            async with http.post(f"{url}/v1/queues/{queue}/claim", json={"limit": 100}) as response:
                if response.status >= 500:
                    failures += 1
                    continue
                claimed = (await response.json())["jobs"]
            if not claimed:
                break
            for job in claimed:
                async with http.post(
                    f"{url}/v1/jobs/{job['id']}/complete", json={"lease_id": job["lease_id"]}
                ) as response:
                    await response.read()
    return failures


def start_queue_service(db: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "portico", "queue-service", "--port", "0", "--db", str(db)]
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [*command, "--log-level", "DEBUG"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PORTICO_QUEUE_TOKEN": TOKEN},
            preexec_fn=die_with_parent,
        )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = LISTENING.search(line)
        if found:
            return proc, found.group(1)
    raise RuntimeError(f"the queue service did not start:\n{log.read_text()}")


def report(target: str, figures: dict[str, Any]) -> None:
    print(json.dumps({"bench": BENCH, "target": target, **figures}), flush=True)


async def main(cases: int, seed: int, concurrency: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp, LogRecorder() as logs:
        proc, queue_url = start_queue_service(Path(tmp) / "queue.db", Path(tmp) / "queue.log")
        try:
            server = WebhookServer("127.0.0.1", 0)
            await server.start()
            async with HttpJobCreator(queue_url, token=TOKEN) as creator:
                triggers = []
                for mode in ("request", "payload"):
                    trigger = WebhookTrigger(
                        creator,
                        WebhookConfig(
                            prefix=f"/hooks/bench/{mode}",
                            mode=mode,
                            allowed_job_types=["t"],
                            auth=WebhookAuthSpec(type="bearer"),
                            secret=SecretStr(TOKEN),
                        ),
                        ref=TriggerRef(name=mode, namespace="bench", uid=UID),
                        template=JobTemplate(type="t", queue="p"),
                        server=server,
                    )
                    await trigger.start()
                    triggers.append(trigger)
                queue_port = int(queue_url.rsplit(":", 1)[1])
                targets = [
                    Target("webhook-request", server.port, "/hooks/bench/request", True, f"{UID}:"),
                    Target("webhook-payload", server.port, "/hooks/bench/payload", False, f"{UID}:"),
                    Target("queue-service", queue_port, "/v1/jobs", True, ""),
                ]
                for target in targets:
                    await run_target(target, cases, rng, concurrency)
                for trigger in triggers:
                    await trigger.stop()
            await server.stop()
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                stored = await all_jobs(http, queue_url)
                claims_5xx = await drain(http, queue_url, {job["queue_name"] for job in stored})
                final = {job["id"]: job for job in await all_jobs(http, queue_url)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        queue_log = (Path(tmp) / "queue.log").read_text(errors="replace")
    by_key = {job["idempotency_key"]: job for job in stored if job["idempotency_key"]}
    dead = {job_id for job_id, job in final.items() if job["status"] == "dead"}
    totals: dict[str, Any] = {}
    for target in targets:
        wrongly = sum(
            1
            for delivery, status in target.answered.items()
            if f"{target.key_prefix}{delivery}" in by_key and not (status is not None and 200 <= status < 300)
        )
        lost = sum(1 for job_id in target.job_ids.values() if job_id not in final or job_id in dead)
        figures = {
            "cases": len(target.statuses),
            "answered_5xx": sum(1 for s in target.statuses if s is not None and s >= 500 and s != 503),
            "answered_503": target.statuses.count(503),
            "answered_2xx": sum(1 for s in target.statuses if s is not None and 200 <= s < 300),
            "no_answer": target.statuses.count(None),
            "jobs_wrongly_created": wrongly,
            "jobs_lost": lost,
            "secrets_echoed": target.echoed,
            "p99_ms": round(statistics.quantiles(target.seconds, n=100)[98] * 1000, 1),
            "max_ms": round(max(target.seconds) * 1000, 1),
        }
        report(target.name, figures)
        for name, value in figures.items():
            if name not in ("p99_ms", "max_ms"):
                totals[name] = totals.get(name, 0) + value
    totals["jobs_lost"] += len(dead - {i for t in targets for i in t.job_ids.values()})
    totals["claims_5xx"] = claims_5xx
    totals["secrets_logged"] = len(logs.leaked(TOKEN)) + sum(
        1 for line in queue_log.splitlines() if TOKEN in line
    )
    report("total", totals)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=400, help="hostile requests per target")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.cases, args.seed, args.concurrency))
