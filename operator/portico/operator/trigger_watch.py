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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from portico.operator.kube import read_json
from portico.operator.resource import GROUP, PLURAL, VERSION
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


class JobTriggerWatch:
    def __init__(
        self,
        api: ApiClient,
        namespaces: Sequence[str],
        handler: EventHandler,
        timings: WatchTimings | None = None,
    ) -> None:
        self._objects = CustomObjectsApi(api)
        self._scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self.timings = timings or WatchTimings()
        self.queue = ObjectQueue(handler)
        self._known: dict[str | None, set[str]] = {scope: set() for scope in self._scopes}
        """Per scope, the UIDs of the objects seen and not seen go."""
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._run(scope), name=f"jobtrigger watch {scope or '*'}")
            for scope in self._scopes
        ]

    async def stop(self, grace: float) -> None:
        """Stop watching, then let the events being handled finish within `grace` seconds."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self.queue.close(grace)

    async def _run(self, scope: str | None) -> None:
        where = f"namespace {scope}" if scope else "all namespaces"
        version: str | None = None
        backoff = SharedBackoff(self.timings.backoff_initial, self.timings.backoff_max)
        while True:
            try:
                if version is None:
                    version = await self._list(scope)
                opened = asyncio.get_running_loop().time()
                version = await self._watch(scope, version)
                if asyncio.get_running_loop().time() - opened >= 1.0:
                    backoff.succeeded()
                else:  # a server or proxy that ends every watch at once must not make this loop spin
                    await asyncio.sleep(backoff.failed())
            except WatchExpired:
                version = None
            except ApiException as exc:
                delay = backoff.failed()
                logger.warning(
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

    async def _list(self, scope: str | None) -> str:
        """List every object (in pages), hand each to the queue, and report the ones known before but
        gone now as deleted. Returns the version to watch from."""
        listed: set[str] = set()
        token: str | None = None
        version = ""
        while True:
            call = self._call(
                scope,
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
                    self.queue.put(None, obj)
                    await self.queue.room()
            meta = page.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            token = meta.get("continue") or None
            if token is None:
                break
        known = self._known[scope]
        for uid in known - listed:
            self.queue.put("DELETED", {"metadata": {"uid": uid}})
        self._known[scope] = listed
        return version

    async def _watch(self, scope: str | None, version: str) -> str:
        """One watch request, until the server ends it. Returns the version reached."""
        timings = self.timings
        call = self._call(
            scope,
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
            known = self._known[scope]
            async for line in _lines(response.content):
                version = self._dispatch(json.loads(line), known) or version
                await self.queue.room()
                await asyncio.sleep(0)  # a chunk can hold hundreds of events: let timers run between them
        finally:
            response.release()
        return version

    def _dispatch(self, event: dict[str, Any], known: set[str]) -> str | None:
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
        if kind == "DELETED":
            known.discard(uid)
        else:
            known.add(uid)
        self.queue.put(kind, obj)
        return version

    def _call(self, scope: str | None, **kwargs: Any) -> Awaitable[Any]:
        options = {k: v for k, v in kwargs.items() if v is not None}
        if scope is None:
            return self._objects.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _preload_content=False, **options
            )
        return self._objects.list_namespaced_custom_object(
            GROUP, VERSION, scope, PLURAL, _preload_content=False, **options
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
