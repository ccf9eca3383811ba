"""The PostgreSQL source as the operator builds it: `spec.databasePoll`, the DSN from a Secret, into the real
queue service."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import StaticSecrets, TriggerContext
from portico.sources.database_poll import DatabasePollSource, DatabasePollSpec
from portico.testing.services import PostgresServer
from tests.sources.conftest import RecordingEvents, eventually
from tests.sources.database_poll.conftest import TEMPLATE, insert_orders, spec, statuses, statuses_match

pytestmark = pytest.mark.services


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


def test_a_manifest_without_dsn_secret_fails_clearly() -> None:
    context = TriggerContext(
        ref=TriggerRef(name="t"),
        template=TEMPLATE,
        job_creator=InMemoryJobCreator(),
        events=RecordingEvents(),
    )
    with pytest.raises(TriggerStartError, match="dsnSecretRef is required") as info:
        DatabasePollSource().build(DatabasePollSpec(table="items"), context)
    assert not info.value.retryable
    assert DatabasePollSource().secret_refs(DatabasePollSpec(table="items")) == ()
