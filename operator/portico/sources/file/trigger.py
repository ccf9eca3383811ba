"""The file source (`spec.file`): files that appear in (or change in) a directory become jobs.

The directory is watched with Linux inotify, read on the event loop: no polling, no thread. inotify is
used directly rather than through a wrapper such as watchfiles because the wrappers fold "created" and
"moved in" into one "added" change, and users choose between them (a directory fed by atomic renames
wants `movedIn` only, so the uploader's temporary files never become jobs).

A file becomes a job only once it is complete: its size and modification time unchanged for
`settleSeconds` after the last change inotify reported, so a slow upload is triggered once, at the end.
Files already present at start are triggered too; the idempotency key (path, size and modification time,
per trigger) makes that free of duplicates across restarts and fail-overs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from portico.domain.model import SpecModel
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.common.emitter import JobEmitter

logger = logging.getLogger(__name__)

SOURCE = "file"
FileEvent = Literal["created", "modified", "movedIn"]
ALL_EVENTS: tuple[FileEvent, ...] = ("created", "modified", "movedIn")
WORKERS = 16
STOP_GRACE_SECONDS = 10.0
MAX_RETRY_DELAY = 30.0
MAX_RECOVERY_DELAY = 30.0

# inotify(7)
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCH_MASK = (
    IN_CREATE
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_ATTRIB
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
EVENT_HEADER = struct.Struct("iIII")


class FileSpec(SpecModel):
    """Watch a directory and create one job per complete file.

    Files matching `patterns` that are created, moved in or modified (as chosen in `events`) become a job
    once their size and modification time have not changed for `settleSeconds`. Files already present
    when the trigger starts are triggered too; the idempotency key (path, size, modification time) keeps
    restarts from creating duplicates. The payload carries file_path, size and mtime."""

    path: str = Field(
        min_length=2,
        max_length=4096,
        pattern=r"^/",
        description="Absolute path of the directory to watch, as the operator sees it (a mounted volume).",
    )
    patterns: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=64,
        description="Glob patterns a file must match, against its path relative to `path` and matched "
        "from the right (`*.csv` matches any CSV file, `exports/*.csv` only those in an exports folder).",
    )
    ignore_patterns: list[str] = Field(
        default_factory=lambda: [".*", "*.tmp", "*.part"],
        max_length=64,
        description="Glob patterns of files and directories to skip, matched like `patterns`; by default "
        "hidden files and the usual temporary names of uploads in progress.",
    )
    recursive: bool = Field(default=False, description="Watch subdirectories too (new ones included).")
    events: list[FileEvent] = Field(
        default_factory=lambda: list(ALL_EVENTS),
        min_length=1,
        max_length=3,
        description="Which changes create jobs: `created` (a file written in the directory), `movedIn` "
        "(renamed or moved into it), `modified` (an existing file's content or modification time changed).",
    )
    settle_seconds: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="A file is complete once its size and modification time have not changed for this "
        "long; only then is its job created.",
    )
    trigger_existing: bool = Field(
        default=True, description="Create jobs for matching files already present when the trigger starts."
    )

    @field_validator("patterns", "ignore_patterns")
    @classmethod
    def _valid_globs(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern or "\x00" in pattern:
                raise ValueError("a pattern must be a non-empty glob")
            if pattern.startswith("/"):
                raise ValueError(f"{pattern!r}: patterns are relative to `path`, not absolute")
            try:
                matches(PurePosixPath("probe"), [pattern])
            except ValueError as exc:
                raise ValueError(f"{pattern!r} is not a valid glob: {exc}") from None
        return patterns

    @field_validator("events")
    @classmethod
    def _distinct(cls, events: list[FileEvent]) -> list[FileEvent]:
        if len(set(events)) != len(events):
            raise ValueError("events must not repeat")
        return events


def matches(relative: PurePosixPath, patterns: list[str]) -> bool:
    """Whether a path relative to the watched directory matches one of the globs (from the right, as
    pathlib's `PurePath.match`)."""
    return any(relative.match(pattern) for pattern in patterns)


def file_key(ref_key: str, path: str, size: int, mtime_ns: int) -> str:
    """The idempotency key of one version of one file, for one trigger."""
    digest = hashlib.sha256(f"{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape")).hexdigest()
    return f"{SOURCE}/{ref_key}/{digest}"


