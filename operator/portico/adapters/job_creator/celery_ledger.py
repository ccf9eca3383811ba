"""The ledger that lets a Celery publisher on RabbitMQ know whether a task id was ever published.

RabbitMQ cannot be asked whether a message was published, so it keeps a ledger: a stream queue
(`portico.celery.ledger`; 7 days, at most 1 GiB, unless it already exists with other limits). A task is
published ONCE, to the Celery exchange, with a `BCC` header naming the ledger: the broker routes that
one message both to the Celery queue and to the ledger (the exchange is bound to the ledger under the
ledger's name, so only messages that name it reach it) and strips the header before delivery.

`StreamLedger` reads the ledger from the start of its window with a stream consumer on its own
connection and keeps the task ids of its scope (its trigger) in memory. `catch_up` appends a barrier
entry and waits until the reader has seen it: the index then holds every id the ledger had before the
call. Concurrent callers share one barrier (group commit). Who may publish which id when is decided by
claims (celery_rabbitmq).
"""

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kombu

LEDGER = "portico.celery.ledger"
LEDGER_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "stream",
    "x-max-age": "7D",
    "x-max-length-bytes": 1024**3,
    "x-stream-max-segment-size-bytes": 16 * 1024**2,
}
NOT_FOUND = 404
ACCESS_REFUSED = 403
WINDOW_SECONDS = 7 * 24 * 3600
SCOPE_HEADER = "portico_scope"
BARRIER_HEADER = "portico_barrier"
PREFETCH = 2000
ACK_EVERY = 500
RECONNECT_SECONDS = 1.0


class LedgerUnavailableError(Exception):
    """The ledger could not be read up to date in time; the task was not published (retryable)."""


