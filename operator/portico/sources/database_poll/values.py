"""Row values as JSON: what a job payload can carry of a PostgreSQL row, without losing precision."""

from __future__ import annotations

import base64
import ipaddress
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from portico.domain.input_policy import RULE_DEPTH, Unreadable


def json_safe(value: Any) -> Any:
    """A column value as JSON: timestamps as ISO 8601, decimals as strings (no precision lost), UUIDs and
    network addresses as strings, bytes as base64, intervals as seconds; arrays and json(b) recursively."""
    if value is None or isinstance(value, bool | int | str | Unreadable):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(
        value,
        ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network
        | ipaddress.IPv4Interface
        | ipaddress.IPv6Interface,
    ):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, asyncpg.Range):
        return {"lower": json_safe(value.lower), "upper": json_safe(value.upper)}
    if isinstance(value, Sequence | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


class Row(Protocol):
    """A result row by column name (asyncpg's `Record`, a dict)."""

    def keys(self) -> Iterable[str]: ...
    def __getitem__(self, name: str) -> Any: ...


def row_payload(row: Row, names: Sequence[str] | None, status_column: str) -> dict[str, Any]:
    """The payload of one row: the `names` columns (all but the status column when None), as JSON. A
    json(b) value nested past the input policy's depth becomes an `Unreadable`, which the policy
    refuses with a clear message."""
    columns = list(row.keys())
    chosen = names if names is not None else [name for name in columns if name != status_column]
    present = set(columns)
    payload: dict[str, Any] = {}
    for name in chosen:
        if name in present:
            try:
                payload[name] = json_safe(row[name])
            except RecursionError:
                payload[name] = Unreadable(RULE_DEPTH, "a json(b) value nested too deeply")
    return payload
