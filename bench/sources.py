"""Throughput and latency of the RabbitMQ, PostgreSQL and file sources, against real services.

- AMQP: 10,000 persistent messages already in a queue, consumed until every one is a job (and acked).
  The floor is a bare aio-pika consumer with the same prefetch that acks each message without creating a
  job: the most the broker and client do on this machine. Goal: the trigger (with an in-process job
  creator, so that the trigger's own cost is what is compared) reaches at least half the floor's rate.
  The same run into the reference queue service (HTTP, SQLite) is reported too.
- PostgreSQL: 10,000 pending rows claimed, turned into jobs and marked queued.
- Files: 1,000 files dropped into a watched directory: seconds until all their jobs exist (the settle time
  included); then the detection latency of single files, from the writer closing the file to the job's
  creation. Goal: p99 at most the settle time + 200 ms.

RabbitMQ and PostgreSQL are started the way the tests start them (portico.testing.services); the queue
service runs as `portico queue-service` in its own process. Prints one JSON line per figure.

    .venv/bin/python bench/sources.py [--messages 10000] [--rows 10000] [--files 1000] [--latency-samples 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef
from portico.ports.job_creator import Job, JobCreator
from portico.sources.amqp.trigger import AmqpSpec, RabbitMQTrigger
from portico.sources.database_poll.trigger import DatabasePollingTrigger, DatabasePollSpec
from portico.sources.file.trigger import FileSpec, FileTrigger
from portico.testing.processes import running_queue_service
from portico.testing.services import PostgresServer, RabbitMQServer

BENCH = "sources"
GOAL_AMQP_RATIO = 0.5
GOAL_FILE_P99_MARGIN_MS = 200.0
PREFETCH = 32
TEMPLATE = JobTemplate(type="bench.job", queue="bench")
SECRET = SecretRef(name="bench", key="value")


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": BENCH, "metric": metric, "value": round(value, 2), **extra}), flush=True)


class Tally(JobCreator):
    """Passes jobs on and notes when each distinct key was first accepted; `done` is set at `expected`."""

    def __init__(self, inner: JobCreator, expected: int) -> None:
        self.inner = inner
        self.expected = expected
        self.accepted: dict[str, float] = {}
        self.done = asyncio.Event()

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
        job = await self.inner.create_job(job_type, payload, queue_name, priority, metadata, idempotency_key)
        self.accepted.setdefault(idempotency_key or job.id, time.perf_counter())
        if len(self.accepted) >= self.expected:
            self.done.set()
        return job

    async def get_job(self, job_id: str) -> Job | None:
        return await self.inner.get_job(job_id)


# --- AMQP ----------------------------------------------------------------------------------------------


async def fill_queue(url: str, queue: str, messages: int) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for start in range(0, messages, 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            json.dumps({"n": n, "note": "benchmark"}).encode(),
                            message_id=f"{queue}-{n}",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for n in range(start, min(start + 500, messages))
                )
            )


async def amqp_floor(url: str, messages: int) -> float:
    queue_name = f"floor-{uuid.uuid4().hex[:8]}"
    await fill_queue(url, queue_name, messages)
    done = asyncio.Event()
    acked = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal acked
        await message.ack()
        acked += 1
        if acked >= messages:
            done.set()

    started = time.perf_counter()
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(queue_name, passive=True)
        tag = await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        await channel.queue_delete(queue_name)
    return messages / elapsed


async def amqp_trigger(url: str, messages: int, creator: JobCreator) -> float:
    queue_name = f"trigger-{uuid.uuid4().hex[:8]}"
    await fill_queue(url, queue_name, messages)
    tally = Tally(creator, messages)
    config = AmqpSpec(url_secret_ref=SECRET, queue=queue_name, prefetch=PREFETCH)
    trigger = RabbitMQTrigger(job_creator=tally, config=config, url=url, template=TEMPLATE)
    started = time.perf_counter()
    await trigger.start()
    try:
        await asyncio.wait_for(tally.done.wait(), 600)
        elapsed = time.perf_counter() - started
    finally:
        await trigger.stop()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        left = (await channel.declare_queue(queue_name, passive=True)).declaration_result.message_count
        await channel.queue_delete(queue_name)
    if left:
        raise SystemExit(f"{left} messages were left in the queue")
    return messages / elapsed


async def bench_amqp(mq: RabbitMQServer, queue_url: str, messages: int, rounds: int) -> bool:
    figures: dict[str, list[float]] = {"floor": [], "in_memory": [], "queue_service": []}
    for round_number in range(rounds):
        order = ["floor", "in_memory", "queue_service"]
        if round_number % 2:
            order.reverse()
        for target in order:
            if target == "floor":
                figures[target].append(await amqp_floor(mq.url, messages))
            elif target == "in_memory":
                figures[target].append(await amqp_trigger(mq.url, messages, InMemoryJobCreator()))
            else:
                async with HttpJobCreator(queue_url, max_connections=PREFETCH) as http:
                    figures[target].append(await amqp_trigger(mq.url, messages, http))
    median = {target: statistics.median(values) for target, values in figures.items()}
    shape = {"messages": messages, "prefetch": PREFETCH, "rounds": rounds, "unit": "msgs/s"}
    emit("amqp_floor_msgs_per_s", median["floor"], per_round=[round(v) for v in figures["floor"]], **shape)
    ratio = median["in_memory"] / median["floor"]
    emit(
        "amqp_msgs_per_s",
        median["in_memory"],
        target="in_memory",
        ratio_to_floor=round(ratio, 3),
        goal_ratio=GOAL_AMQP_RATIO,
        per_round=[round(v) for v in figures["in_memory"]],
        **shape,
    )
    emit(
        "amqp_msgs_per_s",
        median["queue_service"],
        target="queue_service",
        ratio_to_floor=round(median["queue_service"] / median["floor"], 3),
        per_round=[round(v) for v in figures["queue_service"]],
        **shape,
    )
    return ratio >= GOAL_AMQP_RATIO


# --- PostgreSQL ----------------------------------------------------------------------------------------


async def db_rows(pg: PostgresServer, rows: int, creator: JobCreator, batch_size: int) -> float:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {table} "
            "(id bigint PRIMARY KEY, status text NOT NULL, customer text, amount numeric)"
        )
        await conn.copy_records_to_table(
            table,
            records=[(i, "pending", f"c{i}", i / 4) for i in range(rows)],
            columns=["id", "status", "customer", "amount"],
        )
        tally = Tally(creator, rows)
        config = DatabasePollSpec(
            dsn_secret_ref=SECRET, table=table, batch_size=batch_size, interval_seconds=0.1
        )
        trigger = DatabasePollingTrigger(job_creator=tally, config=config, dsn=pg.dsn, template=TEMPLATE)
        started = time.perf_counter()
        await trigger.start()
        try:
            await asyncio.wait_for(tally.done.wait(), 600)
            while await conn.fetchval(f"SELECT count(*) FROM {table} WHERE status = 'queued'") < rows:
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            await trigger.stop()
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    return rows / elapsed


async def bench_db(pg: PostgresServer, queue_url: str, rows: int, batch_size: int) -> None:
    shape = {"rows": rows, "batch_size": batch_size, "unit": "rows/s"}
    emit(
        "db_rows_per_s",
        await db_rows(pg, rows, InMemoryJobCreator(), batch_size),
        target="in_memory",
        **shape,
    )
    async with HttpJobCreator(queue_url) as http:
        emit("db_rows_per_s", await db_rows(pg, rows, http, batch_size), target="queue_service", **shape)


# --- files ---------------------------------------------------------------------------------------------


async def file_burst(directory: Path, files: int, creator: JobCreator, settle: float) -> float:
    tally = Tally(creator, files)
    trigger = FileTrigger(
        job_creator=tally, config=FileSpec(path=str(directory), settle_seconds=settle), template=TEMPLATE
    )
    await trigger.start()
    try:
        started = time.perf_counter()
        for i in range(files):
            (directory / f"drop-{i:05}.csv").write_bytes(b"id,amount\n1,2.50\n" * 8)
        await asyncio.wait_for(tally.done.wait(), 600)
        return time.perf_counter() - started
    finally:
        await trigger.stop()


async def file_latency(directory: Path, samples: int, settle: float) -> list[float]:
    tally = Tally(InMemoryJobCreator(), samples)
    trigger = FileTrigger(
        job_creator=tally, config=FileSpec(path=str(directory), settle_seconds=settle), template=TEMPLATE
    )
    latencies: list[float] = []
    await trigger.start()
    try:
        for i in range(samples):
            with (directory / f"single-{i:05}.csv").open("wb") as f:
                f.write(b"id,amount\n1,2.50\n")
            closed = time.perf_counter()
            while len(tally.accepted) <= i:
                await asyncio.sleep(0.001)
            latencies.append(max(tally.accepted.values()) - closed)
    finally:
        await trigger.stop()
    return latencies


async def bench_files(queue_url: str, tmp: Path, files: int, samples: int, settle: float) -> bool:
    burst_dir, latency_dir = tmp / "burst", tmp / "latency"
    burst_dir.mkdir()
    latency_dir.mkdir()
    async with HttpJobCreator(queue_url) as http:
        seconds = await file_burst(burst_dir, files, http, settle)
    emit(
        "file_burst_seconds",
        seconds,
        target="queue_service",
        files=files,
        settle_seconds=settle,
        unit="s",
        files_per_s=round(files / seconds, 1),
    )
    latencies = sorted(await file_latency(latency_dir, samples, settle))
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    goal = settle * 1000 + GOAL_FILE_P99_MARGIN_MS
    emit("file_detection_p50_ms", p50, samples=samples, settle_seconds=settle, unit="ms")
    emit(
        "file_detection_p99_ms",
        p99,
        samples=samples,
        settle_seconds=settle,
        unit="ms",
        goal=goal,
        max_ms=round(latencies[-1] * 1000, 1),
    )
    return p99 <= goal


async def run(
    args: argparse.Namespace, mq: RabbitMQServer, pg: PostgresServer, queue_url: str, tmp: Path
) -> int:
    amqp_ok = await bench_amqp(mq, queue_url, args.messages, args.rounds)
    await bench_db(pg, queue_url, args.rows, args.batch_size)
    files_ok = await bench_files(queue_url, tmp, args.files, args.latency_samples, args.settle)
    emit("goal_met", float(amqp_ok and files_ok), amqp_ratio=amqp_ok, file_p99=files_ok)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating AMQP rounds; medians are reported")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100, help="databasePoll batchSize (default 100)")
    parser.add_argument("--files", type=int, default=1_000)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--settle", type=float, default=1.0, help="file settleSeconds (default 1.0)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp,
        RabbitMQServer() as mq,
        PostgresServer() as pg,
        running_queue_service(Path(tmp) / "queue.db") as queue_url,
    ):
        return asyncio.run(run(args, mq, pg, queue_url, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
