"""The file trigger: files that appear in (or change in) a directory become jobs.

A file becomes a job only once it is complete (see `settling`), so a slow upload is triggered once, at
the end. Files already present at start are triggered too; the idempotency key (path, size and
modification time, per trigger) makes that free of duplicates across restarts and fail-overs. Changes are
noticed with Linux inotify, or by polling where there is none (see `watchers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.sources.common.backoff import SharedBackoff
from portico.sources.common.drain import InFlight
from portico.sources.common.emitter import JobEmitter
from portico.sources.file import inotify
from portico.sources.file.settling import SOURCE, Ready, Settler, file_key
from portico.sources.file.spec import FileEvent, FileSpec
from portico.sources.file.tree import Tree
from portico.sources.file.watchers import InotifyWatcher, PollingWatcher, Watcher

logger = logging.getLogger(__name__)

DEFAULT_JOB_TYPE = "file.process"
DEFAULT_QUEUE = "file_processing"
WORKERS = 16
STOP_GRACE_SECONDS = 10.0
MAX_RETRY_DELAY = 30.0
MAX_RECOVERY_DELAY = 30.0
WatcherKind = Literal["auto", "inotify", "polling"]


class FileTrigger(JobTrigger):
    """Watches one directory and creates one job per complete file.

    As in the seed: `FileTrigger(job_creator=job_service, watch_path=Path("/uploads"),
    job_type="file.process", queue_name="file_processing")` watches recursively. The spec's other options
    are keyword arguments (`patterns`, `ignore_patterns`, `file_events`, `settle_seconds`,
    `trigger_existing`); the operator passes a parsed `spec` and the resource's `template` instead.
    `watcher` picks inotify or polling (`auto`: inotify where the system has it).
    """

    def __init__(
        self,
        job_creator: JobCreator,
        watch_path: Path | str | None = None,
        job_type: str = DEFAULT_JOB_TYPE,
        queue_name: str = DEFAULT_QUEUE,
        *,
        recursive: bool = True,
        patterns: Sequence[str] | None = None,
        ignore_patterns: Sequence[str] | None = None,
        file_events: Sequence[FileEvent] | None = None,
        settle_seconds: float | None = None,
        trigger_existing: bool | None = None,
        spec: FileSpec | None = None,
        template: JobTemplate | None = None,
        watcher: WatcherKind = "auto",
        poll_interval_seconds: float = 1.0,
        ref: TriggerRef | None = None,
        events: TriggerEvents | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "patterns": patterns,
            "ignore_patterns": ignore_patterns,
            "events": file_events,
            "settle_seconds": settle_seconds,
            "trigger_existing": trigger_existing,
        }
        given = {name: value for name, value in options.items() if value is not None}
        if spec is None:
            if watch_path is None:
                raise TypeError("FileTrigger needs a watch_path (or a parsed spec)")
            spec = FileSpec.model_validate(
                {"path": os.path.abspath(watch_path), "recursive": recursive, **given}
            )
        elif watch_path is not None or given:
            raise TypeError("give FileTrigger either a spec or watch_path with options, not both")
        if poll_interval_seconds <= 0:
            raise ValueError("poll_interval_seconds must be positive")
        self.spec = spec
        self.root = Path(spec.path)
        self.ref = ref or TriggerRef(name=f"file-{spec.path}")
        template = template or JobTemplate(type=job_type, queue=queue_name)
        self.emitter = JobEmitter(job_creator, ref=self.ref, source=SOURCE, template=template, events=events)
        self.tree = Tree(
            self.root,
            patterns=spec.patterns,
            ignore_patterns=spec.ignore_patterns,
            recursive=spec.recursive,
        )
        self.settler = Settler(
            settle_seconds=spec.settle_seconds, enabled=spec.events, on_ready=self._on_ready
        )
        self.watcher_kind: WatcherKind = watcher
        self.poll_interval_seconds = poll_interval_seconds
        self._watcher: Watcher | None = None
        self._ready: asyncio.Queue[Ready | None] = asyncio.Queue()
        self._workers = InFlight()
        self._recovery: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._started = False
        self._backoff = SharedBackoff(0.5, MAX_RETRY_DELAY, max_doublings=10)

    # --- JobTrigger -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._stopping = asyncio.Event()
        self._ready = asyncio.Queue()
        self._open()
        self._started = True
        for i in range(WORKERS):
            self._workers.start(self._work(), name=f"file {self.ref} worker {i}")
        self.emitter.events.changed()

    async def stop(self) -> None:
        """Stop watching; files already complete still get their jobs (within a grace period). Files still
        settling are found again by the next start (with triggerExisting)."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        self._close()
        self.settler.known.clear()  # a file whose job was still waiting is sent again at the next start
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        for _ in range(len(self._workers)):
            self._ready.put_nowait(None)
        await self._workers.drain(STOP_GRACE_SECONDS)
        self.emitter.events.changed()

    @property
    def is_running(self) -> bool:
        return self._started and self._watcher is not None

    def get_health(self) -> TriggerHealth:
        return self.emitter.health(
            is_running=self.is_running,
            source_status={
                "watchedPath": self.spec.path,
                "watching": self._watcher is not None,
                "pendingFiles": len(self.settler.pending) + self._ready.qsize(),
            },
        )

    # --- watching ---------------------------------------------------------------------------------------

    def _new_watcher(self) -> Watcher:
        use_inotify = self.watcher_kind == "inotify" or (self.watcher_kind == "auto" and inotify.available())
        if use_inotify:
            return InotifyWatcher(
                self.tree, self.settler, on_lost=self._lost_root, on_error=self.emitter.record_error
            )
        return PollingWatcher(
            self.tree,
            self.settler,
            on_lost=self._lost_root,
            on_error=self.emitter.record_error,
            interval=self.poll_interval_seconds,
        )

    def _open(self) -> None:
        """Check the directory, watch it (and its subdirectories), then scan what is already there: in this
        order, so a file created in between is seen at least once."""
        self._check_directory()
        watcher = self._new_watcher()
        watcher.open()
        self._watcher = watcher
        for path in self.tree.files(self.root, self._list_error):
            if self.spec.trigger_existing:
                self.settler.observe(path, "existing")
            else:
                self.settler.remember(path)

    def _list_error(self, directory: Path, exc: OSError) -> None:
        self.emitter.record_error(f"cannot list {directory}: {exc.strerror}")

    def _close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        self.settler.clear()

    def _check_directory(self) -> None:
        try:
            info = os.stat(self.root)
        except FileNotFoundError:
            raise TriggerStartError(
                f"directory {self.root} does not exist", reason="DirectoryNotFound"
            ) from None
        except OSError as exc:
            raise TriggerStartError(
                f"cannot read {self.root}: {exc.strerror}", reason="DirectoryNotReadable"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise TriggerStartError(
                f"{self.root} is not a directory", reason="NotADirectory", retryable=False
            )
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise TriggerStartError(
                f"directory {self.root} is not readable by the operator (uid {os.geteuid()})",
                reason="DirectoryNotReadable",
            )

    def _lost_root(self) -> None:
        if self._watcher is None:
            return
        self._close()
        self.emitter.record_error(f"directory {self.root} was removed or unmounted; waiting for it to return")
        self.emitter.events.event(
            "Warning", "DirectoryLost", f"directory {self.root} was removed or unmounted"
        )
        if not self._stopping.is_set():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            try:
                self._open()
            except TriggerStartError as exc:
                logger.info("%s: still waiting for the directory: %s", self.ref, exc)
                delay = min(delay * 2, MAX_RECOVERY_DELAY)
                continue
            self.emitter.events.event("Normal", "DirectoryBack", f"watching {self.root} again")
            self.emitter.events.changed()
            return

    # --- jobs -------------------------------------------------------------------------------------------

    def _on_ready(self, item: Ready) -> None:
        self._ready.put_nowait(item)

    async def _work(self) -> None:
        while True:
            item = await self._ready.get()
            if item is None:
                return
            await self._create(item)

    async def _create(self, item: Ready) -> None:
        path = str(item.path)
        mtime = datetime.fromtimestamp(item.mtime_ns / 1e9, UTC)
        try:
            await self.emitter.emit(
                payload={"file_path": path, "size": item.size, "mtime": mtime.isoformat()},
                metadata={"file.event": item.kind},
                idempotency_key=file_key(self.ref.key, path, item.size, item.mtime_ns),
            )
        except JobCreationError as exc:
            if exc.retryable:
                await self._retry_later(item)
            else:
                self.emitter.events.event("Warning", "JobRejected", f"{path}: {exc}")
            return
        self._backoff.succeeded()

    async def _retry_later(self, item: Ready) -> None:
        """The queue service is unavailable: try the same file version again after the shared backoff,
        unless the file changed meanwhile (then its new version has a job of its own coming)."""
        if await self._backoff.wait(self._stopping):
            return
        if self.settler.still_current(item):
            self._ready.put_nowait(item)
