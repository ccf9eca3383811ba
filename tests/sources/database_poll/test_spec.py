"""The PostgreSQL polling spec: its defaults on the wire and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portico.sources.database_poll import DatabasePollSpec
from tests.sources.database_poll.conftest import spec


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
        ({"createdAtColumn": "created_at"}, "go together"),
        ({"maxAgeSeconds": 60}, "go together"),
        (
            {
                "createdAtColumn": "c",
                "maxAgeSeconds": 60,
                "query": "SELECT * FROM t LIMIT $1 FOR UPDATE SKIP LOCKED",
            },
            "does not apply",
        ),
    ],
)
def test_spec_rejects(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**{"table": "orders", **fields})
    assert message in str(info.value)


def test_the_dsn_secret_is_optional_in_python_and_required_in_a_manifest() -> None:
    assert DatabasePollSpec(table="items").dsn_secret_ref is None
    assert "dsnSecretRef" in DatabasePollSpec.model_json_schema(by_alias=True)["required"]
