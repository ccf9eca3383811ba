"""Row values as JSON payloads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from portico.domain.input_policy import Unreadable
from portico.sources.database_poll import json_safe
from portico.sources.database_poll.values import row_payload


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


def test_row_payload_picks_columns() -> None:
    row = {"id": 1, "status": "pending", "amount": Decimal("2.50"), "note": None}
    assert row_payload(row, None, "status") == {"id": 1, "amount": "2.50", "note": None}
    assert row_payload(row, ["amount", "missing"], "status") == {"amount": "2.50"}
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert isinstance(row_payload({"j": deep}, None, "status")["j"], Unreadable)
