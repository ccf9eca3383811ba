"""Jobs per second into each target at concurrency 64, against a bare client for the same system in the
same run: the adapter's overhead over the floor that system and its client library allow here.

- cloudEvents: `CloudEventsJobCreator` vs bare aiohttp POSTs of the same event, to a sink in its own
  process that answers 202.
- kubernetesJob: `KubernetesJobCreator` vs bare kubernetes-asyncio `create_namespaced_job` of the same
  Job, on the real kube-apiserver + etcd.
- celery on RabbitMQ and on Redis: `CeleryJobCreator` vs bare kombu publishes of the same message (same
  publisher confirms on RabbitMQ, the same number of connections and threads). The adapter pays for what
  keeps a task id published once: on RabbitMQ the copy in the ledger stream, the claims and, since each
  round starts a new creator, reading the ledger the earlier rounds filled; on Redis the marker key.

(The queue service target is `HttpJobCreator`, measured against its floor by bench/queue_service.py.)
The bare client and the adapter alternate over rounds (B A, A B, ...); medians are reported. One JSON
line per figure; the goal is a ratio of at least 0.6 for each target.

    .venv/bin/python bench/targets.py [--concurrency 64] [--rounds 2] [--only cloudEvents,celery,...]
"""

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import kombu
from aiohttp import web
from kubernetes_asyncio import client, config

from portico.adapters.job_creator.celery_task import CeleryJobCreator, task_id, task_message
from portico.adapters.job_creator.cloud_events import CloudEventsJobCreator
from portico.adapters.job_creator.kubernetes_job import (
    KubernetesJobCreator,
    KubernetesJobTargetSpec,
    job_name,
)
from portico.domain.trigger import TriggerRef
from portico.testing.control_plane import ControlPlane, find_binaries
from portico.testing.processes import listening_process
from portico.testing.redis_server import RedisServer
from portico.testing.services import RabbitMQServer

BENCH = "targets"
GOAL_RATIO = 0.6
ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"report": "daily", "rows": list(range(10))}
TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": BENCH, "metric": metric, "value": round(value, 3), **extra}), flush=True)


def serve_sink() -> None:
    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", accept)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"sink listening on http://{host}:{port}/", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


