"""Publishing Celery tasks to RabbitMQ so that a task id goes out once, whichever creator, replica or
restart publishes it.

Task ids fall into `SHARDS` shards. To publish an id, a creator must hold its shard's claim: the one
exclusive consumer of a small queue `portico.celery.claim.<scope hash>.<shard>`, registered on the very
connection that publishes. Right after taking a claim the creator catches up with the ledger
(celery_ledger), so while it holds the claim its index knows every id of that shard that was ever
published (within the window): by others before, by itself since. The broker drops a claim when its
connection ends and processes no frame of an ended connection afterwards, so a crashed or cut-off
creator cannot publish behind the next holder's back.

Claims are kept while used, so a creator that does all the publishing pays no extra round trip per
task. One that is refused a claim asks for it with a message in the claim queue, which reaches the
holder (its exclusive consumer); the holder gives it up within a tick (webhooks are served by every
replica, so two creators may well need the same shard). Claims unused for `HOLD_IDLE_SECONDS` are given
up too.

While a creator holds every shard of its scope and has caught up with each, nobody else can add an
entry of that scope: its reader stops reading the ledger (its own tasks are in its index already).
Before giving up a claim it makes the reader go on with what is appended from then on; after losing
its connection (claims gone at an unknown moment) the reader goes on from where it stopped.

Each connection belongs to one lane: a thread that runs that connection's work (kombu is synchronous
and a connection serves one thread); a task id's shard decides its lane.
"""

import asyncio
import concurrent.futures
import contextlib
import hashlib
import queue as queue_module
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import kombu

from portico.adapters.job_creator.celery_ledger import (
    ACCESS_REFUSED,
    SCOPE_HEADER,
    LedgerUnavailableError,
    StreamLedger,
)

SHARDS = 16
CLAIM_PREFIX = "portico.celery.claim."
CLAIM_QUEUE_ARGUMENTS = {"x-expires": 24 * 3600 * 1000}
HOLD_IDLE_SECONDS = 5.0
TICK_SECONDS = 0.05
ASK_EVERY_SECONDS = 0.1
WANT_EXPIRES_SECONDS = 1.0


class ShardBusyError(Exception):
    """Another connection holds the task id's shard; try again shortly."""


def shard_of(task_id: str) -> int:
    return uuid.UUID(task_id).int % SHARDS


class Lane:
    """One connection and the thread that uses it, with the shard claims held on that connection."""

    def __init__(
        self, connection: kombu.Connection, index: int, claim_prefix: str, ledger: StreamLedger, me: str
    ) -> None:
        self.connection = connection
        self._claim_prefix = claim_prefix
        self._ledger = ledger
        self._me = me
        self.wanted: set[int] = set()
        """Shards another creator asked for."""
        self.ready: set[int] = set()
        """Shards held and caught up with: the index knows all their ids."""
        self._asked: dict[int, float] = {}
        self._transport: Any = None
        self._producer: kombu.Producer | None = None
        self.declared: set[str] = set()
        """Celery queues declared (with their exchange and binding to the ledger) on this connection."""
        self._held: dict[int, tuple[float, float]] = {}
        """Shard → (claimed at, last used), monotonic."""
        self._channels: dict[int, Any] = {}
        """Shard → the channel its claim is on."""
        self._spares: list[Any] = []
        self._claim_queues: set[int] = set()
        self._work: queue_module.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None]
        self._work = queue_module.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"celery-lane-{index}", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], Any]) -> "asyncio.Future[Any]":
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._work.put((work, future))
        return asyncio.wrap_future(future)

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                item = self._work.get(timeout=TICK_SECONDS)
            except queue_module.Empty:
                self._listen()
                self._release_stale()
                continue
            if item is None:
                break
            work, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:
                    future.set_exception(exc)
            self._release_stale()
        with contextlib.suppress(Exception):
            self.connection.release()

    # --- claims (on the lane's thread only) --------------------------------------------------------

    def hold(self, shard: int) -> bool:
        """Hold the shard's claim; True if it was taken just now (the caller must catch up)."""
        now = time.monotonic()
        held = self._held.get(shard)
        if held is not None:
            self._held[shard] = (held[0], now)
            return False
        name = f"{self._claim_prefix}{shard}"
        channel = self._spare_channel()
        try:
            if shard not in self._claim_queues:
                channel.queue_declare(name, durable=True, auto_delete=False, arguments=CLAIM_QUEUE_ARGUMENTS)
                self._claim_queues.add(shard)
            channel.basic_consume(
                name, consumer_tag=f"claim-{shard}", exclusive=True, no_ack=True, callback=self._on_want
            )
        except self.connection.channel_errors as exc:
            if getattr(exc, "code", None) != ACCESS_REFUSED:
                raise
            if now - self._asked.get(shard, 0.0) >= ASK_EVERY_SECONDS:
                self._asked[shard] = now
                self.connection.Producer().publish(
                    b"", exchange="", routing_key=name, headers={"by": self._me}, delivery_mode=1,
                    expiration=WANT_EXPIRES_SECONDS,
                )  # fmt: skip
            raise ShardBusyError(shard) from None
        self._asked.pop(shard, None)
        self.wanted.discard(shard)  # a request older than this claim was for an earlier holder
        self._held[shard] = (now, now)
        self._channels[shard] = self._spares.pop()
        return True

    def connect(self) -> kombu.Producer:
        """The lane's connection, connected, and a producer on it. A new connection holds none of the
        old one's claims and none of its declarations."""
        if not self.connection.connected:
            self.connection.ensure_connection(max_retries=3, interval_start=0.1, interval_step=0.5)
        transport = self.connection.connection
        if transport is not self._transport or self._producer is None:
            self.forget_claims()
            self._transport = transport
            self._producer = self.connection.Producer()
        return self._producer

    def _on_want(self, message: Any) -> None:
        """A message in a claim queue: another creator asks for that shard."""
        tag = str(message.delivery_info.get("consumer_tag", ""))
        if (message.headers or {}).get("by") != self._me and tag.startswith("claim-"):
            self.wanted.add(int(tag.removeprefix("claim-")))

    def _listen(self) -> None:
        """While idle: take in what arrived on the connection (requests for claims)."""
        if not self._held:
            return
        try:
            self.connection.drain_events(timeout=0.001)
        except TimeoutError:
            pass
        except Exception:
            self.connection.collect()
            self.forget_claims()

    def release(self, shard: int) -> bool:
        """Give the claim up, once the reader reads what others may append from now on."""
        if shard not in self._held:
            return True
        self.ready.discard(shard)
        if not self._ledger.resume(skip=True):
            self.ready.add(shard)
            return False
        del self._held[shard]
        self._cancel(shard)
        return True

    def drop(self, shard: int) -> None:
        """Give up a claim that was never caught up with."""
        if self._held.pop(shard, None) is not None:
            self.ready.discard(shard)
            self._cancel(shard)

    def _cancel(self, shard: int) -> None:
        channel = self._channels.pop(shard)
        channel.basic_cancel(f"claim-{shard}", nowait=True)
        self._spares.append(channel)

    def forget_claims(self) -> None:
        """After a connection failure: its claims went with it, at a moment nobody knows."""
        self.ready.clear()
        self._ledger.resume(skip=False)
        self._held.clear()
        self._claim_queues.clear()
        self._channels.clear()
        self._spares.clear()
        self.declared.clear()
        self._producer = None

    def _spare_channel(self) -> Any:
        """A channel without a claim, for trying to take one: a refusal closes the channel, and with it
        every claim on it, so each claim has a channel of its own."""
        while self._spares:
            channel = self._spares[-1]
            if channel.is_open and channel.connection is self.connection.connection:
                return channel
            self._spares.pop()
        self._spares.append(self.connection.channel())
        return self._spares[-1]

    def _release_stale(self) -> None:
        if not self._held:
            return
        now = time.monotonic()
        for shard, (_, used_at) in list(self._held.items()):
            if shard in self.wanted or now - used_at >= HOLD_IDLE_SECONDS:
                try:
                    if self.release(shard):
                        self.wanted.discard(shard)
                except Exception:
                    self.connection.collect()
                    self.forget_claims()
                    return


