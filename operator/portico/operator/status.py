"""Coalescing status writes: a busy trigger must not turn into one API write per job.

Each tracked resource has a snapshot function that returns the status it should have now. Marking it
dirty is O(1) and never blocks; one writer task patches each resource at most once per `interval`,
sends only the fields that changed since the last successful write, and flushes everything on close.
"""

import asyncio
import contextlib
import heapq
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from portico.domain.trigger import TriggerRef

logger = logging.getLogger(__name__)

Snapshot = Callable[[], dict[str, Any]]


class ResourceGoneError(Exception):
    """The resource no longer exists: stop writing its status."""


class StatusPatcher(ABC):
    @abstractmethod
    async def patch_status(self, ref: TriggerRef, patch: dict[str, Any]) -> None:
        """Merge-patch `/status`. Raises `ResourceGoneError` on 404."""


class FinalizerWriter(ABC):
    @abstractmethod
    async def set_finalizers(self, ref: TriggerRef, finalizers: list[str], resource_version: str) -> None:
        """Replace `metadata.finalizers`, only if the object is still at `resource_version` (a
        concurrent change fails the write rather than being overwritten)."""


@dataclass
class _Tracked:
    ref: TriggerRef
    snapshot: Snapshot
    written: dict[str, Any] = field(default_factory=dict)
    last_write: float = float("-inf")
    due: float | None = None
    dirty: bool = False


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

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def track(
        self, uid: str, ref: TriggerRef, snapshot: Snapshot, *, written: dict[str, Any] | None = None
    ) -> None:
        """Start tracking (or replace the snapshot of) a resource. `written` is the status it has now,
        so unchanged fields are not re-sent after an operator restart."""
        existing = self._tracked.get(uid)
        if existing is not None:
            existing.snapshot = snapshot
            existing.ref = ref
        else:
            self._tracked[uid] = _Tracked(ref=ref, snapshot=snapshot, written=dict(written or {}))
        self.mark_dirty(uid)

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
        await self.flush_all()

    async def flush(self, uid: str) -> None:
        t = self._tracked.get(uid)
        if t is not None:
            await self._write(uid, t)

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

    async def _write(self, uid: str, t: _Tracked, *, slot: bool = False) -> None:
        try:
            t.dirty = False
            desired = t.snapshot()
            patch = {k: v for k, v in desired.items() if t.written.get(k) != v}
            if not patch:
                return
            t.last_write = self._now()
            try:
                await self.patcher.patch_status(t.ref, patch)
            except ResourceGoneError:
                self.untrack(uid)
                return
            except Exception as exc:
                self.errors += 1
                logger.warning("status patch of %s failed, will retry: %s", t.ref, exc)
                self.mark_dirty(uid)
                return
            self.patches += 1
            t.written.update(patch)
        finally:
            if slot:
                self._slots.release()
