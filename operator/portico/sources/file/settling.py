"""When a file is complete: its size and modification time unchanged for `settleSeconds` after the last
change seen. Every watcher (inotify or polling) feeds the same `Settler`, so a slow upload becomes one
job, at its end, whichever way the change was noticed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from portico.sources.file.spec import FileEvent

SOURCE = "file"
Kind = FileEvent | Literal["existing"]
FileState = tuple[int, int]
"""(size, modification time in ns) of one version of a file."""


def file_state(path: Path) -> FileState | None:
    """The state of a regular file, None when it is gone or not a regular file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_size, info.st_mtime_ns


def file_key(ref_key: str, path: str, size: int, mtime_ns: int) -> str:
    """The idempotency key of one version of one file, for one trigger."""
    digest = hashlib.sha256(f"{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape")).hexdigest()
    return f"{SOURCE}/{ref_key}/{digest}"


@dataclass(frozen=True)
class Ready:
    """A settled file version that should become a job."""

    path: Path
    kind: Kind
    size: int
    mtime_ns: int


@dataclass
class _Pending:
    kind: Kind
    emit: bool
    state: FileState
    timer: asyncio.TimerHandle | None = None


class Settler:
    """Files waiting to settle, and the last settled state of every file seen (so that a change back to
    a state already triggered, or a rescan, creates nothing new)."""

    def __init__(
        self,
        *,
        settle_seconds: float,
        enabled: Collection[FileEvent],
        on_ready: Callable[[Ready], None],
        state_of: Callable[[Path], FileState | None] = file_state,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settle_seconds = settle_seconds
        self.enabled = frozenset(enabled)
        self.on_ready = on_ready
        self.state_of = state_of
        self.wall_clock = wall_clock
        self.pending: dict[Path, _Pending] = {}
        self.known: dict[Path, FileState] = {}

    def observe(self, path: Path, kind: Kind) -> None:
        """Something happened to `path`: (re)start its settle clock. A file already present at start
        (`existing`) counts as settled for as long as it has not been modified."""
        state = self.state_of(path)
        if state is None:
            self.forget(path)
            return
        pending = self.pending.get(path)
        if pending is None:
            if kind == "modified" and "modified" not in self.enabled:
                return
            emit = kind == "existing" or kind in self.enabled
            pending = self.pending[path] = _Pending(kind=kind, emit=emit, state=state)
        elif kind in ("created", "movedIn"):
            pending.kind, pending.emit = kind, kind in self.enabled
        if pending.timer is not None:
            pending.timer.cancel()
        pending.state = state
        delay = self.settle_seconds
        if kind == "existing":
            age = max(0.0, self.wall_clock() - state[1] / 1e9)
            delay = max(0.0, delay - age)
        pending.timer = asyncio.get_running_loop().call_later(delay, self.check, path)

    def remember(self, path: Path) -> None:
        """Note a file as it is, without a job: a later change counts as a modification."""
        state = self.state_of(path)
        if state is not None:
            self.known[path] = state

    def check(self, path: Path) -> None:
        """The settle time has passed: hand the file on if it did not change meanwhile."""
        pending = self.pending.get(path)
        if pending is None:
            return
        state = self.state_of(path)
        if state is None:
            self.forget(path)
            return
        if state != pending.state:
            pending.state = state
            pending.timer = asyncio.get_running_loop().call_later(self.settle_seconds, self.check, path)
            return
        del self.pending[path]
        if pending.emit and self.known.get(path) != state:
            self.on_ready(Ready(path, pending.kind, *state))
        self.known[path] = state

    def changed(self, path: Path) -> Kind | None:
        """After lost events: how a file differs from what was last seen (None: not at all, or it is
        settling already)."""
        if path in self.pending:
            return None
        state = self.state_of(path)
        if state is None or self.known.get(path) == state:
            return None
        return "modified" if path in self.known else "created"

    def forget(self, path: Path) -> None:
        pending = self.pending.pop(path, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        self.known.pop(path, None)

    def forget_under(self, directory: Path) -> None:
        for path in [p for p in (*self.pending, *self.known) if directory in p.parents]:
            self.forget(path)

    def still_current(self, ready: Ready) -> bool:
        """Whether the file is still the version that was handed on (a retry of an older version is
        pointless: the new one has a job of its own coming)."""
        return self.state_of(ready.path) == (ready.size, ready.mtime_ns)

    def clear(self) -> None:
        for pending in self.pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self.pending.clear()
