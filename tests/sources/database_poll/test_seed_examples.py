"""The seed's "Custom Database Change Trigger" example against a real PostgreSQL: its usage with the
library's `DatabasePollingTrigger`, imports adapted. The seed's `database` is a handle on a database with an
`items` table (id, status, data, created_at); here it is the connection string of a schema holding one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.kits.job.job_service import JobService
from portico.sources.database_poll import DatabasePollingTrigger
from portico.testing.services import PostgresServer
from tests.sources.conftest import eventually

pytestmark = pytest.mark.services


@pytest.fixture
async def database(postgres: PostgresServer) -> AsyncIterator[str]:
    """A schema with the seed's `items` table: two recent pending items, one pending for two hours (outside
    the seed's one-hour window), one already done. Yields a DSN whose search path is that schema."""
    schema = f"seed_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres.dsn)
    await conn.execute(
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.items (id serial PRIMARY KEY, status text NOT NULL, "
        "data jsonb, created_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(
        f"INSERT INTO {schema}.items (status, data, created_at) VALUES "
        """('pending', '{"sku": "a"}', now()), ('pending', '{"sku": "b"}', now() - interval '5 minutes'), """
        """('pending', '{"sku": "old"}', now() - interval '2 hours'), ('done', '{"sku": "c"}', now())"""
    )
    yield f"{postgres.dsn}?search_path={schema}"
    await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await conn.close()


async def test_custom_database_change_trigger_usage(database: str) -> None:
    job_queue = InMemoryJobQueue()
    job_service = JobService(job_queue=job_queue)

    # Usage
    db_trigger = DatabasePollingTrigger(job_creator=job_service, database=database, poll_interval_seconds=30)

    await db_trigger.start()

    # Polls database every 30 seconds and creates jobs for pending items
    try:
        await eventually(lambda: len(job_queue.jobs) == 2)
        await asyncio.sleep(0.2)
    finally:
        await db_trigger.stop()
    assert db_trigger.spec.interval_seconds == 30
    jobs = sorted(job_queue.jobs.values(), key=lambda job: job.payload["data"]["sku"])
    assert [job.payload["data"] for job in jobs] == [{"sku": "a"}, {"sku": "b"}]
    assert {(job.job_type, job.queue_name) for job in jobs} == {("item.process", "processing")}
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT data->>'sku' AS sku, status FROM items ORDER BY id")
    finally:
        await conn.close()
    assert [(row["sku"], row["status"]) for row in rows] == [
        ("a", "queued"),
        ("b", "queued"),
        ("old", "pending"),
        ("c", "done"),
    ], "marked as queued; the item older than an hour is left alone, as the seed's query does"
