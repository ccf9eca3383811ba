"""Durable job storage on SQLite: WAL, migrations on open, and group commit.

Every write goes through one writer thread. Requests enqueue operations; the writer takes everything that
is waiting, applies it in one transaction and commits once, then answers all of them. Under concurrency a
commit (and its write to the log) is shared by hundreds of requests, and an answer is only given after its
commit, so every acknowledged job survives a killed process. One writer also makes idempotent creation
atomic without locks: a second request with the same key always sees the first one's row.

Reads use their own connection and thread, so listing jobs never waits for a commit (WAL readers do not
block the writer, nor it them).
"""

import asyncio
import json
import logging
import random
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from portico.queue_service.settings import QueueServiceSettings

logger = logging.getLogger(__name__)

JobText = str
"""A job as JSON text, exactly as it goes out: answers are built from stored text inside the transaction,
never decoded and re-encoded, so no stored payload can make an answer fail after its commit."""
"""A job in its wire form (the JSON the API returns)."""

T = TypeVar("T")

STATUSES = ("pending", "running", "completed", "failed", "dead")

MIGRATIONS: Sequence[Sequence[str]] = (
    (
        """
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            job_type TEXT NOT NULL,
            queue_name TEXT NOT NULL,
            priority INTEGER NOT NULL,
            payload TEXT NOT NULL,
            metadata TEXT NOT NULL,
            status TEXT NOT NULL,
            idempotency_key TEXT UNIQUE,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            run_at REAL NOT NULL,
            attempts INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            last_error TEXT,
            lease_id TEXT,
            lease_expires_at REAL,
            worker TEXT
        )
        """,
        "CREATE INDEX jobs_claim_order ON jobs (queue_name, status, priority DESC, seq)",
        "CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running'",
    ),
)

_COLUMNS = (
    "id, job_type, queue_name, priority, payload, metadata, status, idempotency_key, created_at, "
    "updated_at, run_at, attempts, max_attempts, last_error, lease_id, lease_expires_at, worker"
)
_INSERT = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * 17)})"
_BY_KEY = f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = ?"
_BY_ID = f"SELECT {_COLUMNS} FROM jobs WHERE id = ?"
_REQUEUE_EXPIRED = (
    "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END, "
    "last_error = 'lease expired', lease_id = NULL, lease_expires_at = NULL, updated_at = ? "
    "WHERE status = 'running' AND lease_expires_at <= ?"
)


_compact_json = json.JSONEncoder(separators=(",", ":"))
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii
_id_bits = random.Random()


def to_json(value: Any) -> str:
    """Compact JSON with one shared encoder (no per-call encoder construction on the hot path)."""
    return _compact_json.encode(value)


def new_job_id(now: float) -> str:
    """A UUIDv7: time-ordered, so the id index grows at its end, and no system call per id. Ids need to be
    unique, not secret (whoever may read the API may list the jobs anyway)."""
    value = (
        (int(now * 1000) & (2**48 - 1)) << 80
        | 0x7 << 76
        | _id_bits.getrandbits(12) << 64
        | 0b10 << 62
        | _id_bits.getrandbits(62)
    )
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class StoreUnavailable(Exception):
    """The store cannot take the request now (closed, overloaded, or the database failed); retry later."""


class JobNotFound(Exception):
    pass


class JobConflict(Exception):
    """The job is not in a state that allows the operation (e.g. completing a job that is not running)."""


_second_cache: tuple[int, str] = (0, "1970-01-01T00:00:00")


def iso(timestamp: float) -> str:
    """RFC 3339 in UTC with microseconds. The date part is cached per second: this runs several times for
    every job answered."""
    global _second_cache
    second = int(timestamp // 1)
    micros = round((timestamp - second) * 1_000_000)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, prefix)
    return f"{prefix}.{micros:06d}Z"


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _time(value: float | None) -> str:
    return "null" if value is None else f'"{iso(value)}"'


