"""The JobTrigger watch: list, then watch from the list's version, cluster-wide or per namespace, and
hand each event's object to the registry, in order per object.

The operator watches JobTriggers itself rather than through Kopf. Kopf handles every event through a
per-object worker, a body wrapper, its per-object memory and a handler invocation, about a millisecond
of interpreter per event, and keeps a record per object. With sharding every replica receives every
trigger's events, most of them for triggers it does not own, so that cost was the largest share of a
replica's CPU and memory. Here an event costs its JSON decoding and a dictionary lookup until the
registry decides it matters.

A re-list (after a watch expired, `410 Gone`) also reports the objects that went while no watch was
open as deleted, which a plain list would miss.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from portico.operator.kube import read_json
from portico.operator.resource import GROUP, PLURAL, VERSION
from portico.operator.sharding.routes import EVERYWHERE, UNROUTED, Route, selector
from portico.operator.sharding.shard_map import shard_of
from portico.sources.common.backoff import SharedBackoff

logger = logging.getLogger(__name__)

EventHandler = Callable[[str | None, dict[str, Any]], Awaitable[None]]
"""Receives `(event type, object)`; the type is None for an object seen by a list."""

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""The API server stores objects of at most 1.5 MiB; a longer line is not a watch event."""


class WatchExpired(Exception):
    """The watch's resourceVersion or the list's continue token is too old (410 Gone): list again."""


@dataclass(frozen=True)
class WatchTimings:
    server_timeout: int = 300
    """Seconds the API server keeps one watch request open before it ends it (and we open the next)."""
    client_timeout: float = 330.0
    """Seconds of silence (not even a bookmark) after which a watch's connection is taken for dead."""
    page_size: int = 500
    list_timeout: float = 60.0
    """Seconds one page of a list may take."""
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    settle_timeout: float = 30.0
    """Seconds to wait for the events of a given-up shard still being handled."""


class ObjectQueue:
    """Runs the handler on each object's events one at a time and in order, objects in parallel. While
    an object's event is being handled, only the newest event that arrives for it waits: the registry
    reconciles to the object's latest state, so the ones in between would be wasted work.

    At most `limit` objects are in hand at once: past that, `room()` holds the watch back, so a burst
    of creations waits in the API server's stream rather than as thousands of tasks in our memory."""

    def __init__(self, handler: EventHandler, limit: int = 64) -> None:
        self._handler = handler
        self._limit = limit
        self._pending: dict[str, tuple[str | None, dict[str, Any]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._workers)

    def put(self, event_type: str | None, obj: dict[str, Any]) -> None:
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if not uid:
            return
        self._pending[uid] = (event_type, obj)
        if uid not in self._workers:
            self._workers[uid] = asyncio.create_task(self._work(uid), name=f"jobtrigger {uid}")
            if len(self._workers) >= self._limit:
                self._room.clear()

    async def room(self) -> None:
        """Until fewer than `limit` objects are in hand."""
        await self._room.wait()

    async def _work(self, uid: str) -> None:
        try:
            while (event := self._pending.pop(uid, None)) is not None:
                try:
                    await self._handler(*event)
                except Exception:
                    meta = event[1].get("metadata") or {}
                    name = f"{meta.get('namespace')}/{meta['name']}" if "name" in meta else f"uid {uid}"
                    logger.exception("error handling a watch event of JobTrigger %s", name)
        finally:
            self._workers.pop(uid, None)
            if len(self._workers) < self._limit:
                self._room.set()

    async def settle(self, uids: set[str], grace: float) -> None:
        """Drop the waiting events of these objects and wait up to `grace` seconds for the ones being
        handled."""
        for uid in uids:
            self._pending.pop(uid, None)
        workers = [task for uid, task in self._workers.items() if uid in uids]
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace)
            if late:
                logger.warning("%d JobTrigger events of given-up shards still being handled", len(late))

    async def close(self, grace: float) -> None:
        """Let the events being handled finish within `grace` seconds, then cancel the rest; events still
        waiting are dropped (the next start lists the objects again)."""
        self._pending.clear()
        workers = list(self._workers.values())
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            logger.warning("%d JobTrigger events were still being handled at shutdown", len(late))
            await asyncio.wait(late)