class Inotify:
    """One inotify instance (see inotify(7)), non-blocking; `read()` returns what is queued."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.inotify_init1.argtypes = [ctypes.c_int]
        self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int:
        wd: int = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return wd

    def remove_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> Iterator[tuple[int, int, str]]:
        """(watch descriptor, mask, name) of every queued event."""
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return
            offset = 0
            while offset + EVENT_HEADER.size <= len(data):
                wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
                offset += EVENT_HEADER.size
                raw = data[offset : offset + length].split(b"\0", 1)[0]
                offset += length
                yield wd, mask, os.fsdecode(raw)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class _Pending:
    """A file waiting to settle."""

    kind: FileEvent | Literal["existing"]
    emit: bool
    size: int
    mtime_ns: int
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class _Ready:
    path: Path
    kind: str
    size: int
    mtime_ns: int
    attempt: int = 0


@dataclass
class _Watches:
    inotify: Inotify
    dirs: dict[int, Path] = field(default_factory=dict)

    def watch_of(self, directory: Path) -> int | None:
        return next((wd for wd, d in self.dirs.items() if d == directory), None)


class FileTrigger(JobTrigger):
    """Watches one directory. Library use: `FileTrigger(job_creator=..., config=FileSpec(path="/data/in",
    patterns=["*.csv"]), template=JobTemplate(type="import.csv"))`."""

    def __init__(
        self,
        *,
        job_creator: JobCreator,
        config: FileSpec,
        template: JobTemplate,
        ref: TriggerRef | None = None,
        events: TriggerEvents | None = None,
    ) -> None:
        self.config = config
        self.root = Path(config.path)
        self.ref = ref or TriggerRef(name=f"file-{config.path}")
        self.emitter = JobEmitter(job_creator, ref=self.ref, source=SOURCE, template=template, events=events)
        self._enabled = frozenset(config.events)
        self._watches: _Watches | None = None
        self._pending: dict[Path, _Pending] = {}
        self._known: dict[Path, tuple[int, int]] = {}
        self._ready: asyncio.Queue[_Ready | None] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._recovery: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._started = False
        self._failure_streak = 0
        self._backoff_until = 0.0

    # --- JobTrigger -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._stopping = asyncio.Event()
        self._ready = asyncio.Queue()
        self._open()
        self._started = True
        self._workers = [
            asyncio.create_task(self._work(), name=f"file {self.ref} worker {i}") for i in range(WORKERS)
        ]
        self.emitter.events.changed()

    async def stop(self) -> None:
        """Stop watching; files already complete still get their jobs (within a grace period). Files still
        settling are found again by the next start (with triggerExisting)."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        self._close()
        self._known.clear()  # a file whose job was still waiting is sent again at the next start
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        for _ in self._workers:
            self._ready.put_nowait(None)
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._workers = []
        self.emitter.events.changed()

    @property
    def is_running(self) -> bool:
        return self._started and self._watches is not None

    def get_health(self) -> TriggerHealth:
        return self.emitter.health(
            is_running=self.is_running,
            source_status={
                "watchedPath": self.config.path,
                "watching": self._watches is not None,
                "pendingFiles": len(self._pending) + self._ready.qsize(),
            },
        )

    # --- watching ---------------------------------------------------------------------------------------

    def _open(self) -> None:
        """Check the directory, watch it (and its subdirectories), then scan what is already there: in this
        order, so a file created in between is seen at least once."""
        self._check_directory()
        try:
            inotify = Inotify()
        except OSError as exc:
            raise TriggerStartError(
                f"cannot watch {self.root}: {exc.strerror} (fs.inotify.max_user_instances reached?)",
                reason="WatchFailed",
            ) from None
        watches = _Watches(inotify)
        try:
            self._watch_tree(watches, self.root)
        except OSError as exc:
            inotify.close()
            raise TriggerStartError(self._watch_error(exc), reason="WatchFailed") from None
        self._watches = watches
        asyncio.get_running_loop().add_reader(inotify.fd, self._on_readable)
        self._scan(self.root, "existing" if self.config.trigger_existing else None)

    def _close(self) -> None:
        watches, self._watches = self._watches, None
        if watches is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(watches.inotify.fd)
            watches.inotify.close()
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()

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

    def _watch_error(self, exc: OSError) -> str:
        if exc.errno == errno.ENOSPC:
            return (
                f"cannot watch {exc.filename or self.root}: the inotify watch limit is reached "
                "(raise fs.inotify.max_user_watches)"
            )
        return f"cannot watch {exc.filename or self.root}: {exc.strerror}"

    def _watch_tree(self, watches: _Watches, directory: Path) -> None:
        watches.dirs[watches.inotify.add_watch(str(directory), WATCH_MASK)] = directory
        if not self.config.recursive:
            return
        for sub in self._subdirectories(directory):
            try:
                self._watch_tree(watches, sub)
            except FileNotFoundError:
                continue

    def _subdirectories(self, directory: Path) -> list[Path]:
        try:
            with os.scandir(directory) as entries:
                return [
                    Path(entry.path)
                    for entry in entries
                    if entry.is_dir(follow_symlinks=False) and not self._ignored(Path(entry.path))
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _scan(self, directory: Path, kind: FileEvent | Literal["existing"] | None) -> None:
        """Every matching file under `directory`: observed as `kind`, or, with kind None, only remembered
        as it is (so that a later change counts as a modification)."""
        try:
            with os.scandir(directory) as entries:
                found = list(entries)
        except (FileNotFoundError, NotADirectoryError):
            return
        except PermissionError as exc:
            self.emitter.record_error(f"cannot list {directory}: {exc.strerror}")
            return
        for entry in found:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if self.config.recursive and not self._ignored(path):
                    self._scan(path, kind)
            elif self._wanted(path):
                if kind is None:
                    state = _stat(path)
                    if state is not None:
                        self._known[path] = state
                else:
                    self._observe(path, kind)

    def _on_readable(self) -> None:
        watches = self._watches
        if watches is None:
            return
        try:
            for wd, mask, name in list(watches.inotify.read()):
                self._dispatch(watches, wd, mask, name)
        except Exception as exc:
            logger.exception("%s: handling file events failed", self.ref)
            self.emitter.record_error(f"handling file events failed: {exc}")

    def _dispatch(self, watches: _Watches, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            logger.warning("%s: inotify queue overflowed; rescanning %s", self.ref, self.root)
            self._rescan()
            return
        directory = watches.dirs.get(wd)
        if directory is None:
            return
        if not name:
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED):
                if directory == self.root:
                    self._lost_root()
                else:
                    watches.dirs.pop(wd, None)
            return
        path = directory / name
        if mask & IN_ISDIR:
            self._directory_event(watches, path, mask)
            return
        if mask & (IN_DELETE | IN_MOVED_FROM):
            self._forget(path)
        elif self._wanted(path):
            if mask & IN_MOVED_TO:
                self._observe(path, "movedIn")
            elif mask & IN_CREATE:
                self._observe(path, "created")
            elif mask & (IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB):
                self._observe(path, "modified")

    def _directory_event(self, watches: _Watches, path: Path, mask: int) -> None:
        if not self.config.recursive or self._ignored(path):
            return
        if mask & (IN_CREATE | IN_MOVED_TO):
            try:
                self._watch_tree(watches, path)
            except FileNotFoundError:
                return
            except OSError as exc:
                self.emitter.record_error(self._watch_error(exc))
                return
            self._scan(path, "movedIn" if mask & IN_MOVED_TO else "created")
        elif mask & IN_MOVED_FROM:
            for wd, watched in list(watches.dirs.items()):
                if watched == path or path in watched.parents:
                    watches.inotify.remove_watch(wd)
                    watches.dirs.pop(wd, None)
            for known in [p for p in (*self._pending, *self._known) if path in p.parents]:
                self._forget(known)

    def _rescan(self) -> None:
        """After lost events: every file whose state is not the one last seen is looked at again."""
        if self._watches is None:
            return
        for directory in [self.root, *(self._all_subdirectories(self.root) if self.config.recursive else [])]:
            if self._watches.watch_of(directory) is None:
                with contextlib.suppress(OSError):
                    self._watch_tree(self._watches, directory)
        for path in list(self._iter_files(self.root)):
            state = _stat(path)
            if state is None or path in self._pending:
                continue
            if self._known.get(path) != state:
                self._observe(path, "modified" if path in self._known else "created")

    def _all_subdirectories(self, directory: Path) -> Iterator[Path]:
        for sub in self._subdirectories(directory):
            yield sub
            yield from self._all_subdirectories(sub)

    def _iter_files(self, directory: Path) -> Iterator[Path]:
        try:
            with os.scandir(directory) as entries:
                found = list(entries)
        except OSError:
            return
        for entry in found:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if self.config.recursive and not self._ignored(path):
                    yield from self._iter_files(path)
            elif self._wanted(path):
                yield path

    def _lost_root(self) -> None:
        if self._watches is None:
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

    # --- settling ---------------------------------------------------------------------------------------

    def _relative(self, path: Path) -> PurePosixPath:
        return PurePosixPath(path.relative_to(self.root).as_posix())

    def _ignored(self, path: Path) -> bool:
        return matches(self._relative(path), self.config.ignore_patterns)

    def _wanted(self, path: Path) -> bool:
        relative = self._relative(path)
        return matches(relative, self.config.patterns) and not matches(relative, self.config.ignore_patterns)

    def _observe(self, path: Path, kind: FileEvent | Literal["existing"]) -> None:
        """Something happened to `path`: (re)start its settle clock."""
        state = _stat(path)
        if state is None:
            self._forget(path)
            return
        loop = asyncio.get_running_loop()
        pending = self._pending.get(path)
        if pending is None:
            if kind == "modified" and "modified" not in self._enabled:
                return
            emit = kind == "existing" or kind in self._enabled
            pending = self._pending[path] = _Pending(kind=kind, emit=emit, size=state[0], mtime_ns=state[1])
        elif kind in ("created", "movedIn"):
            pending.kind, pending.emit = kind, kind in self._enabled
        if pending.timer is not None:
            pending.timer.cancel()
        pending.size, pending.mtime_ns = state
        delay = self.config.settle_seconds
        if kind == "existing":
            age = max(0.0, datetime.now(UTC).timestamp() - state[1] / 1e9)
            delay = max(0.0, delay - age)
        pending.timer = loop.call_later(delay, self._check, path)

    def _check(self, path: Path) -> None:
        pending = self._pending.get(path)
        if pending is None:
            return
        state = _stat(path)
        if state is None:
            self._forget(path)
            return
        if state != (pending.size, pending.mtime_ns):
            pending.size, pending.mtime_ns = state
            pending.timer = asyncio.get_running_loop().call_later(
                self.config.settle_seconds, self._check, path
            )
            return
        del self._pending[path]
        if pending.emit and self._known.get(path) != state:
            self._ready.put_nowait(_Ready(path, pending.kind, *state))
        self._known[path] = state

    def _forget(self, path: Path) -> None:
        pending = self._pending.pop(path, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        self._known.pop(path, None)

    # --- jobs -------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._ready.get()
            if item is None:
                return
            await self._create(item)

    async def _create(self, item: _Ready) -> None:
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
        self._failure_streak = 0
        self._backoff_until = 0.0

    async def _retry_later(self, item: _Ready) -> None:
        """The queue service is unavailable: try the same file version again after a backoff, unless the
        file changed meanwhile (then its new version has a job of its own coming). Failures within one
        backoff window share it; the next window is twice as long."""
        now = asyncio.get_running_loop().time()
        if now >= self._backoff_until:
            self._failure_streak += 1
            self._backoff_until = now + min(0.5 * 2 ** min(self._failure_streak - 1, 10), MAX_RETRY_DELAY)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._backoff_until - now)
        if self._stopping.is_set():
            return
        if _stat(item.path) == (item.size, item.mtime_ns):
            self._ready.put_nowait(_Ready(item.path, item.kind, item.size, item.mtime_ns, item.attempt + 1))


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a regular file, None when it is gone or not a regular file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_size, info.st_mtime_ns


class FileSource(TriggerSource[FileSpec]):
    name: ClassVar[str] = SOURCE
    spec_model: ClassVar[type[SpecModel]] = FileSpec

    def build(self, spec: FileSpec, context: TriggerContext) -> JobTrigger:
        return FileTrigger(
            job_creator=context.job_creator,
            config=spec,
            template=context.template,
            ref=context.ref,
            events=context.events,
        )