class RabbitMQPublisher:
    """Publishes task messages through `lanes` connections, each task id once (see the module)."""

    def __init__(self, connection: kombu.Connection, ledger: StreamLedger, *, lanes: int) -> None:
        self.ledger = ledger
        scope_hash = hashlib.sha256(f"{ledger.name}\0{ledger.scope}".encode()).hexdigest()[:16]
        self._claim_prefix = f"{CLAIM_PREFIX}{scope_hash}."
        me = uuid.uuid4().hex
        self._lanes = [Lane(connection.clone(), i, self._claim_prefix, ledger, me) for i in range(lanes)]
        ledger.quiet = self._holds_every_shard

    def _holds_every_shard(self) -> bool:
        return sum(len(lane.ready) for lane in self._lanes) == SHARDS

    async def publish(
        self,
        tid: str,
        exchange: kombu.Exchange,
        routing_key: str,
        body: Any,
        headers: dict[str, Any],
        deadline: float,
    ) -> bool:
        """Publish unless published before (then True); waits while another creator holds the shard."""
        shard = shard_of(tid)
        lane = self._lanes[shard % len(self._lanes)]
        pause = 0.01
        while True:
            try:
                return bool(
                    await lane.submit(
                        lambda: self._publish(
                            lane, shard, tid, exchange, routing_key, body, headers, deadline
                        )
                    )
                )
            except ShardBusyError:
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.2)

    def _publish(
        self,
        lane: Lane,
        shard: int,
        tid: str,
        exchange: kombu.Exchange,
        routing_key: str,
        body: Any,
        headers: dict[str, Any],
        deadline: float,
    ) -> bool:
        connection = lane.connection
        try:
            producer = lane.connect()
            if routing_key not in lane.declared:
                self.ledger.prepare(connection, exchange, deadline)
                producer.maybe_declare(
                    kombu.Queue(routing_key, exchange, routing_key=routing_key, durable=True)
                )
                lane.declared.add(routing_key)
            if lane.hold(shard):
                try:
                    self.ledger.catch_up(producer, deadline)
                except LedgerUnavailableError:
                    lane.drop(shard)
                    raise
                lane.ready.add(shard)
            if self.ledger.contains(tid):
                return True
            published_at = time.time()
            producer.publish(
                body,
                exchange=exchange.name,
                routing_key=routing_key,
                serializer="json",
                headers={**headers, "BCC": [self.ledger.name], SCOPE_HEADER: self.ledger.scope},
                correlation_id=tid,
                delivery_mode=2,
                timestamp=int(published_at),
            )
            self.ledger.record(tid, published_at)
            return False
        except (ShardBusyError, LedgerUnavailableError):
            raise
        except BaseException:
            # No retry on this connection: its claims may be gone with it. The next use reconnects.
            connection.collect()
            lane.forget_claims()
            raise

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