async def rate(count: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Jobs per second: `concurrency` tasks calling `one(i)` for i in 0..count-1."""
    counter = iter(range(count))

    async def worker() -> None:
        for i in counter:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def compare(
    target: str,
    count: int,
    concurrency: int,
    rounds: int,
    bare: Callable[[int, int], Awaitable[Callable[[int], Awaitable[Any]]]],
    adapter: Callable[[int, int], Awaitable[Callable[[int], Awaitable[Any]]]],
) -> None:
    """`bare(round, count)` / `adapter(round, count)` return the per-job call for that round."""
    results: dict[str, list[float]] = {"bare": [], "adapter": []}
    for r in range(rounds):
        order = [("bare", bare), ("adapter", adapter)]
        for name, make in order if r % 2 == 0 else reversed(order):
            one = await make(r, count)
            results[name].append(await rate(count, concurrency, one))
    floor, ours = statistics.median(results["bare"]), statistics.median(results["adapter"])
    shape = {"target": target, "jobs": count, "concurrency": concurrency, "rounds": rounds}
    emit("bare_jobs_per_s", floor, unit="jobs/s", **shape)
    emit("target_jobs_per_s", ours, unit="jobs/s", **shape)
    emit("ratio_to_bare", ours / floor, unit="target/bare jobs per s (medians)", goal=GOAL_RATIO, **shape)


async def bench_cloud_events(args: argparse.Namespace) -> None:
    with listening_process([sys.executable, __file__, "--serve-sink"]) as url:
        connector = aiohttp.TCPConnector(limit=32, keepalive_timeout=30.0)
        async with aiohttp.ClientSession(connector=connector) as session:
            body = json.dumps(PAYLOAD, separators=(",", ":")).encode()

            async def bare(r: int, count: int) -> Callable[[int], Awaitable[Any]]:
                async def one(i: int) -> None:
                    headers = {
                        "Content-Type": "application/json",
                        "ce-specversion": "1.0",
                        "ce-id": f"bare-{r}-{i}",
                        "ce-source": "/bench",
                        "ce-type": "bench.event",
                        "ce-time": "2026-11-28T09:00:00Z",
                    }
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        assert response.status == 202

                return one

            creator = CloudEventsJobCreator(url, source="/bench")

            async def adapter(r: int, count: int) -> Callable[[int], Awaitable[Any]]:
                async def one(i: int) -> None:
                    await creator.create_job("bench.event", PAYLOAD, idempotency_key=f"adapter-{r}-{i}")

                return one

            try:
                await compare("cloudEvents", args.jobs, args.concurrency, args.rounds, bare, adapter)
            finally:
                await creator.close()


async def bench_kubernetes_job(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp:
        cp = ControlPlane(bin_dir=find_binaries(ROOT), data_dir=Path(tmp) / "cp")
        cp.start()
        try:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=configuration)
            configuration.connection_pool_maxsize = 32
            async with client.ApiClient(configuration) as api:
                batch = client.BatchV1Api(api)
                spec = KubernetesJobTargetSpec.model_validate({"jobTemplate": TEMPLATE})

                async def bare(r: int, count: int) -> Callable[[int], Awaitable[Any]]:
                    namespace = f"bare-{r}"
                    cp.ensure_namespace(namespace)
                    creator = KubernetesJobCreator(api, spec, trigger=TriggerRef("bench", namespace, "uid"))
                    bodies = [
                        creator.manifest(
                            job_name("bench", f"k-{i}"), "bench.job", PAYLOAD, "q", 0, {}, f"k-{i}"
                        )
                        for i in range(count)
                    ]

                    async def one(i: int) -> None:
                        await batch.create_namespaced_job(namespace, bodies[i])

                    return one

                async def adapter(r: int, count: int) -> Callable[[int], Awaitable[Any]]:
                    namespace = f"adapter-{r}"
                    cp.ensure_namespace(namespace)
                    creator = KubernetesJobCreator(api, spec, trigger=TriggerRef("bench", namespace, "uid"))

                    async def one(i: int) -> None:
                        await creator.create_job(
                            "bench.job", PAYLOAD, queue_name="q", idempotency_key=f"k-{i}"
                        )

                    return one

                await compare("kubernetesJob", args.k8s_jobs, args.concurrency, args.rounds, bare, adapter)
        finally:
            cp.stop()


async def bench_celery(args: argparse.Namespace, broker: str, url: str) -> None:
    threads = 8
    connection = kombu.Connection(
        url, transport_options={} if broker == "redis" else {"confirm_publish": True}
    )
    pool = connection.Pool(limit=threads)
    executor = ThreadPoolExecutor(max_workers=threads)
    loop = asyncio.get_running_loop()

    def publish(queue: str, body: Any, headers: dict[str, Any], tid: str) -> None:
        exchange = kombu.Exchange(queue, "direct", durable=True)
        with pool.acquire(block=True) as conn:
            conn.Producer().publish(
                body,
                exchange=exchange,
                routing_key=queue,
                declare=[kombu.Queue(queue, exchange, routing_key=queue, durable=True)],
                serializer="json",
                headers=headers,
                correlation_id=tid,
                delivery_mode=2,
            )

    async def bare(r: int, count: int) -> Callable[[int], Awaitable[Any]]:
        queue = f"bare-{r}-{uuid.uuid4().hex[:6]}"

        async def one(i: int) -> None:
            tid = task_id(f"bare-{r}-{i}")
            body, headers = task_message("bench.task", tid, PAYLOAD, origin="bench", metadata={})
            await loop.run_in_executor(executor, publish, queue, body, headers, tid)

        return one

    creators: list[CeleryJobCreator] = []

    async def adapter(r: int, count: int) -> Callable[[int], Awaitable[Any]]:
        creator = CeleryJobCreator(url, queue=f"adapter-{r}-{uuid.uuid4().hex[:6]}", threads=threads)
        creators.append(creator)

        async def one(i: int) -> None:
            await creator.create_job("bench.task", PAYLOAD, idempotency_key=f"adapter-{r}-{i}")

        return one

    try:
        await compare(f"celery/{broker}", args.jobs, args.concurrency, args.rounds, bare, adapter)
    finally:
        for creator in creators:
            await creator.close()
        executor.shutdown()
        pool.force_close_all()
        connection.release()


async def main_async(args: argparse.Namespace) -> None:
    only = set(args.only.split(",")) if args.only else {"cloudEvents", "kubernetesJob", "celery"}
    if "cloudEvents" in only:
        await bench_cloud_events(args)
    if "kubernetesJob" in only:
        await bench_kubernetes_job(args)
    if "celery" in only:
        with RabbitMQServer() as rabbitmq:
            await bench_celery(args, "rabbitmq", rabbitmq.url)
        with RedisServer() as redis:
            await bench_celery(args, "redis", redis.url())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per round (HTTP and broker targets)")
    parser.add_argument("--k8s-jobs", type=int, default=1000, help="jobs per round (kubernetesJob)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated: cloudEvents,kubernetesJob,celery")
    parser.add_argument("--serve-sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink()
        return 0
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
