"""The PostgreSQL polling trigger: rows of a table become jobs.

Every `intervalSeconds` the trigger claims a batch of pending rows with `SELECT ... FOR UPDATE SKIP
LOCKED`, creates one job per row, and marks the rows whose job was accepted as queued, all in one
transaction. Rows locked by another poller are skipped, so any number of pollers (operator replicas,
other consumers of the same table) never claim the same row; a row whose job was not accepted stays
pending and is tried again on the next poll. The idempotency key of a row's job is derived from its id,
so a commit lost after the jobs were created (the database went away) re-creates nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from portico.domain.input_policy import decode_lenient
from portico.domain.redaction import Redactor, dsn_location, dsn_password
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.sources.common.emitter import JobEmitter
from portico.sources.database_poll.spec import DatabasePollSpec
from portico.sources.database_poll.sql import ClaimStatements, status_value
from portico.sources.database_poll.values import row_payload

logger = logging.getLogger(__name__)

SOURCE = "databasePoll"
DEFAULT_POLL_INTERVAL = 60.0
MAX_IN_FLIGHT = 32
CONNECT_TIMEOUT = 10.0
STOP_GRACE_SECONDS = 10.0
MAX_RETRY_DELAY = 60.0
CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InternalClientError,
)
DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+\w+://")


class HasDsn(Protocol):
    """A database handle that knows its connection string (a test server, an application's settings)."""

    @property
    def dsn(self) -> str: ...


def dsn_of(database: str | HasDsn) -> str:
    """The libpq connection string of `database`; a SQLAlchemy-style `postgresql+asyncpg://` URL loses
    its driver suffix."""
    dsn = database if isinstance(database, str) else database.dsn
    if not isinstance(dsn, str) or not dsn.strip():
        raise TypeError("database must be a PostgreSQL connection string or have a `dsn` attribute")
    return DRIVER_SUFFIX.sub(r"\1://", dsn)


@dataclass
class _BatchOutcome:
    queued: list[Any]
    rejected: list[Any]
    retry_later: bool


class DatabasePollingTrigger(JobTrigger):
    """Polls one table and creates one job per pending row.

    As in the seed: `DatabasePollingTrigger(job_creator=job_service, database=database,
    poll_interval_seconds=30)` polls the `items` table every 60 seconds unless told otherwise, for rows
    whose `status` is `pending` and whose `created_at` lies within the last hour, creates an `item.process`
    job in queue `processing` for each, and marks it `queued`. `database` is a PostgreSQL connection
    string (or anything with a `dsn` attribute). The spec's other options are keyword arguments; the
    operator passes a parsed `spec` (the DSN read from its Secret) and the resource's `template` instead.
    """

    def __init__(
        self,
        job_creator: JobCreator,
        database: str | HasDsn,
        poll_interval_seconds: float = DEFAULT_POLL_INTERVAL,
        *,
        spec: DatabasePollSpec | None = None,
        template: JobTemplate | None = None,
        table: str = "items",
        job_type: str = "item.process",
        queue_name: str = "processing",
        created_at_column: str | None = "created_at",
        max_age_seconds: float | None = 3600,
        ref: TriggerRef | None = None,
        events: TriggerEvents | None = None,
        **options: Any,
    ) -> None:
        if spec is None:
            spec = DatabasePollSpec.model_validate(
                {
                    "table": table,
                    "interval_seconds": poll_interval_seconds,
                    "created_at_column": created_at_column,
                    "max_age_seconds": max_age_seconds,
                    **options,
                }
            )
        elif options or poll_interval_seconds != DEFAULT_POLL_INTERVAL:
            raise TypeError("give DatabasePollingTrigger either a spec or options, not both")
        self.spec = spec
        self.ref = ref or TriggerRef(name=f"databasePoll-{spec.table}")
        template = template or JobTemplate(type=job_type, queue=queue_name)
        self.emitter = JobEmitter(job_creator, ref=self.ref, source=SOURCE, template=template, events=events)
        self.statements = ClaimStatements.for_spec(spec)
        self._dsn = dsn_of(database)
        self._target = dsn_location(self._dsn)
        self._redact = Redactor([dsn_password(self._dsn)])
        self._redact.add(self._dsn, self._target)
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
            arguments = self.statements.claim_arguments(self.spec, self._status_values.get("pending"))
            rows = await conn.fetch(self.statements.claim, *arguments)
            self._last_poll = datetime.now(UTC)
            self._last_poll_rows = len(rows)
            if not rows:
                return 0
            outcome = await self._create_jobs(rows)
            if outcome.queued:
                await conn.execute(self.statements.mark, self._status_values["queued"], outcome.queued)
            if outcome.rejected and self.spec.failed_value is not None:
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
                row_id = row[self.spec.id_column]
                try:
                    await self.emitter.emit(
                        payload=row_payload(row, self.spec.payload_columns, self.spec.status_column),
                        metadata={"databasePoll.table": self.spec.table, "databasePoll.id": str(row_id)},
                        idempotency_key=f"{SOURCE}/{self.ref.key}/{self.spec.table}/{row_id}",
                    )
                except JobCreationError as exc:
                    if exc.retryable:
                        outcome.retry_later = True
                    else:
                        outcome.rejected.append(row_id)
                        self.emitter.events.event(
                            "Warning", "JobRejected", f"row {row_id} of {self.spec.table}: {exc}"
                        )
                    return
                outcome.queued.append(row_id)

        await asyncio.gather(*(create(row) for row in rows))
        return outcome

    # --- loop and connection ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            delay = self.spec.interval_seconds
            try:
                if self._conn is None:
                    await self._connect()
                claimed = await self.poll_once()
                self._failures = 0
                if claimed >= self.spec.batch_size:
                    continue
            except _QueueUnavailable as exc:
                self._failures += 1
                logger.info("%s: %d rows stay pending until the queue service answers", self.ref, exc.pending)
            except CONNECTION_ERRORS as exc:
                self._failures += 1
                self.emitter.record_error(f"database {self._target}: {self._redact(_describe(exc))}")
                await self._close()
                delay = self._retry_delay()
            except TriggerStartError as exc:
                self._failures += 1
                self.emitter.record_error(str(exc))
                delay = self._retry_delay()
            except asyncpg.PostgresError as exc:
                self._failures += 1
                self.emitter.record_error(f"polling {self.spec.table}: {self._redact(_describe(exc))}")
            except Exception as exc:  # the loop must outlive whatever the driver raises mid-restart
                self._failures += 1
                logger.exception("%s: polling failed", self.ref)
                self.emitter.record_error(f"polling {self.spec.table}: {self._redact(_describe(exc))}")
                await self._close()
                delay = self._retry_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _retry_delay(self) -> float:
        delay: float = max(self.spec.interval_seconds, 1.0) * 2 ** (self._failures - 1)
        return min(delay, MAX_RETRY_DELAY)

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
                f"table {self.spec.table} does not exist in {self._target}", reason="TableNotFound"
            ) from None
        except asyncpg.exceptions.UndefinedColumnError as exc:
            raise TriggerStartError(
                f"table {self.spec.table}: {exc} (column names are case-sensitive)", reason="ColumnNotFound"
            ) from None
        except asyncpg.exceptions.InsufficientPrivilegeError as exc:
            raise TriggerStartError(f"table {self.spec.table}: {exc}", reason="PermissionDenied") from None
        except asyncpg.PostgresSyntaxError as exc:
            raise TriggerStartError(f"query: {exc}", reason="InvalidQuery", retryable=False) from None
        if self.spec.id_column not in [attr.name for attr in claim.get_attributes()]:
            raise TriggerStartError(
                f"the claim query does not return the id column {self.spec.id_column!r}",
                reason="InvalidQuery",
                retryable=False,
            )
        status_type = mark.get_parameters()[0]
        values = {"pending": self.spec.pending_value, "queued": self.spec.queued_value}
        if self.spec.failed_value is not None:
            values["failed"] = self.spec.failed_value
        try:
            self._status_values = {k: status_value(v, status_type.name) for k, v in values.items()}
        except ValueError as exc:
            raise TriggerStartError(
                f"{self.spec.status_column} is of type {status_type.name}: {exc}",
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


class _QueueUnavailable(Exception):
    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} rows left pending")
        self.pending = pending


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
