"""The PostgreSQL polling source (`spec.databasePoll`): rows of a table become jobs.

Every `intervalSeconds` the trigger claims a batch of pending rows with `SELECT ... FOR UPDATE SKIP
LOCKED`, creates one job per row, and marks the rows whose job was accepted as queued, all in one
transaction. Rows locked by another poller are skipped, so any number of pollers (operator replicas,
other consumers of the same table) never claim the same row; a row whose job was not accepted stays
pending and is tried again on the next poll. The idempotency key of a row's job is derived from its id,
so a commit lost after the jobs were created (the database went away) re-creates nothing.

Table and column names come from users, so they are validated as plain identifiers and always double-
quoted; values only ever travel as query parameters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import asyncpg
from pydantic import ConfigDict, Field, field_validator, model_validator

from portico.domain.input_policy import RULE_DEPTH, Unreadable, decode_lenient
from portico.domain.model import SpecModel
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.common.emitter import JobEmitter

logger = logging.getLogger(__name__)

SOURCE = "databasePoll"
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
IDENTIFIER_PATTERN = rf"^{IDENTIFIER}$"
TABLE_PATTERN = rf"^{IDENTIFIER}(\.{IDENTIFIER})?$"
CUSTOM_QUERY_START = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
SKIP_LOCKED = re.compile(r"\bfor\s+(no\s+key\s+)?update\b.*\bskip\s+locked\b", re.IGNORECASE | re.DOTALL)
BATCH_PARAMETER = re.compile(r"\$1(?!\d)")
MAX_IN_FLIGHT = 32
CONNECT_TIMEOUT = 10.0
STOP_GRACE_SECONDS = 10.0
MAX_RETRY_DELAY = 60.0
INTEGER_TYPES = frozenset({"int2", "int4", "int8"})
CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)


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


def describe_dsn(dsn: str) -> str:
    """`host:port/database` of a DSN (URL or `key=value` form): enough to recognise it, nothing secret."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        database = unquote(parts.path.lstrip("/")) or (parts.username or "")
        return f"{host}:{port}/{database}"
    fields: dict[str, str] = {
        key: value.strip("'") for key, value in re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    }
    database = fields.get("dbname", fields.get("user", ""))
    return f"{fields.get('host', 'localhost')}:{fields.get('port', '5432')}/{database}"


def _dsn_password(dsn: str) -> str | None:
    if "://" in dsn:
        password = urlsplit(dsn).password
        return unquote(password) if password else None
    found = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    return found.group(1).strip("'") if found else None


