"""The SQL of a spec: names always quoted, the claim and mark statements, status values converted to the
column's type."""

from __future__ import annotations

import pytest

from portico.sources.database_poll import ClaimStatements, quote_identifier, quote_table
from portico.sources.database_poll.sql import status_value
from tests.sources.database_poll.conftest import spec


def test_identifiers_are_always_quoted() -> None:
    assert quote_identifier("Orders") == '"Orders"'
    assert quote_table("sales.orders") == '"sales"."orders"'
    for bad in ('x"; DROP TABLE y; --', "a b", "", "1abc", "a" * 64):
        with pytest.raises(ValueError):
            quote_identifier(bad)


def test_claim_statements() -> None:
    plain = ClaimStatements.for_spec(spec("sales.Orders", payloadColumns=["amount"]))
    assert plain.claim == (
        'SELECT "id", "amount" FROM "sales"."Orders" WHERE "status" = $1 '
        'ORDER BY "id" LIMIT $2 FOR UPDATE SKIP LOCKED'
    )
    assert plain.mark == 'UPDATE "sales"."Orders" SET "status" = $1 WHERE "id" = ANY($2)'
    assert plain.claim_arguments(spec("t"), "pending") == ("pending", 100)
    windowed = ClaimStatements.for_spec(spec("items", createdAtColumn="created_at", maxAgeSeconds=3600))
    assert 'AND "created_at" > now() - make_interval(secs => $3)' in windowed.claim
    assert windowed.claim_arguments(
        windowed_spec := spec("items", createdAtColumn="c", maxAgeSeconds=60), "p"
    ) == (
        "p",
        windowed_spec.batch_size,
        60.0,
    )
    query = "SELECT id FROM t WHERE ok LIMIT $1 FOR UPDATE SKIP LOCKED"
    custom = ClaimStatements.for_spec(spec("t", query=query))
    assert custom.custom and custom.claim == query
    assert custom.claim_arguments(spec("t", query=query, batchSize=7), None) == (7,)


def test_status_values_take_the_column_type() -> None:
    assert status_value("3", "int2") == 3
    assert status_value("Yes", "bool") is True and status_value("f", "bool") is False
    assert status_value("pending", "text") == "pending"
    with pytest.raises(ValueError, match="not an integer"):
        status_value("x", "int8")
    with pytest.raises(ValueError, match="not a boolean"):
        status_value("maybe", "bool")
