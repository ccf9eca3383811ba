"""Coalescing status writes: a busy trigger must not turn into one API write per job.

Each tracked resource has a snapshot function that returns the status it should have now. Marking it
dirty is O(1) and never blocks; one writer task patches each resource at most once per `interval`,
sends only the fields that differ from what the server has, and flushes everything on close.

Counters (`jobsCreated`, `errors`) are written as *additions*: the snapshot gives what this process
counted, the writer adds what it has not added yet to the server's value, under a resourceVersion
precondition. So several writers (an operator restart, webhook replicas) never overwrite each
other's counts: a conflict re-reads the object and adds again.
"""

import asyncio
import contextlib
import heapq
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from portico.domain.trigger import TriggerRef

logger = logging.getLogger(__name__)

Snapshot = Callable[[], dict[str, Any]]
COUNTERS = ("jobsCreated", "errors")
FINAL_FLUSH_ATTEMPTS = 3


class ResourceGoneError(Exception):
    """The resource no longer exists: stop writing its status."""


class ConflictError(Exception):
    """The resource changed since the resourceVersion the write was based on."""


@dataclass(frozen=True)
class ObjectStatus:
    status: Mapping[str, Any]
    resource_version: str


class StatusPatcher(ABC):
    @abstractmethod
    async def patch_status(
        self, ref: TriggerRef, patch: dict[str, Any], resource_version: str | None = None
    ) -> ObjectStatus:
        """Merge-patch `/status`, only if the object is still at `resource_version` when given.
        Returns the status and version after the write. Raises `ResourceGoneError`, `ConflictError`."""

    @abstractmethod
    async def read_status(self, ref: TriggerRef) -> ObjectStatus:
        """The current status. Raises `ResourceGoneError`."""


def _newer(candidate: str, current: str | None) -> bool:
    if current is None:
        return True
    try:
        return int(candidate) >= int(current)
    except ValueError:
        return True


@dataclass
class _Tracked:
    ref: TriggerRef
    snapshot: Snapshot
    server: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    added: dict[str, int] = field(default_factory=dict)
    last_write: float = float("-inf")
    due: float | None = None
    dirty: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One write at a time per object: two patches in flight could reach the server in the other order,
    leaving an older status there while the writer believes the newer one is written."""


class StatusWriter:
    def __init__(self, patcher: StatusPatcher, *, interval: float = 1.0, concurrency: int = 16) -> None:
        self.patcher = patcher
        self.interval = interval
        self._tracked: dict[str, _Tracked] = {}
        self._heap: list[tuple[float, str]] = []
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.patches = 0
        self.errors = 0
        self.conflicts = 0

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def track(
        self,
        uid: str,
        ref: TriggerRef,
        snapshot: Snapshot,
        *,
        status: Mapping[str, Any] | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Start tracking (or replace the snapshot of) a resource, with the status it has now."""
        existing = self._tracked.get(uid)
        if existing is not None:
            existing.snapshot = snapshot
            existing.ref = ref
        else:
            self._tracked[uid] = _Tracked(ref=ref, snapshot=snapshot)
        if status is not None:
            self.observe(uid, status, resource_version)
        self.mark_dirty(uid)

    def observe(self, uid: str, status: Mapping[str, Any], resource_version: str | None) -> None:
        """The server's status as a watch event or a read showed it."""
        t = self._tracked.get(uid)
        if t is None:
            return
        if resource_version is None or _newer(resource_version, t.version):
            t.server = dict(status)
            t.version = resource_version

    def untrack(self, uid: str) -> None:
        self._tracked.pop(uid, None)

    def mark_dirty(self, uid: str, *, urgent: bool = False) -> None:
        """Schedule a write: at once if the last one is older than `interval` (or `urgent`, for a phase
        change a user is waiting to see), else when the interval has passed."""
        t = self._tracked.get(uid)
        if t is None:
            return
        t.dirty = True
        now = self._now()
        due = now if urgent else max(now, t.last_write + self.interval)
        if t.due is None or due < t.due:
            t.due = due
            heapq.heappush(self._heap, (due, uid))
            self._wakeup.set()

    def mark_all_dirty(self) -> None:
        for uid in self._tracked:
            self.mark_dirty(uid, urgent=True)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="status-writer")

    async def close(self) -> None:
        """Stop the writer after a final flush of everything dirty."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        for _ in range(FINAL_FLUSH_ATTEMPTS):
            # A conflict (another writer moved the resourceVersion) re-reads and leaves the resource
            # dirty: write again, or the last counts of a stopping operator are lost.
            if not any(t.dirty for t in self._tracked.values()):
                break
            await self.flush_all()

    async def flush_all(self) -> None:
        await asyncio.gather(*(self._write(uid, t) for uid, t in list(self._tracked.items()) if t.dirty))

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            due, uid = self._heap[0]
            delay = due - self._now()
            if delay > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
                continue
            heapq.heappop(self._heap)
            t = self._tracked.get(uid)
            if t is None or t.due != due:
                continue
            t.due = None
            await self._slots.acquire()
            task = asyncio.create_task(self._write(uid, t, slot=True))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _patch_for(self, t: _Tracked, desired: Mapping[str, Any]) -> dict[str, Any]:
        patch = {}
        for key, value in desired.items():
            if key in COUNTERS:
                delta = int(value) - t.added.get(key, 0)
                if delta or key not in t.server:
                    patch[key] = int(t.server.get(key) or 0) + delta
            elif t.server.get(key) != value:
                patch[key] = value
        return patch

    async def _write(self, uid: str, t: _Tracked, *, slot: bool = False) -> None:
        try:
            async with t.lock:
                await self._write_now(uid, t)
        finally:
            if slot:
                self._slots.release()

    async def _write_now(self, uid: str, t: _Tracked) -> None:
        t.dirty = False
        desired = t.snapshot()
        patch = self._patch_for(t, desired)
        if not patch:
            return
        t.last_write = self._now()
        counting = any(k in COUNTERS for k in patch)
        try:
            after = await self.patcher.patch_status(t.ref, patch, t.version if counting else None)
        except ResourceGoneError:
            self.untrack(uid)
            return
        except ConflictError:
            self.conflicts += 1
            with contextlib.suppress(ResourceGoneError):
                fresh = await self.patcher.read_status(t.ref)
                self.observe(uid, fresh.status, fresh.resource_version)
            self.mark_dirty(uid, urgent=True)
            return
        except Exception as exc:
            self.errors += 1
            logger.warning("status patch of %s failed, will retry: %s", t.ref, exc)
            self.mark_dirty(uid)
            return
        self.patches += 1
        for key in COUNTERS:
            if key in desired:
                t.added[key] = int(desired[key])
        t.server = dict(after.status)
        t.version = after.resource_version