class StreamLedger:
    """Reads the ledger in a background thread (its own connection) and answers whether a task id of
    this scope has been published within the window."""

    def __init__(
        self,
        connection: kombu.Connection,
        *,
        name: str = LEDGER,
        scope: str = "",
        window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        self.name = name
        self.scope = scope
        self._window = window_seconds
        self._connection = connection.clone()
        self._ids: OrderedDict[str, float] = OrderedDict()
        """Task id → when published (publisher's clock), oldest first."""
        self._seen_barriers: set[str] = set()
        self._next_offset: int | None = None
        self._changed = threading.Condition()
        self._barrier_lock = threading.Lock()
        self._pending_barrier: tuple[str, float] | None = None
        self._declared = threading.Event()
        self._reading = threading.Event()
        self._closed = threading.Event()
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._unacked = 0
        self._last_tag: int | None = None
        self.quiet: Callable[[], bool] = lambda: False
        """True while nobody else can add an entry of this scope (its owner holds every claim, caught
        up): the reader then stops reading until `resume` (or a catch-up) asks it to go on."""
        self._state = threading.Lock()
        self._paused = False
        self._resume_from: str | None = None
        self._skipped_from: Any = None
        """Where the first skip since the last full read began: the place to read again from."""
        self._reread = False
        """How to go on: "next" (what is appended from now on) or "where" (where it stopped)."""
        self._wake = threading.Event()
        self._resumed = threading.Event()
        self._waiting = 0

    # --- the publishing side (called from publisher threads) ------------------------------------

    def prepare(self, connection: kombu.Connection, exchange: kombu.Exchange, deadline: float) -> None:
        """Create the ledger unless it exists (an existing one is used as it is, whatever its retention
        policy), bind it to `exchange` under its own name (only messages with the ledger in `BCC` reach
        it), and start reading it."""
        if not self._declared.is_set():
            channel = connection.channel()
            try:
                channel.queue_declare(self.name, passive=True)
            except connection.channel_errors as exc:
                if getattr(exc, "code", None) != NOT_FOUND:
                    raise
                channel = connection.channel()
                try:
                    channel.queue_declare(
                        self.name, durable=True, auto_delete=False, arguments=LEDGER_ARGUMENTS
                    )
                except connection.channel_errors as refused:
                    raise LedgerUnavailableError(
                        f"cannot create the ledger stream {self.name!r} (needs RabbitMQ 3.9 or later with "
                        f"the stream_queue feature flag enabled): {refused}"
                    ) from None
            with contextlib.suppress(Exception):
                channel.close()
            self._declared.set()
        self._start_reader()
        # A new stream takes a moment before it accepts messages; the reader's subscription shows it does.
        if not self._reading.wait(max(0.0, deadline - time.monotonic())):
            detail = f": {self._error}" if self._error else ""
            raise LedgerUnavailableError(f"the ledger {self.name!r} cannot be read{detail}")
        channel = connection.default_channel
        exchange(channel).declare()
        channel.queue_bind(self.name, exchange=exchange.name, routing_key=self.name)

    @property
    def stopped(self) -> bool:
        """The reader stopped reading: nobody else can append an entry of this scope right now."""
        with self._state:
            return self._paused

    def contains(self, task_id: str) -> bool:
        with self._changed:
            return task_id in self._ids

    def record(self, task_id: str, published_at: float) -> None:
        with self._changed:
            self._ids[task_id] = published_at
            self._ids.move_to_end(task_id)
            self._forget_before(time.time() - self._window)

    def catch_up(self, producer: kombu.Producer, deadline: float) -> None:
        """Return once the index holds every entry appended to the ledger before this call."""
        with self._state:
            self._waiting += 1
            self._resume_locked("where")
        try:
            self._catch_up(producer, deadline)
        finally:
            with self._state:
                self._waiting -= 1

    def resume(self, *, skip: bool, timeout: float = 5.0) -> bool:
        """Make a stopped reader read again. `skip`: only what is appended from now on (the caller still
        holds every claim, so what it skips is its own); True once the reader reads again (then the
        caller may give up a claim), False if that took longer than `timeout`. Without `skip` (claims
        lost at a moment nobody knows): read again all that was ever skipped."""
        with self._state:
            if not skip:
                self._reread = True
            if not self._paused:
                return True
            self._resume_locked("next" if skip else "where")
        return not skip or self._resumed.wait(timeout)

    def _resume_locked(self, how: str) -> None:
        if self._paused and self._resume_from != "where":
            self._resume_from = how
            self._wake.set()

    def _catch_up(self, producer: kombu.Producer, deadline: float) -> None:
        token = self._barrier(producer, time.monotonic())
        with self._changed:
            while token not in self._seen_barriers:
                left = deadline - time.monotonic()
                if left <= 0:
                    detail = f": {self._error}" if self._error else ""
                    raise LedgerUnavailableError(
                        f"the ledger {self.name!r} was not read up to date in time{detail}"
                    )
                self._changed.wait(min(left, 0.5))

    def _barrier(self, producer: kombu.Producer, asked_at: float) -> str:
        """A barrier token sent after `asked_at`: the one in flight if it was sent after that, else a
        new one (group commit: concurrent claims share one barrier)."""
        with self._barrier_lock:
            pending = self._pending_barrier
            if pending is not None and pending[1] >= asked_at:
                return pending[0]
            token = uuid.uuid4().hex
            self._pending_barrier = (token, time.monotonic())
            producer.publish(
                b"",
                exchange="",
                routing_key=self.name,
                headers={BARRIER_HEADER: token},
                delivery_mode=2,
            )
            return token

    # --- the reading side (the reader thread) ----------------------------------------------------

    def _start_reader(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._read, name=f"ledger-{self.name}", daemon=True)
                self._thread.start()

    def _read(self) -> None:
        start: Any = datetime.fromtimestamp(time.time() - self._window, UTC)
        while not self._closed.is_set():
            if self._next_offset is not None:
                start = self._next_offset
            try:
                self._consume(start)
            except Exception as exc:  # any broker trouble: reconnect and go on where it stopped
                self._error = f"{type(exc).__name__}: {exc}"[:300]
                self._closed.wait(RECONNECT_SECONDS if self._reading.is_set() else 0.1)

    def _consume(self, start: Any) -> None:
        with self._connection.clone() as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            channel.basic_qos(0, PREFETCH, False)
            tag = self._subscribe(channel, start)
            self._error = None
            self._reading.set()
            while not self._closed.is_set():
                try:
                    connection.drain_events(timeout=0.05)
                except TimeoutError:
                    self._ack_all(channel)
                if self._reread:
                    tag = self._read_skipped_again(channel, tag)
                if self._waiting == 0 and self.quiet():
                    self._ack_all(channel)
                    tag = self._pause_while_quiet(channel, tag)

    def _read_skipped_again(self, channel: Any, tag: str) -> str:
        with self._state:
            start, self._skipped_from, self._reread = self._skipped_from, None, False
        if start is None:
            return tag
        channel.basic_cancel(tag)
        return self._subscribe(channel, start)

    def _subscribe(self, channel: Any, start: Any) -> str:
        self._unacked = 0
        self._last_tag = None
        return str(
            channel.basic_consume(
                self.name, callback=lambda message: self._on_entry(channel, message),
                arguments={"x-stream-offset": start},
            )
        )  # fmt: skip

    def _pause_while_quiet(self, channel: Any, tag: str) -> str:
        """Stop reading while nobody else can append an entry of this scope; go on when asked."""
        with self._state:
            if self._waiting or not self.quiet():
                return tag
            channel.basic_cancel(tag)
            self._paused = True
            self._resumed.clear()
            self._wake.clear()
            self._resume_from = None
        while not self._wake.wait(0.5):
            if self._closed.is_set():
                return tag
        while True:
            with self._state:
                how = self._resume_from
                stopped_at: Any = self._next_offset
                if stopped_at is None:
                    stopped_at = datetime.fromtimestamp(time.time() - self._window, UTC)
                if how == "next":
                    start: Any = "next"
                    if self._skipped_from is None:
                        self._skipped_from = stopped_at
                else:
                    start = self._skipped_from if self._skipped_from is not None else stopped_at
                    self._skipped_from = None
                    self._reread = False
            tag = self._subscribe(channel, start)
            with self._state:
                if how == "where" or self._resume_from != "where":
                    self._paused = False
                    break
            channel.basic_cancel(tag)  # asked meanwhile to read where it stopped after all
        self._resumed.set()
        return tag

    def _ack_all(self, channel: Any) -> None:
        """While idle: grant the stream its credit back."""
        if self._unacked and self._last_tag is not None:
            channel.basic_ack(self._last_tag, multiple=True)
            self._unacked = 0

    def _on_entry(self, channel: Any, message: Any) -> None:
        headers = message.properties.get("application_headers") or {}
        offset = headers.get("x-stream-offset")
        with self._changed:
            if isinstance(offset, int):
                self._next_offset = offset + 1
            barrier = headers.get(BARRIER_HEADER)
            if barrier is not None:
                self._seen_barriers.add(str(barrier))
                if len(self._seen_barriers) > 10_000:
                    self._seen_barriers.clear()
                    self._seen_barriers.add(str(barrier))
                self._changed.notify_all()
            elif headers.get(SCOPE_HEADER) == self.scope and isinstance(headers.get("id"), str):
                timestamp = message.properties.get("timestamp")
                if isinstance(timestamp, datetime):
                    published = timestamp.replace(tzinfo=timestamp.tzinfo or UTC).timestamp()
                else:
                    published = float(timestamp) if isinstance(timestamp, int | float) else time.time()
                self._ids[headers["id"]] = published
                self._ids.move_to_end(headers["id"])
                self._forget_before(time.time() - self._window)
        self._last_tag = message.delivery_tag
        self._unacked += 1
        if self._unacked >= ACK_EVERY:
            channel.basic_ack(message.delivery_tag, multiple=True)
            self._unacked = 0

    def _forget_before(self, oldest: float) -> None:
        while self._ids:
            first, published = next(iter(self._ids.items()))
            if published >= oldest:
                return
            del self._ids[first]

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