def job_json(row: Sequence[Any]) -> str:
    """The wire form of a job, from a row of `_COLUMNS`. Written out directly: payload and metadata are
    stored as JSON text and go out as they are, without a decode/encode round trip."""
    return (
        f'{{"id":{_quote(row[0])},"job_type":{_quote(row[1])},"queue_name":{_quote(row[2])},'
        f'"priority":{row[3]},"payload":{row[4]},"metadata":{row[5]},"status":"{row[6]}",'
        f'"idempotency_key":{_text(row[7])},"created_at":{_time(row[8])},"updated_at":{_time(row[9])},'
        f'"run_at":{_time(row[10])},"attempts":{row[11]},"max_attempts":{row[12]},'
        f'"last_error":{_text(row[13])},"lease_id":{_text(row[14])},"lease_expires_at":{_time(row[15])},'
        f'"worker":{_text(row[16])}}}'
    )


@dataclass(slots=True)
class _Create:
    row: tuple[Any, ...]
    text: str
    key: str | None


@dataclass(slots=True)
class _Call(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]


@dataclass(slots=True)
class _Failed:
    error: Exception


_Op = _Create | _Call[Any]


class JobStore:
    """The jobs of one queue service. `open()` before use, `close()` after; both from the event loop."""

    def __init__(self, settings: QueueServiceSettings) -> None:
        self._settings = settings
        self._clock = settings.clock
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-store-writer")
        self._reader = (
            self._writer
            if settings.in_memory
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-store-reader")
        )
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pending: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        """Transactions committed; with `committed_ops`, shows how well commits are shared."""
        self.committed_ops = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._wconn = await loop.run_in_executor(self._writer, self._connect_writer)
        if self._settings.in_memory:
            self._rconn = self._wconn
        else:
            self._rconn = await loop.run_in_executor(self._reader, self._connect_reader)
        self._task = asyncio.create_task(self._write_loop(), name="queue-store-writer")

    async def close(self) -> None:
        """Commit what was accepted, then close. Idempotent."""
        if self._task is not None and not self._stopping:
            self._stopping = True
            self._wakeup.set()
            await asyncio.shield(self._task)
        loop = asyncio.get_running_loop()
        if self._rconn is not None and self._rconn is not self._wconn:
            await loop.run_in_executor(self._reader, self._rconn.close)
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
        self._rconn = self._wconn = None
        self._stopping = True
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._settings.db_path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        if not self._settings.in_memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise RuntimeError(f"the database could not switch to WAL mode (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous = {self._settings.synchronous}")
        conn.execute("PRAGMA cache_size = -32000")
        self._migrate(conn)
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._settings.db_path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA query_only = ON")
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the database has schema version {version}; this service knows up to {len(MIGRATIONS)}"
            )
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            logger.info("queue database migrated to schema version %d", number)

    # -- the writer --------------------------------------------------------------------------------------

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        if self._stopping or self._task is None:
            raise StoreUnavailable("the queue store is shutting down")
        if len(self._pending) >= self._settings.max_pending_writes:
            raise StoreUnavailable("the queue store is overloaded")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        return future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self._settings.max_batch
        while True:
            await self._wakeup.wait()
            if not self._pending:
                self._wakeup.clear()
                if self._stopping:
                    return
                continue
            batch = self._pending[:limit]
            del self._pending[:limit]
            try:
                outcomes = await loop.run_in_executor(self._writer, self._apply, [op for op, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    logger.error("a queue store transaction failed: %s", exc)
                    outcomes = [_Failed(StoreUnavailable(f"the queue store failed: {exc}"))]
                else:
                    logger.warning(
                        "a group commit of %d failed (%s); committing them one by one", len(batch), exc
                    )
                    outcomes = [
                        await loop.run_in_executor(self._writer, self._apply_alone, op) for op, _ in batch
                    ]
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, _Failed):
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome)

    def _apply_alone(self, op: _Op) -> Any:
        """After a failed group commit: one operation in its own transaction, so that one bad operation
        fails alone instead of failing everyone it was batched with, again on every retry."""
        try:
            return self._apply([op])[0]
        except Exception as exc:
            logger.error("a queue store transaction failed: %s", exc)
            return _Failed(StoreUnavailable(f"the queue store failed: {exc}"))

    def _apply(self, ops: list[_Op]) -> list[Any]:
        """One transaction for the whole batch (in the writer thread). Runs of creates become one
        `executemany`; any other operation gets a savepoint so its failure undoes only itself."""
        conn = self._wconn
        assert conn is not None
        outcomes: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            i = 0
            while i < len(ops):
                op = ops[i]
                if isinstance(op, _Create):
                    j = i + 1
                    while j < len(ops) and isinstance(ops[j], _Create):
                        j += 1
                    outcomes.extend(self._insert(conn, ops[i:j]))  # type: ignore[arg-type]
                    i = j
                else:
                    outcomes.append(self._call(conn, op))
                    i += 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.committed_ops += len(ops)
        return outcomes

    @staticmethod
    def _insert(conn: sqlite3.Connection, ops: list[_Create]) -> list[tuple[str, bool]]:
        outcomes: list[tuple[str, bool]] = []
        by_key: dict[str, str] = {}
        rows: list[tuple[Any, ...]] = []
        for op in ops:
            if op.key is not None:
                found = by_key.get(op.key)
                if found is None:
                    row = conn.execute(_BY_KEY, (op.key,)).fetchone()
                    found = job_json(row) if row is not None else None
                if found is not None:
                    outcomes.append((found, False))
                    continue
                by_key[op.key] = op.text
            rows.append(op.row)
            outcomes.append((op.text, True))
        if rows:
            conn.executemany(_INSERT, rows)
        return outcomes

    @staticmethod
    def _call(conn: sqlite3.Connection, op: _Call[Any]) -> Any:
        conn.execute("SAVEPOINT op")
        try:
            result = op.fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return _Failed(exc)
        conn.execute("RELEASE op")
        return result

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._submit(_Call(fn))
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._rconn
        if conn is None or self._stopping:
            raise StoreUnavailable("the queue store is shutting down")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, fn, conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the queue store failed: {exc}") from exc

    # -- operations --------------------------------------------------------------------------------------

    async def create(
        self,
        *,
        job_type: str,
        queue_name: str,
        priority: int,
        payload: dict[str, Any],
        metadata: dict[str, str],
        max_attempts: int,
        idempotency_key: str | None,
    ) -> tuple[str, bool]:
        """Store a new job, or find the one stored under `idempotency_key`: the job as JSON text, and whether
        it is new. Returns only after the commit."""
        now = self._clock()
        row = (
            new_job_id(now),
            job_type,
            queue_name,
            priority,
            to_json(payload),
            to_json(metadata),
            "pending",
            idempotency_key,
            now,
            now,
            now,
            0,
            max_attempts,
            None,
            None,
            None,
            None,
        )
        result: tuple[str, bool] = await self._submit(_Create(row, job_json(row), idempotency_key))
        return result

    async def get(self, job_id: str) -> JobText | None:
        def fetch(conn: sqlite3.Connection) -> JobText | None:
            row = conn.execute(_BY_ID, (job_id,)).fetchone()
            return job_json(row) if row is not None else None

        return await self._read(fetch)

    async def list_jobs(
        self,
        *,
        queue_name: str | None = None,
        status: str | None = None,
        job_type: str | None = None,
        metadata: tuple[str, str] | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> tuple[list[JobText], int | None]:
        """A page of jobs in creation order, and the position to continue after (None on the last page).
        `metadata` is (key, value): jobs whose metadata maps key to exactly value."""
        conditions = ["seq > ?"]
        params: list[Any] = [after]
        for column, value in (("queue_name", queue_name), ("status", status), ("job_type", job_type)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        if metadata is not None:
            conditions.append("json_extract(metadata, ?) = ?")
            params += [f'$."{metadata[0]}"', metadata[1]]
        sql = f"SELECT seq, {_COLUMNS} FROM jobs WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT ?"
        params.append(limit + 1)

        def fetch(conn: sqlite3.Connection) -> tuple[list[JobText], int | None]:
            rows = conn.execute(sql, params).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            jobs = [job_json(row[1:]) for row in rows]
            return jobs, (rows[-1][0] if more else None)

        return await self._read(fetch)

    async def counts(self) -> list[tuple[str, str, int]]:
        """(queue, status, number of jobs), for the metrics."""

        def fetch(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
            return conn.execute(
                "SELECT queue_name, status, COUNT(*) FROM jobs GROUP BY queue_name, status"
            ).fetchall()

        return await self._read(fetch)

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def requeue_expired(self) -> int:
        """Return jobs whose lease ran out to the queue (or to `dead` when out of attempts)."""

        def requeue(conn: sqlite3.Connection) -> int:
            now = self._clock()
            return conn.execute(_REQUEUE_EXPIRED, (now, now)).rowcount

        return await self._write(requeue)

    async def claim(
        self, queue_name: str, *, worker: str | None, lease_seconds: float, limit: int
    ) -> list[JobText]:
        """Lease up to `limit` runnable jobs of a queue: highest priority first, oldest first within one."""

        def claim(conn: sqlite3.Connection) -> list[JobText]:
            now = self._clock()
            conn.execute(_REQUEUE_EXPIRED, (now, now))
            seqs = conn.execute(
                "SELECT seq FROM jobs WHERE queue_name = ? AND status = 'pending' AND run_at <= ? "
                "ORDER BY priority DESC, seq LIMIT ?",
                (queue_name, now, limit),
            ).fetchall()
            jobs = []
            for (seq,) in seqs:
                row = conn.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_id = ?, "
                    f"lease_expires_at = ?, worker = ?, updated_at = ? WHERE seq = ? RETURNING {_COLUMNS}",
                    (uuid.uuid4().hex, now + lease_seconds, worker, now, seq),
                ).fetchone()
                jobs.append(job_json(row))
            return jobs

        return await self._write(claim)

    async def complete(self, job_id: str, *, lease_id: str) -> JobText:
        def complete(conn: sqlite3.Connection) -> JobText:
            self._check_running(conn, job_id, lease_id)
            row = conn.execute(
                "UPDATE jobs SET status = 'completed', lease_id = NULL, lease_expires_at = NULL, "
                f"updated_at = ? WHERE id = ? RETURNING {_COLUMNS}",
                (self._clock(), job_id),
            ).fetchone()
            return job_json(row)

        return await self._write(complete)

    async def extend(self, job_id: str, *, lease_id: str, lease_seconds: float) -> JobText:
        """Hold a running job's lease `lease_seconds` from now. A lease that already ran out is not
        revived: the job may be claimed by someone else at any moment, so its holder must stop."""

        def extend(conn: sqlite3.Connection) -> JobText:
            self._check_running(conn, job_id, lease_id)
            now = self._clock()
            row = conn.execute(
                f"UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE id = ? AND lease_expires_at > ? "
                f"RETURNING {_COLUMNS}",
                (now + lease_seconds, now, job_id, now),
            ).fetchone()
            if row is None:
                raise JobConflict("the lease expired; the job goes back to its queue")
            return job_json(row)

        return await self._write(extend)

    async def fail(
        self, job_id: str, *, lease_id: str, error: str | None, retry: bool, retry_delay: float
    ) -> JobText:
        """Record a failed attempt: back to `pending` (after `retry_delay`) while attempts remain, else
        `dead`; straight to `failed` when the worker says retrying is pointless."""

        def fail(conn: sqlite3.Connection) -> JobText:
            attempts, max_attempts = self._check_running(conn, job_id, lease_id)
            now = self._clock()
            if not retry:
                status = "failed"
            elif attempts >= max_attempts:
                status = "dead"
            else:
                status = "pending"
            row = conn.execute(
                "UPDATE jobs SET status = ?, last_error = ?, run_at = ?, lease_id = NULL, "
                f"lease_expires_at = NULL, updated_at = ? WHERE id = ? RETURNING {_COLUMNS}",
                (status, error, now + retry_delay if status == "pending" else now, now, job_id),
            ).fetchone()
            return job_json(row)

        return await self._write(fail)

    @staticmethod
    def _check_running(conn: sqlite3.Connection, job_id: str, lease_id: str) -> tuple[int, int]:
        row = conn.execute(
            "SELECT status, lease_id, attempts, max_attempts FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        status, held_lease, attempts, max_attempts = row
        if status != "running":
            raise JobConflict(f"the job is {status}, not running")
        if lease_id != held_lease:
            raise JobConflict("the lease is no longer held: it expired and the job was claimed again")
        return attempts, max_attempts
