"""The PostgreSQL polling trigger against a real PostgreSQL server and the real queue service: rows become
jobs exactly once, whatever stops in between, and two pollers never claim the same row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import StaticSecrets, TriggerContext
from portico.sources.database_poll.trigger import (
    DatabasePollingTrigger,
    DatabasePollSource,
    DatabasePollSpec,
    json_safe,
    quote_identifier,
    quote_table,
)
from portico.testing.services import PostgresServer
from tests.sources.conftest import CountingJobCreator, RecordingEvents, RestartableQueueService, eventually

pytestmark = pytest.mark.services

DSN_REF = SecretRef(name="db", key="dsn")
TEMPLATE = JobTemplate(type="order.process", queue="orders", payload={"source": "db"})


def spec(table: str, **fields: Any) -> DatabasePollSpec:
    return DatabasePollSpec.model_validate(
        {"dsnSecretRef": DSN_REF.to_resource(), "table": table, "intervalSeconds": 0.1, **fields}
    )


@pytest.fixture
async def db(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres.dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def orders(db: asyncpg.Connection, postgres: PostgresServer) -> AsyncIterator[str]:
    """A fresh `orders_<hex>` table with the default column names."""
    table = f"orders_{uuid.uuid4().hex[:8]}"
    await db.execute(f"""
        CREATE TABLE {table} (
            id bigserial PRIMARY KEY,
            status text NOT NULL DEFAULT 'pending',
            customer text,
            amount numeric(12, 2),
            placed_at timestamptz DEFAULT now(),
            ref uuid DEFAULT gen_random_uuid(),
            details jsonb,
            blob bytea
        )""")
    yield table
    conn = await asyncpg.connect(postgres.dsn)  # a test may have restarted the server under `db`
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.close()


async def insert_orders(db: asyncpg.Connection, table: str, count: int, start: int = 0) -> None:
    await db.executemany(
        f"INSERT INTO {table} (customer, amount, details) VALUES ($1, $2, $3)",
        [(f"c{i}", Decimal(i) / 4, f'{{"n": {i}}}') for i in range(start, start + count)],
    )


async def statuses(db: asyncpg.Connection, table: str) -> dict[str, int]:
    rows = await db.fetch(f"SELECT status, count(*) AS n FROM {table} GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


# --- the spec ------------------------------------------------------------------------------------------


def test_spec_is_camel_case_with_defaults() -> None:
    s = spec("public.orders")
    assert s.to_resource() == {
        "dsnSecretRef": {"name": "db", "key": "dsn"},
        "table": "public.orders",
        "idColumn": "id",
        "statusColumn": "status",
        "pendingValue": "pending",
        "queuedValue": "queued",
        "batchSize": 100,
        "intervalSeconds": 0.1,
    }


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"table": "orders; DROP TABLE x"}, "table"),
        ({"table": "a.b.c"}, "table"),
        ({"table": 'orders"'}, "table"),
        ({"idColumn": "id desc"}, "idColumn"),
        ({"payloadColumns": ["ok", "not ok"]}, "not a column name"),
        ({"queuedValue": "pending"}, "must differ"),
        ({"failedValue": "queued"}, "failedValue must differ"),
        ({"query": "DELETE FROM orders"}, "must be a SELECT"),
        ({"query": "SELECT * FROM orders LIMIT 10 FOR UPDATE SKIP LOCKED"}, "$1"),
        ({"query": "SELECT * FROM orders LIMIT $1"}, "SKIP LOCKED"),
        ({"batchSize": 0}, "batchSize"),
    ],
)
def test_spec_rejects(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**{"table": "orders", **fields})
    assert message in str(info.value)


def test_identifiers_are_always_quoted() -> None:
    assert quote_identifier("Orders") == '"Orders"'
    assert quote_table("sales.orders") == '"sales"."orders"'
    for bad in ('x"; DROP TABLE y; --', "a b", "", "1abc", "a" * 64):
        with pytest.raises(ValueError):
            quote_identifier(bad)


def test_row_values_become_json() -> None:
    when = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    value = {
        "t": when,
        "d": Decimal("12.50"),
        "u": uuid.UUID(int=1),
        "b": b"\x00\xff",
        "l": [when.date()],
        "f": float("nan"),
    }
    assert json_safe(value) == {
        "t": "2026-11-28T09:00:00+00:00",
        "d": "12.50",
        "u": "00000000-0000-0000-0000-000000000001",
        "b": "AP8=",
        "l": ["2026-11-28"],
        "f": "nan",
    }


# --- end to end ----------------------------------------------------------------------------------------


async def test_rows_become_jobs_in_the_queue_service(
    postgres: PostgresServer, db: asyncpg.Connection, orders: str, queue_service: Any
) -> None:
    await insert_orders(db, orders, 25)
    await db.execute(f"INSERT INTO {orders} (status, customer) VALUES ('done', 'old')")
    events = RecordingEvents()
    source = DatabasePollSource()
    ref = TriggerRef(name="orders", namespace="shop", uid="uid-1")
    async with HttpJobCreator(queue_service.url) as creator:
        context = TriggerContext(
            ref=ref,
            template=TEMPLATE,
            job_creator=creator,
            events=events,
            secrets=StaticSecrets({("db", "dsn"): postgres.dsn}),
        )
        trigger = source.build(spec(orders, batchSize=10), context)
        await trigger.start()
        await trigger.start()  # idempotent
        assert trigger.is_running
        try:
            await eventually(lambda: trigger.get_health().jobs_created_count == 25)
            await eventually(lambda: statuses_match(db, orders, {"queued": 25, "done": 1}))
        finally:
            await trigger.stop()
        assert not trigger.is_running
    assert await statuses(db, orders) == {"queued": 25, "done": 1}
    jobs = await queue_service.list_jobs()
    assert len(jobs) == 25
    row = await db.fetchrow(f"SELECT * FROM {orders} WHERE customer = 'c5'")
    job = next(j for j in jobs if j.payload.get("customer") == "c5")
    assert job.job_type == "order.process" and job.queue_name == "orders"
    assert job.payload == {
        "source": "db",
        "id": row["id"],
        "customer": "c5",
        "amount": "1.25",
        "placed_at": row["placed_at"].isoformat(),
        "ref": str(row["ref"]),
        "details": {"n": 5},
        "blob": None,
    }
    assert job.idempotency_key == f"databasePoll/uid-1/{orders}/{row['id']}"
    assert job.metadata["trigger.source"] == "databasePoll"
    assert job.metadata["databasePoll.id"] == str(row["id"])
    health = trigger.get_health()
    assert health.errors_count == 0
    assert set(health.source_status) == {"connected", "lastPollRows", "lastPollTime"}
    assert events.changes > 0


async def test_payload_columns_and_custom_query(
    postgres: PostgresServer, db: asyncpg.Connection, orders: str
) -> None:
    await insert_orders(db, orders, 6)
    creator = InMemoryJobCreator()
    query = (
        f"SELECT id, customer FROM {orders} WHERE status = 'pending' AND amount >= 0.5 "
        f"ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    )
    trigger = DatabasePollingTrigger(
        job_creator=creator,
        config=spec(orders, query=query, payloadColumns=["customer"]),
        dsn=postgres.dsn,
        template=TEMPLATE,
    )
    await trigger.start()
    try:
        await eventually(lambda: len(creator.jobs) == 4)
        await asyncio.sleep(0.3)
    finally:
        await trigger.stop()
    assert sorted(job.payload["customer"] for job in creator.jobs.values()) == ["c2", "c3", "c4", "c5"]
    assert all(set(job.payload) == {"source", "customer"} for job in creator.jobs.values())
    assert await statuses(db, orders) == {"queued": 4, "pending": 2}


async def test_schema_qualified_table_with_integer_status(
    postgres: PostgresServer, db: asyncpg.Connection
) -> None:
    schema = f"s_{uuid.uuid4().hex[:6]}"
    await db.execute(
        f'CREATE SCHEMA {schema}; CREATE TABLE {schema}."Tasks" '
        f"(task_id int PRIMARY KEY, state smallint NOT NULL, name text)"
    )
    await db.executemany(
        f'INSERT INTO {schema}."Tasks" VALUES ($1, $2, $3)',
        [(i, 0, f"t{i}") for i in range(5)] + [(99, 2, "done")],
    )
    creator = InMemoryJobCreator()
    trigger = DatabasePollingTrigger(
        job_creator=creator,
        dsn=postgres.dsn,
        template=TEMPLATE,
        config=spec(
            f"{schema}.Tasks", idColumn="task_id", statusColumn="state", pendingValue="0", queuedValue="1"
        ),
    )
    await trigger.start()
    try:
        await eventually(lambda: len(creator.jobs) == 5)
    finally:
        await trigger.stop()
    rows = await db.fetch(f'SELECT state, count(*) FROM {schema}."Tasks" GROUP BY state ORDER BY state')
    assert [tuple(r) for r in rows] == [(1, 5), (2, 1)]
    await db.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_two_pollers_never_claim_the_same_row(
    postgres: PostgresServer, db: asyncpg.Connection, orders: str, queue_service: Any
) -> None:
    await insert_orders(db, orders, 1500)
    async with HttpJobCreator(queue_service.url) as http:
        creator = CountingJobCreator(http, delay=0.001)
        pollers = [
            DatabasePollingTrigger(
                job_creator=creator,
                config=spec(orders, batchSize=50),
                dsn=postgres.dsn,
                template=TEMPLATE,
                ref=TriggerRef(name="orders", uid="same-trigger"),
            )
            for _ in range(2)
        ]
        await asyncio.gather(*(p.start() for p in pollers))
        try:
            await eventually(lambda: len(creator.calls) == 1500, timeout=60)
        finally:
            await asyncio.gather(*(p.stop() for p in pollers))
    assert set(creator.calls.values()) == {1}, "a row was claimed twice"
    assert all(p.get_health().jobs_created_count > 0 for p in pollers), "both pollers should have worked"
    assert sum(p.get_health().jobs_created_count for p in pollers) == 1500
    assert await statuses(db, orders) == {"queued": 1500}
    assert len(await queue_service.list_jobs()) == 1500


async def test_queue_service_down_leaves_rows_pending_until_it_is_back(
    postgres: PostgresServer,
    db: asyncpg.Connection,
    orders: str,
    restartable_queue_service: RestartableQueueService,
) -> None:
    qs = restartable_queue_service
    await insert_orders(db, orders, 40)
    async with HttpJobCreator(qs.url, deadline=0.3, backoff_max=0.05) as http:
        # the first batch goes through; the rest wait until the queue service is down
        creator = CountingJobCreator(http, delay=0.05, hold_after=5)
        trigger = DatabasePollingTrigger(
            job_creator=creator, config=spec(orders, batchSize=5), dsn=postgres.dsn, template=TEMPLATE
        )
        await trigger.start()
        try:
            await eventually(lambda: trigger.get_health().jobs_created_count >= 5)
            await qs.stop()
            creator.release()
            failures = trigger.get_health().errors_count
            await eventually(lambda: trigger.get_health().errors_count >= failures + 2)
            assert trigger.is_running, "the database side is fine; only job creation waits"
            pending = (await statuses(db, orders)).get("pending", 0)
            assert 0 < pending < 40
            await insert_orders(db, orders, 10, start=40)
            await qs.start()
            await eventually(lambda: statuses_done(db, orders), timeout=30)
        finally:
            await trigger.stop()
    jobs = await qs.list_jobs()
    assert len(jobs) == 50, "no row lost"
    assert len({job.idempotency_key for job in jobs}) == 50, "no row duplicated"
    assert trigger.get_health().last_error is not None


async def statuses_done(db: asyncpg.Connection, table: str) -> bool:
    return await statuses(db, table) == {"queued": await db.fetchval(f"SELECT count(*) FROM {table}")}


async def test_rejected_rows_are_marked_failed(
    postgres: PostgresServer, db: asyncpg.Connection, orders: str, queue_service_factory: Any
) -> None:
    qs = await queue_service_factory(max_body_bytes=2000)
    await insert_orders(db, orders, 3)
    await db.execute(f"INSERT INTO {orders} (customer) VALUES ($1)", "x" * 5000)
    for depth in (100, 5000):  # outside the input policy: refused before the queue service sees them
        await db.execute(f"INSERT INTO {orders} (details) VALUES ($1)", "[" * depth + "]" * depth)
    events = RecordingEvents()
    async with HttpJobCreator(qs.url) as creator:
        trigger = DatabasePollingTrigger(
            job_creator=creator,
            config=spec(orders, failedValue="failed"),
            dsn=postgres.dsn,
            template=TEMPLATE,
            events=events,
        )
        await trigger.start()
        try:
            await eventually(lambda: statuses_match(db, orders, {"queued": 3, "failed": 3}))
        finally:
            await trigger.stop()
    assert {e[1] for e in events.events} == {"JobRejected"}
    assert trigger.get_health().errors_count == 3
    assert len(await qs.list_jobs()) == 3


async def statuses_match(db: asyncpg.Connection, table: str, expected: dict[str, int]) -> bool:
    return await statuses(db, table) == expected


async def test_database_restart_mid_stream(
    postgres_running: PostgresServer, db: asyncpg.Connection, orders: str
) -> None:
    await insert_orders(db, orders, 10)
    creator = InMemoryJobCreator()
    trigger = DatabasePollingTrigger(
        job_creator=creator, config=spec(orders), dsn=postgres_running.dsn, template=TEMPLATE
    )
    await trigger.start()
    try:
        await eventually(lambda: len(creator.jobs) == 10)
        await asyncio.to_thread(postgres_running.restart)
        conn = await asyncpg.connect(postgres_running.dsn)
        try:
            await insert_orders(conn, orders, 10, start=10)
            await eventually(lambda: len(creator.jobs) == 20, timeout=30)
            await eventually(lambda: statuses_match(conn, orders, {"queued": 20}))  # committed after the jobs
        finally:
            await conn.close()
        await eventually(lambda: trigger.is_running)
    finally:
        await trigger.stop()
    assert trigger.get_health().errors_count >= 1


@pytest.mark.parametrize("case", ["no-table", "no-column", "bad-password", "unreachable"])
async def test_start_fails_with_an_actionable_message(
    postgres: PostgresServer, orders: str, case: str
) -> None:
    dsn, config = postgres.dsn, spec(orders)
    if case == "no-table":
        config = spec("no_such_table")
    elif case == "no-column":
        config = spec(orders, statusColumn="State")
    elif case == "bad-password":
        dsn = dsn.replace(postgres.password, "wrong-Pa55word")
    else:
        dsn = f"postgresql://portico:{postgres.password}@127.0.0.1:1/portico"
    trigger = DatabasePollingTrigger(
        job_creator=InMemoryJobCreator(), config=config, dsn=dsn, template=TEMPLATE
    )
    with pytest.raises(TriggerStartError) as info:
        await trigger.start()
    assert not trigger.is_running
    reason = {
        "no-table": "TableNotFound",
        "no-column": "ColumnNotFound",
        "bad-password": "AuthenticationFailed",
        "unreachable": "DatabaseUnreachable",
    }[case]
    assert info.value.reason == reason
    assert info.value.retryable
    message = str(info.value)
    assert postgres.password not in message and "wrong-Pa55word" not in message
    assert "127.0.0.1" in message or orders in message or "no_such_table" in message
    await trigger.stop()


async def test_stop_while_the_queue_is_slow_finishes_the_batch(
    postgres: PostgresServer, db: asyncpg.Connection, orders: str
) -> None:
    await insert_orders(db, orders, 5)
    creator = CountingJobCreator(InMemoryJobCreator(), delay=0.2)
    trigger = DatabasePollingTrigger(
        job_creator=creator, config=spec(orders), dsn=postgres.dsn, template=TEMPLATE
    )
    await trigger.start()
    await eventually(lambda: len(creator.calls) >= 1)
    await trigger.stop()
    assert await statuses(db, orders) == {"queued": 5}
    assert trigger.get_health().jobs_created_count == 5
