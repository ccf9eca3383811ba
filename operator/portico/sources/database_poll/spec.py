"""The PostgreSQL polling source's spec (`spec.databasePoll`): the one model the CRD, `portico validate`
and the library read."""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, field_validator, model_validator

from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef
from portico.sources.common.secret_ref import required_in_manifests

IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
IDENTIFIER_PATTERN = rf"^{IDENTIFIER}$"
TABLE_PATTERN = rf"^{IDENTIFIER}(\.{IDENTIFIER})?$"
CUSTOM_QUERY_START = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
SKIP_LOCKED = re.compile(r"\bfor\s+(no\s+key\s+)?update\b.*\bskip\s+locked\b", re.IGNORECASE | re.DOTALL)
BATCH_PARAMETER = re.compile(r"\$1(?!\d)")
RULES: list[dict[str, str]] = [
    {
        "rule": "self.pendingValue != self.queuedValue",
        "message": "pendingValue and queuedValue must differ",
    },
    {
        "rule": "!has(self.failedValue) || (self.failedValue != self.pendingValue "
        "&& self.failedValue != self.queuedValue)",
        "message": "failedValue must differ from pendingValue and queuedValue",
    },
    {
        "rule": "!has(self.query) || self.query.contains('$1')",
        "message": "query must use $1 for the batch size",
    },
    {
        "rule": "!has(self.query) || self.query.matches(r"
        "'(?is)^\\s*(select|with)\\b.*\\bfor\\s+(no\\s+key\\s+)?update\\b.*\\bskip\\s+locked\\b')",
        "message": "query must be a SELECT that locks its rows with FOR UPDATE SKIP LOCKED",
    },
    {
        "rule": "has(self.createdAtColumn) == has(self.maxAgeSeconds)",
        "message": "createdAtColumn and maxAgeSeconds go together",
    },
    {
        "rule": "!has(self.query) || !has(self.createdAtColumn)",
        "message": "a custom query selects its own rows: createdAtColumn does not apply to it",
    },
]


class DatabasePollSpec(SpecModel):
    """Claim pending rows of a PostgreSQL table and create one job per row.

    Rows whose `statusColumn` equals `pendingValue` are claimed in batches with FOR UPDATE SKIP LOCKED, so
    several pollers never claim the same row; a row is set to `queuedValue` in the same transaction once
    the queue service accepted its job. The job's idempotency key is derived from the row id."""

    model_config = ConfigDict(json_schema_extra=required_in_manifests("dsnSecretRef", RULES))

    dsn_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret key holding the PostgreSQL connection string "
        "(postgresql://user:password@host:5432/db, or libpq key=value form).",
    )

    table: str = Field(
        max_length=127,
        pattern=TABLE_PATTERN,
        description="Table to poll, `table` or `schema.table`. Names are quoted, so they are case-sensitive: "
        "write them as stored (lower case for tables created without quotes).",
    )
    id_column: str = Field(
        default="id",
        pattern=IDENTIFIER_PATTERN,
        description="Primary-key column; the job's idempotency key is "
        "derived from it, so each row yields at most one job.",
    )
    status_column: str = Field(
        default="status",
        pattern=IDENTIFIER_PATTERN,
        description="Column that marks a row as pending or queued.",
    )
    pending_value: str = Field(
        default="pending",
        min_length=1,
        max_length=253,
        description="Value of statusColumn for rows waiting for a job (converted to the column's type).",
    )
    queued_value: str = Field(
        default="queued",
        min_length=1,
        max_length=253,
        description="Value statusColumn is set to once the row's job was accepted.",
    )
    failed_value: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="If set, value statusColumn is set to when the queue service rejects a row's job for "
        "good (invalid payload); if unset such rows stay pending and are retried on every poll.",
    )
    payload_columns: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Columns copied into the job payload (merged over the template's payload); all columns "
        "except statusColumn when unset. Values are converted to JSON: timestamps as ISO 8601 strings, "
        "numerics as strings, UUIDs as strings, bytea as base64.",
    )
    batch_size: int = Field(default=100, ge=1, le=10000, description="Most rows claimed per transaction.")
    interval_seconds: float = Field(
        default=5.0,
        ge=0.1,
        le=86400,
        description="Seconds between polls. A full batch is followed by "
        "the next one at once, so a backlog drains without waiting.",
    )
    created_at_column: str | None = Field(
        default=None,
        pattern=IDENTIFIER_PATTERN,
        description="Timestamp column of a row's creation; with maxAgeSeconds, only rows younger than that "
        "are claimed (older pending rows are left alone).",
    )
    max_age_seconds: float | None = Field(
        default=None,
        gt=0,
        le=315360000,
        description="Claim only rows whose createdAtColumn is less than this many seconds before the "
        "database's now(). Needs createdAtColumn.",
    )
    query: str | None = Field(
        default=None,
        max_length=10000,
        description="Custom claim query instead of the generated one: a SELECT that returns at most $1 rows, "
        "including idColumn, and locks them with FOR UPDATE SKIP LOCKED. The claimed rows are still marked "
        "through table, idColumn and statusColumn.",
    )

    @field_validator("payload_columns")
    @classmethod
    def _payload_columns_are_identifiers(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if not re.fullmatch(IDENTIFIER, name):
                raise ValueError(f"payloadColumns: {name!r} is not a column name (letters, digits, _ and $)")
        return value

    @field_validator("query")
    @classmethod
    def _query_claims_safely(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not CUSTOM_QUERY_START.match(value):
            raise ValueError("query must be a SELECT (or WITH ... SELECT) statement")
        if not BATCH_PARAMETER.search(value):
            raise ValueError("query must use $1 for the batch size (e.g. LIMIT $1)")
        if not SKIP_LOCKED.search(value):
            raise ValueError(
                "query must lock the rows it returns with FOR UPDATE SKIP LOCKED, or two pollers "
                "could claim the same row"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatabasePollSpec:
        if self.pending_value == self.queued_value:
            raise ValueError("pendingValue and queuedValue must differ")
        if self.failed_value is not None and self.failed_value in (self.pending_value, self.queued_value):
            raise ValueError("failedValue must differ from pendingValue and queuedValue")
        if (self.created_at_column is None) != (self.max_age_seconds is None):
            raise ValueError("createdAtColumn and maxAgeSeconds go together")
        if self.query is not None and self.created_at_column is not None:
            raise ValueError("a custom query selects its own rows: createdAtColumn does not apply to it")
        return self
