"""The SQL of one spec. Table and column names come from users, so they are validated as plain
identifiers and always double-quoted; values only ever travel as query parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from portico.sources.database_poll.spec import IDENTIFIER, DatabasePollSpec

INTEGER_TYPES = frozenset({"int2", "int4", "int8"})


def quote_identifier(name: str) -> str:
    """One identifier, double-quoted as PostgreSQL's `quote_ident` would: the only way a name from a spec
    reaches SQL text. Names are case-sensitive once quoted."""
    if not re.fullmatch(IDENTIFIER, name):
        raise ValueError(f"{name!r} is not a valid identifier (letters, digits, _ and $; at most 63)")
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str) -> str:
    """`table` or `schema.table`, each part quoted."""
    parts = name.split(".")
    if len(parts) > 2:
        raise ValueError(f"{name!r} is not a table name (write `table` or `schema.table`)")
    return ".".join(quote_identifier(part) for part in parts)


@dataclass(frozen=True)
class ClaimStatements:
    """The claim and mark statements of one spec; built once, with every name quoted.

    The generated claim takes `$1` the pending value, `$2` the batch size and, with a maximum age, `$3`
    the age in seconds; a custom claim takes `$1` the batch size. The mark takes `$1` the new status value
    and `$2` the array of ids."""

    claim: str
    mark: str
    custom: bool
    windowed: bool = False

    @classmethod
    def for_spec(cls, spec: DatabasePollSpec) -> ClaimStatements:
        table = quote_table(spec.table)
        id_col = quote_identifier(spec.id_column)
        status_col = quote_identifier(spec.status_column)
        mark = f"UPDATE {table} SET {status_col} = $1 WHERE {id_col} = ANY($2)"
        if spec.query is not None:
            return cls(claim=spec.query, mark=mark, custom=True)
        if spec.payload_columns is None:
            columns = "*"
        else:
            names = dict.fromkeys([spec.id_column, *spec.payload_columns])
            columns = ", ".join(quote_identifier(name) for name in names)
        window = ""
        if spec.created_at_column is not None:
            window = f" AND {quote_identifier(spec.created_at_column)} > now() - make_interval(secs => $3)"
        claim = (
            f"SELECT {columns} FROM {table} WHERE {status_col} = $1{window} "
            f"ORDER BY {id_col} LIMIT $2 FOR UPDATE SKIP LOCKED"
        )
        return cls(claim=claim, mark=mark, custom=False, windowed=bool(window))

    def claim_arguments(self, spec: DatabasePollSpec, pending: Any) -> tuple[Any, ...]:
        if self.custom:
            return (spec.batch_size,)
        if self.windowed:
            return (pending, spec.batch_size, float(spec.max_age_seconds or 0))
        return (pending, spec.batch_size)


def status_value(value: str, type_name: str) -> Any:
    """A status value of the spec (always a string in YAML) as the column's type wants it."""
    if type_name in INTEGER_TYPES:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    if type_name == "bool":
        lowered = value.lower()
        if lowered in ("true", "t", "yes", "1"):
            return True
        if lowered in ("false", "f", "no", "0"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    return value