@dataclass(frozen=True)
class Stream:
    """One list-and-watch: a scope (a namespace, or None for all) and, with sharding, a route whose label
    selector the API server applies (None: every JobTrigger of the scope)."""

    scope: str | None
    route: Route | frozenset[int] | None = None
    """None: every JobTrigger of the scope; a route; or a set of shards taken together."""

    def describe(self) -> str:
        where = f"namespace {self.scope}" if self.scope else "all namespaces"
        if self.route is None:
            return where
        if self.route == EVERYWHERE:
            return f"{where}, served by every replica"
        if self.route == UNROUTED:
            return f"{where}, not labelled with a shard yet"
        shards = sorted(self.route) if isinstance(self.route, frozenset) else [self.route]
        return f"{where}, shards {','.join(map(str, shards))}"


class JobTriggerWatch:
    """Without sharding, one stream per scope. With `shards`, per scope: the triggers every replica
    serves, the unrouted ones, and one stream per set of shards this replica took together
    (`watch_shards`), each filtered by the API server on the shard label (see `sharding.routes`). A
    stream per shard would hold one connection each, up to `shards` of them on a lone replica; the
    shards usually come and go in a few batches.

    A trigger whose label changes leaves one stream and enters another. The API server reports the
    leaving as DELETED, with the object as it was before, so it cannot be told from a deletion by the
    event alone. Each object therefore has one home, the stream that showed it last, and a DELETED
    reaches the registry only from its home: when the entering came first, the leaving is dropped;
    when the leaving came first, the entering follows it (the registry starts what it stopped). The
    registry keeps that rare by starting a trigger only once it carries its right label."""

    def __init__(
        self,
        api: ApiClient,
        namespaces: Sequence[str],
        handler: EventHandler,
        timings: WatchTimings | None = None,
        *,
        shards: int | None = None,
    ) -> None:
        self._objects = CustomObjectsApi(api)
        self._scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self.timings = timings or WatchTimings()
        self.shards = shards
        self.queue = ObjectQueue(handler)
        self._homes: dict[str, Stream] = {}
        """Per object seen and not seen go, the stream that last showed it."""
        self._tasks: dict[Stream, asyncio.Task[None]] = {}
        self._stopped = False

    def __len__(self) -> int:
        """How many JobTriggers the streams show now."""
        return len(self._homes)

    def start(self) -> None:
        self._stopped = False
        routes: list[Route | None] = [None] if self.shards is None else [EVERYWHERE, UNROUTED]
        for scope in self._scopes:
            for route in routes:
                self._open(Stream(scope, route))

    def watch_shards(self, shards: Iterable[int]) -> None:
        """Start watching shards this replica now holds, one stream for them all; its list hands every
        trigger on."""
        taken = frozenset(shards)
        if taken:
            for scope in self._scopes:
                self._open(Stream(scope, taken))

    async def unwatch_shards(self, shards: Iterable[int]) -> set[str]:
        """Stop watching shards this replica gave up: close each stream that shows one of them (and
        reopen it for the rest of its shards, whose objects it lists again), drop the events of the
        given-up shards' objects still waiting, and wait for the ones being handled. Returns the UIDs of
        those objects, which the registry forgets."""
        given = frozenset(shards)
        streams = [(s, s.route) for s in self._tasks if isinstance(s.route, frozenset) and s.route & given]
        tasks = [self._tasks.pop(stream) for stream, _ in streams]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        gone: set[str] = set()
        for stream, route in streams:
            rest = Stream(stream.scope, route - given) if route - given else None
            for uid, home in list(self._homes.items()):
                if home != stream:
                    continue
                if rest is not None and self._shard_of(uid) not in given:
                    self._homes[uid] = rest  # so that its list reports what went meanwhile
                else:
                    del self._homes[uid]
                    gone.add(uid)
            if rest is not None:
                self._open(rest)
        await self.queue.settle(gone, self.timings.settle_timeout)
        return gone

    def _shard_of(self, uid: str) -> int:
        return shard_of(uid, self.shards or 1)

    def _open(self, stream: Stream) -> None:
        if self._stopped or stream in self._tasks:
            return
        self._tasks[stream] = asyncio.create_task(
            self._run(stream), name=f"jobtrigger watch {stream.describe()}"
        )

    async def stop(self, grace: float) -> None:
        """Stop watching, then let the events being handled finish within `grace` seconds."""
        self._stopped = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self.queue.close(grace)

    async def _run(self, stream: Stream) -> None:
        where = stream.describe()
        version: str | None = None
        backoff = SharedBackoff(self.timings.backoff_initial, self.timings.backoff_max)
        while True:
            try:
                if version is None:
                    version = await self._list(stream)
                opened = asyncio.get_running_loop().time()
                version = await self._watch(stream, version)
                if asyncio.get_running_loop().time() - opened >= 1.0:
                    backoff.succeeded()
                else:  # a server or proxy that ends every watch at once must not make this loop spin
                    await asyncio.sleep(backoff.failed())
            except WatchExpired:
                version = None
            except ApiException as exc:
                delay = backoff.failed()
                # 429: the API server is busy, or still filling its watch cache after a start; it says
                # to come back later, which is no news for an operator.
                logger.log(
                    logging.INFO if exc.status == 429 else logging.WARNING,
                    "cannot watch JobTriggers in %s: %s %s%s; retrying in %.0fs",
                    where,
                    exc.status,
                    exc.reason,
                    _advice(exc.status),
                    delay,
                )
                await asyncio.sleep(delay)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                delay = backoff.failed()
                logger.warning(
                    "the JobTrigger watch in %s broke off (%s); retrying in %.0fs",
                    where,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _list(self, stream: Stream) -> str:
        """List every object (in pages), hand each to the queue, and report the ones this stream showed
        before but not now as deleted. Returns the version to watch from."""
        listed: set[str] = set()
        token: str | None = None
        version = ""
        while True:
            call = self._call(
                stream,
                limit=self.timings.page_size,
                _continue=token,
                _request_timeout=self.timings.list_timeout,
            )
            try:
                page = await read_json(call)
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired
                    raise WatchExpired from None
                raise
            for obj in page.get("items") or ():
                uid = (obj.get("metadata") or {}).get("uid")
                if uid:
                    listed.add(uid)
                    self._homes[uid] = stream
                    self.queue.put(None, obj)
                    await self.queue.room()
            meta = page.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            token = meta.get("continue") or None
            if token is None:
                break
        vanished = [uid for uid, home in self._homes.items() if home == stream and uid not in listed]
        for uid in vanished:
            del self._homes[uid]
            self.queue.put("DELETED", {"metadata": {"uid": uid}})
        return version

    async def _watch(self, stream: Stream, version: str) -> str:
        """One watch request, until the server ends it. Returns the version reached."""
        timings = self.timings
        call = self._call(
            stream,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=timings.server_timeout,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=30, sock_read=timings.client_timeout),
        )
        response = await call
        try:
            if response.status == 410:
                raise WatchExpired
            if not 200 <= response.status <= 299:
                raise ApiException(status=response.status, reason=response.reason)
            async for line in _lines(response.content):
                version = self._dispatch(stream, json.loads(line)) or version
                await self.queue.room()
                await asyncio.sleep(0)  # a chunk can hold hundreds of events: let timers run between them
        finally:
            response.release()
        return version

    def _dispatch(self, stream: Stream, event: dict[str, Any]) -> str | None:
        """Hand one watch event on; returns the version it carries."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired
            raise ApiException(status=obj.get("code") or 500, reason=obj.get("reason") or "watch error")
        meta = obj.get("metadata") or {}
        version: str | None = meta.get("resourceVersion")
        uid = meta.get("uid")
        if kind == "BOOKMARK" or not uid or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return version
        if kind != "DELETED":
            self._homes[uid] = stream
            self.queue.put(kind, obj)
            return version
        if self._homes.get(uid) != stream:
            return version  # another of our streams shows it now
        del self._homes[uid]
        self.queue.put(kind, obj)
        return version

    def _call(self, stream: Stream, **kwargs: Any) -> Awaitable[Any]:
        options = {k: v for k, v in kwargs.items() if v is not None}
        if stream.route is not None and self.shards is not None:
            options["label_selector"] = selector(stream.route, self.shards)
        if stream.scope is None:
            return self._objects.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _preload_content=False, **options
            )
        return self._objects.list_namespaced_custom_object(
            GROUP, VERSION, stream.scope, PLURAL, _preload_content=False, **options
        )


def _advice(status: int | None) -> str:
    if status in (401, 403):
        return f" (the operator's service account needs get, list and watch on {PLURAL}.{GROUP})"
    if status == 404:
        return " (is the JobTrigger CRD installed? kubectl apply -f crds/)"
    return ""


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The newline-delimited events of a watch response, at most `MAX_EVENT_BYTES` each."""
    buffer = b""
    async for chunk in stream.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
        if len(buffer) > MAX_EVENT_BYTES:
            raise ValueError(f"a watch event longer than {MAX_EVENT_BYTES} bytes")
    if buffer.strip():
        yield buffer
