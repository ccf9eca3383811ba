"""Shared parts of the PostgreSQL source's tests: a connection to the session server, a fresh orders
table per test, and helpers to fill it and read its statuses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from portico.domain.trigger import JobTemplate, SecretRef
from portico.sources.database_poll import DatabasePollSpec
from portico.testing.services import PostgresServer

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


async def statuses_match(db: asyncpg.Connection, table: str, expected: dict[str, int]) -> bool:
    return await statuses(db, table) == expected


async def statuses_done(db: asyncpg.Connection, table: str) -> bool:
    return await statuses(db, table) == {"queued": await db.fetchval(f"SELECT count(*) FROM {table}")}
