"""The PostgreSQL polling trigger against a real PostgreSQL server and the real queue service: rows become
jobs exactly once, whatever stops in between, and two pollers never claim the same row."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.sources.database_poll import DatabasePollingTrigger
from portico.testing.services import PostgresServer
from tests.sources.conftest import CountingJobCreator, RecordingEvents, RestartableQueueService, eventually
from tests.sources.database_poll.conftest import (
    TEMPLATE,
    insert_orders,
    spec,
    statuses,
    statuses_done,
    statuses_match,
)

pytestmark = pytest.mark.services


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
        creator, postgres.dsn, spec=spec(orders, query=query, payloadColumns=["customer"]), template=TEMPLATE
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
        creator,
        postgres.dsn,
        spec=spec(
            f"{schema}.Tasks", idColumn="task_id", statusColumn="state", pendingValue="0", queuedValue="1"
        ),
        template=TEMPLATE,
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
                creator,
                postgres.dsn,
                spec=spec(orders, batchSize=50),
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
            creator, postgres.dsn, spec=spec(orders, batchSize=5), template=TEMPLATE
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
            creator, postgres.dsn, spec=spec(orders, failedValue="failed"), template=TEMPLATE, events=events
        )
        await trigger.start()
        try:
            await eventually(lambda: statuses_match(db, orders, {"queued": 3, "failed": 3}))
        finally:
            await trigger.stop()
    assert {e[1] for e in events.events} == {"JobRejected"}
    assert trigger.get_health().errors_count == 3
    assert len(await qs.list_jobs()) == 3


async def test_database_restart_mid_stream(
    postgres_running: PostgresServer, db: asyncpg.Connection, orders: str
) -> None:
    await insert_orders(db, orders, 10)
    creator = InMemoryJobCreator()
    trigger = DatabasePollingTrigger(creator, postgres_running.dsn, spec=spec(orders), template=TEMPLATE)
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
    trigger = DatabasePollingTrigger(InMemoryJobCreator(), dsn, spec=config, template=TEMPLATE)
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
    trigger = DatabasePollingTrigger(creator, postgres.dsn, spec=spec(orders), template=TEMPLATE)
    await trigger.start()
    await eventually(lambda: len(creator.calls) >= 1)
    await trigger.stop()
    assert await statuses(db, orders) == {"queued": 5}
    assert trigger.get_health().jobs_created_count == 5


async def test_only_rows_within_the_maximum_age_are_claimed(
    postgres: PostgresServer, db: asyncpg.Connection, orders: str
) -> None:
    await insert_orders(db, orders, 4)
    await db.execute(
        f"UPDATE {orders} SET placed_at = now() - interval '2 hours' WHERE customer IN ('c0', 'c1')"
    )
    creator = InMemoryJobCreator()
    trigger = DatabasePollingTrigger(
        creator,
        postgres.dsn,
        spec=spec(orders, createdAtColumn="placed_at", maxAgeSeconds=3600),
        template=TEMPLATE,
    )
    await trigger.start()
    try:
        await eventually(lambda: len(creator.jobs) == 2)
        await asyncio.sleep(0.3)
    finally:
        await trigger.stop()
    assert sorted(job.payload["customer"] for job in creator.jobs.values()) == ["c2", "c3"]
    assert await statuses(db, orders) == {"queued": 2, "pending": 2}


async def test_the_seed_constructor_polls_items_every_minute_over_an_hour(
    postgres: PostgresServer, db: asyncpg.Connection
) -> None:
    """Library use as in the seed: `database` is the connection string (or anything with `.dsn`)."""
    schema = f"seed_{uuid.uuid4().hex[:6]}"
    await db.execute(
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.items (id serial PRIMARY KEY, "
        "status text NOT NULL, data text, created_at timestamptz NOT NULL DEFAULT now())"
    )
    trigger = DatabasePollingTrigger(InMemoryJobCreator(), postgres, table=f"{schema}.items")
    assert trigger.spec.interval_seconds == 60 and trigger.spec.max_age_seconds == 3600
    assert trigger.spec.created_at_column == "created_at"
    assert trigger.emitter.template is not None
    assert (trigger.emitter.template.type, trigger.emitter.template.queue) == ("item.process", "processing")
    sqlalchemy_style = DatabasePollingTrigger(
        InMemoryJobCreator(),
        postgres.dsn.replace("postgresql://", "postgresql+asyncpg://"),
        5,
        table=f"{schema}.items",
    )
    await sqlalchemy_style.start()
    try:
        assert sqlalchemy_style.is_running
    finally:
        await sqlalchemy_style.stop()
    await db.execute(f"DROP SCHEMA {schema} CASCADE")
    with pytest.raises(TypeError, match="not both"):
        DatabasePollingTrigger(InMemoryJobCreator(), postgres.dsn, 5, spec=spec("t"))
    with pytest.raises(ValueError, match="go together"):
        DatabasePollingTrigger(InMemoryJobCreator(), postgres.dsn, max_age_seconds=None)