class DatabasePollSpec(SpecModel):
    """Claim pending rows of a PostgreSQL table and create one job per row.

    Rows whose `statusColumn` equals `pendingValue` are claimed in batches with FOR UPDATE SKIP LOCKED, so
    several pollers never claim the same row; a row is set to `queuedValue` in the same transaction once
    the queue service accepted its job. The job's idempotency key is derived from the row id."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
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
            ]
        }
    )

    dsn_secret_ref: SecretRef = Field(
        description="Secret key holding the PostgreSQL connection string "
        "(postgresql://user:password@host:5432/db, or libpq key=value form)."
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
    def _status_values_differ(self) -> DatabasePollSpec:
        if self.pending_value == self.queued_value:
            raise ValueError("pendingValue and queuedValue must differ")
        if self.failed_value is not None and self.failed_value in (self.pending_value, self.queued_value):
            raise ValueError("failedValue must differ from pendingValue and queuedValue")
        return self


@dataclass(frozen=True)
class ClaimStatements:
    """The SQL of one spec; built once, with every name quoted."""

    claim: str
    mark: str
    custom: bool

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
        claim = (
            f"SELECT {columns} FROM {table} WHERE {status_col} = $1 "
            f"ORDER BY {id_col} LIMIT $2 FOR UPDATE SKIP LOCKED"
        )
        return cls(claim=claim, mark=mark, custom=False)


@dataclass
class _BatchOutcome:
    queued: list[Any]
    rejected: list[Any]
    retry_later: bool


class DatabasePollingTrigger(JobTrigger):
    """Polls one table. Library use: `DatabasePollingTrigger(job_creator=..., config=DatabasePollSpec(...),
    dsn="postgresql://...", template=JobTemplate(type="order.process"))`."""

    def __init__(
        self,
        *,
        job_creator: JobCreator,
        config: DatabasePollSpec,
        dsn: str,
        template: JobTemplate,
        ref: TriggerRef | None = None,
        events: TriggerEvents | None = None,
    ) -> None:
        self.config = config
        self.ref = ref or TriggerRef(name=f"databasePoll-{config.table}")
        self.emitter = JobEmitter(job_creator, ref=self.ref, source=SOURCE, template=template, events=events)
        self.statements = ClaimStatements.for_spec(config)
        self._dsn = dsn
        self._target = describe_dsn(dsn)
        self._password = _dsn_password(dsn)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._status_values: dict[str, Any] = {}
        self._connected = False
        self._last_poll: datetime | None = None
        self._last_poll_rows = 0
        self._failures = 0

    # --- JobTrigger -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = asyncio.Event()
        await self._connect()
        self._task = asyncio.create_task(self._run(), name=f"databasePoll {self.ref}")

    async def stop(self) -> None:
        """Let the batch in progress finish (its rows are marked or rolled back), then close."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECONDS)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close()

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done() and self._connected

    def get_health(self) -> TriggerHealth:
        status: dict[str, Any] = {"connected": self._connected, "lastPollRows": self._last_poll_rows}
        if self._last_poll is not None:
            status["lastPollTime"] = self._last_poll.isoformat()
        return self.emitter.health(is_running=self.is_running, source_status=status)

    # --- one poll ---------------------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Claim one batch, create its jobs and mark what was accepted, in one transaction. Returns the
        number of rows claimed. Raises what the database raises (the transaction is then rolled back)."""
        conn = self._conn
        if conn is None:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("not connected")
        async with conn.transaction():
            if self.statements.custom:
                rows = await conn.fetch(self.statements.claim, self.config.batch_size)
            else:
                rows = await conn.fetch(
                    self.statements.claim, self._status_values["pending"], self.config.batch_size
                )
            self._last_poll = datetime.now(UTC)
            self._last_poll_rows = len(rows)
            if not rows:
                return 0
            outcome = await self._create_jobs(rows)
            if outcome.queued:
                await conn.execute(self.statements.mark, self._status_values["queued"], outcome.queued)
            if outcome.rejected and self.config.failed_value is not None:
                await conn.execute(self.statements.mark, self._status_values["failed"], outcome.rejected)
        if outcome.retry_later:
            raise _QueueUnavailable(len(rows) - len(outcome.queued))
        return len(rows)

    async def _create_jobs(self, rows: Sequence[asyncpg.Record]) -> _BatchOutcome:
        """At most MAX_IN_FLIGHT creations at a time; after the first retryable failure no new ones start
        (the queue service is away), the rest stay pending."""
        outcome = _BatchOutcome(queued=[], rejected=[], retry_later=False)
        semaphore = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def create(row: asyncpg.Record) -> None:
            async with semaphore:
                if outcome.retry_later:
                    return
                row_id = row[self.config.id_column]
                try:
                    await self.emitter.emit(
                        payload=self._payload(row),
                        metadata={"databasePoll.table": self.config.table, "databasePoll.id": str(row_id)},
                        idempotency_key=f"{SOURCE}/{self.ref.key}/{self.config.table}/{row_id}",
                    )
                except JobCreationError as exc:
                    if exc.retryable:
                        outcome.retry_later = True
                    else:
                        outcome.rejected.append(row_id)
                        self.emitter.events.event(
                            "Warning", "JobRejected", f"row {row_id} of {self.config.table}: {exc}"
                        )
                    return
                outcome.queued.append(row_id)

        await asyncio.gather(*(create(row) for row in rows))
        return outcome

    def _payload(self, row: asyncpg.Record) -> dict[str, Any]:
        if self.config.payload_columns is not None:
            names: Sequence[str] = self.config.payload_columns
        else:
            # a Record iterates over its values, not its keys
            names = [name for name in row.keys() if name != self.config.status_column]  # noqa: SIM118
        columns = set(row.keys())
        payload: dict[str, Any] = {}
        for name in names:
            if name in columns:
                try:
                    payload[name] = json_safe(row[name])
                except RecursionError:
                    payload[name] = Unreadable(RULE_DEPTH, "a json(b) value nested too deeply")
        return payload

    # --- loop and connection ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            delay = self.config.interval_seconds
            try:
                if self._conn is None:
                    await self._connect()
                claimed = await self.poll_once()
                self._failures = 0
                if claimed >= self.config.batch_size:
                    continue
            except _QueueUnavailable as exc:
                self._failures += 1
                logger.info("%s: %d rows stay pending until the queue service answers", self.ref, exc.pending)
            except CONNECTION_ERRORS as exc:
                self._failures += 1
                self.emitter.record_error(f"database {self._target}: {self._redact(_describe(exc))}")
                await self._close()
                delay = min(
                    max(self.config.interval_seconds, 1.0) * 2 ** (self._failures - 1), MAX_RETRY_DELAY
                )
            except TriggerStartError as exc:
                self._failures += 1
                self.emitter.record_error(str(exc))
                delay = min(
                    max(self.config.interval_seconds, 1.0) * 2 ** (self._failures - 1), MAX_RETRY_DELAY
                )
            except asyncpg.PostgresError as exc:
                self._failures += 1
                self.emitter.record_error(f"polling {self.config.table}: {self._redact(_describe(exc))}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _connect(self) -> None:
        """Connect and check the statements against the real table, so that a typo in a name fails at
        start with a message that names it."""
        try:
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        except asyncpg.InvalidPasswordError as exc:
            raise TriggerStartError(
                f"PostgreSQL at {self._target} refused the credentials: {self._redact(str(exc))}",
                reason="AuthenticationFailed",
            ) from None
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise TriggerStartError(
                f"cannot connect to PostgreSQL at {self._target}: {self._redact(_describe(exc))}",
                reason="DatabaseUnreachable",
            ) from None
        try:
            for codec in ("json", "jsonb"):
                await conn.set_type_codec(
                    codec, encoder=json.dumps, decoder=decode_lenient, schema="pg_catalog"
                )
            await self._prepare(conn)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        if not self._connected:
            self._connected = True
            self.emitter.events.changed()

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        try:
            claim = await conn.prepare(self.statements.claim)
            mark = await conn.prepare(self.statements.mark)
        except asyncpg.exceptions.UndefinedTableError:
            raise TriggerStartError(
                f"table {self.config.table} does not exist in {self._target}", reason="TableNotFound"
            ) from None
        except asyncpg.exceptions.UndefinedColumnError as exc:
            raise TriggerStartError(
                f"table {self.config.table}: {exc} (column names are case-sensitive)", reason="ColumnNotFound"
            ) from None
        except asyncpg.exceptions.InsufficientPrivilegeError as exc:
            raise TriggerStartError(f"table {self.config.table}: {exc}", reason="PermissionDenied") from None
        except asyncpg.PostgresSyntaxError as exc:
            raise TriggerStartError(f"query: {exc}", reason="InvalidQuery", retryable=False) from None
        if self.config.id_column not in [attr.name for attr in claim.get_attributes()]:
            raise TriggerStartError(
                f"the claim query does not return the id column {self.config.id_column!r}",
                reason="InvalidQuery",
                retryable=False,
            )
        status_type = mark.get_parameters()[0]
        values = {"pending": self.config.pending_value, "queued": self.config.queued_value}
        if self.config.failed_value is not None:
            values["failed"] = self.config.failed_value
        try:
            self._status_values = {k: _status_value(v, status_type.name) for k, v in values.items()}
        except ValueError as exc:
            raise TriggerStartError(
                f"{self.config.status_column} is of type {status_type.name}: {exc}",
                reason="InvalidStatusValue",
                retryable=False,
            ) from None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if self._connected:
            self._connected = False
            self.emitter.events.changed()
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()

    def _redact(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text.replace(self._dsn, self._target)


class _QueueUnavailable(Exception):
    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} rows left pending")
        self.pending = pending


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status_value(value: str, type_name: str) -> Any:
    """The spec's status value (always a string in YAML) as the column's type wants it."""
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


class DatabasePollSource(TriggerSource[DatabasePollSpec]):
    name: ClassVar[str] = SOURCE
    spec_model: ClassVar[type[SpecModel]] = DatabasePollSpec

    def secret_refs(self, spec: DatabasePollSpec) -> Sequence[SecretRef]:
        return (spec.dsn_secret_ref,)

    def build(self, spec: DatabasePollSpec, context: TriggerContext) -> JobTrigger:
        return DatabasePollingTrigger(
            job_creator=context.job_creator,
            config=spec,
            dsn=context.secrets.get(spec.dsn_secret_ref),
            template=context.template,
            ref=context.ref,
            events=context.events,
        )
