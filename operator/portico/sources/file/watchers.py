"""How changes under the watched directory are noticed: Linux inotify where there is one, polling
elsewhere (or where asked: network file systems do not report remote writes to inotify). Both hand what
they see to the same `Settler`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from portico.ports.job_trigger import TriggerStartError
from portico.sources.file import inotify
from portico.sources.file.inotify import Inotify
from portico.sources.file.settling import FileState, Kind, Settler, file_state
from portico.sources.file.tree import Tree

logger = logging.getLogger(__name__)


class Watcher(ABC):
    """Feeds the settler with the changes under `tree`. `on_lost` is called when the watched directory
    itself goes away (removed, moved, unmounted); `on_error` with a message for status."""

    def __init__(
        self,
        tree: Tree,
        settler: Settler,
        *,
        on_lost: Callable[[], None],
        on_error: Callable[[str], None],
    ) -> None:
        self.tree = tree
        self.settler = settler
        self.on_lost = on_lost
        self.on_error = on_error

    @abstractmethod
    def open(self) -> None:
        """Start noticing changes. Raises `TriggerStartError`."""

    @abstractmethod
    def close(self) -> None:
        """Stop noticing changes; safe to call twice."""

    def observe_new_directory(self, directory: Path, kind: Kind) -> None:
        """A directory appeared: every file in it is new."""
        for path in self.tree.files(directory, self._list_error):
            self.settler.observe(path, kind)

    def _list_error(self, directory: Path, exc: OSError) -> None:
        self.on_error(f"cannot list {directory}: {exc.strerror}")


class InotifyWatcher(Watcher):
    """One inotify watch per directory, read on the event loop: no polling, no thread."""

    def __init__(
        self,
        tree: Tree,
        settler: Settler,
        *,
        on_lost: Callable[[], None],
        on_error: Callable[[str], None],
    ) -> None:
        super().__init__(tree, settler, on_lost=on_lost, on_error=on_error)
        self._inotify: Inotify | None = None
        self._dirs: dict[int, Path] = {}

    def open(self) -> None:
        try:
            handle = Inotify()
        except inotify.InotifyUnavailable as exc:
            raise TriggerStartError(
                f"cannot watch {self.tree.root}: {exc} (use polling)", reason="WatchFailed", retryable=False
            ) from None
        except OSError as exc:
            raise TriggerStartError(
                f"cannot watch {self.tree.root}: {exc.strerror} (fs.inotify.max_user_instances reached?)",
                reason="WatchFailed",
            ) from None
        self._inotify, self._dirs = handle, {}
        try:
            self._watch_tree(self.tree.root)
        except OSError as exc:
            self.close()
            raise TriggerStartError(self._watch_error(exc), reason="WatchFailed") from None
        asyncio.get_running_loop().add_reader(handle.fd, self._on_readable)

    def close(self) -> None:
        handle, self._inotify = self._inotify, None
        if handle is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(handle.fd)
            handle.close()
        self._dirs = {}

    def _watch_error(self, exc: OSError) -> str:
        if exc.errno == errno.ENOSPC:
            return (
                f"cannot watch {exc.filename or self.tree.root}: the inotify watch limit is reached "
                "(raise fs.inotify.max_user_watches)"
            )
        return f"cannot watch {exc.filename or self.tree.root}: {exc.strerror}"

    def _watch_tree(self, directory: Path) -> None:
        assert self._inotify is not None
        self._dirs[self._inotify.add_watch(str(directory), inotify.WATCH_MASK)] = directory
        if not self.tree.recursive:
            return
        for sub in self.tree.subdirectories(directory):
            try:
                self._watch_tree(sub)
            except FileNotFoundError:
                continue

    def _on_readable(self) -> None:
        if self._inotify is None:
            return
        try:
            for wd, mask, name in list(self._inotify.read()):
                if self._inotify is None:
                    return
                self._dispatch(wd, mask, name)
        except Exception as exc:
            logger.exception("handling file events under %s failed", self.tree.root)
            self.on_error(f"handling file events failed: {exc}")

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        if mask & inotify.IN_Q_OVERFLOW:
            logger.warning("inotify queue overflowed; rescanning %s", self.tree.root)
            self._rescan()
            return
        directory = self._dirs.get(wd)
        if directory is None:
            return
        if not name:
            if mask & (
                inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_UNMOUNT | inotify.IN_IGNORED
            ):
                if directory == self.tree.root:
                    self.close()
                    self.on_lost()
                else:
                    self._dirs.pop(wd, None)
            return
        path = directory / name
        if mask & inotify.IN_ISDIR:
            self._directory_event(path, mask)
        elif mask & (inotify.IN_DELETE | inotify.IN_MOVED_FROM):
            self.settler.forget(path)
        elif self.tree.wanted(path):
            if mask & inotify.IN_MOVED_TO:
                self.settler.observe(path, "movedIn")
            elif mask & inotify.IN_CREATE:
                self.settler.observe(path, "created")
            elif mask & (inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE | inotify.IN_ATTRIB):
                self.settler.observe(path, "modified")

    def _directory_event(self, path: Path, mask: int) -> None:
        if not self.tree.recursive or self.tree.ignored(path):
            return
        if mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
            try:
                self._watch_tree(path)
            except FileNotFoundError:
                return
            except OSError as exc:
                self.on_error(self._watch_error(exc))
                return
            self.observe_new_directory(path, "movedIn" if mask & inotify.IN_MOVED_TO else "created")
        elif mask & inotify.IN_MOVED_FROM and self._inotify is not None:
            for wd, watched in list(self._dirs.items()):
                if watched == path or path in watched.parents:
                    self._inotify.remove_watch(wd)
                    self._dirs.pop(wd, None)
            self.settler.forget_under(path)

    def _rescan(self) -> None:
        """After lost events: watch what is not watched, and look again at every file whose state is not
        the one last seen."""
        watched = set(self._dirs.values())
        for directory in self.tree.directories():
            if directory not in watched:
                with contextlib.suppress(OSError):
                    self._watch_tree(directory)
        for path in list(self.tree.files(self.tree.root)):
            kind = self.settler.changed(path)
            if kind is not None:
                self.settler.observe(path, kind)


class PollingWatcher(Watcher):
    """Lists the tree every `interval` seconds (in a thread, so a large tree does not stall the loop) and
    reports what appeared, changed or went away. Polling cannot tell a file written in place from one
    moved in: a new file counts as `created`, or as `movedIn` when only that is enabled."""

    def __init__(
        self,
        tree: Tree,
        settler: Settler,
        *,
        on_lost: Callable[[], None],
        on_error: Callable[[str], None],
        interval: float,
    ) -> None:
        super().__init__(tree, settler, on_lost=on_lost, on_error=on_error)
        self.interval = interval
        self._seen: dict[Path, FileState] = {}
        self._task: asyncio.Task[None] | None = None
        enabled = settler.enabled
        self._new_kind: Kind = "movedIn" if "movedIn" in enabled and "created" not in enabled else "created"

    def open(self) -> None:
        self._seen = self._snapshot(report=True)
        self._task = asyncio.get_running_loop().create_task(self._poll(), name=f"poll {self.tree.root}")

    def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _snapshot(self, *, report: bool = False) -> dict[Path, FileState]:
        """Every wanted file and its state; an unreadable directory is reported once, at open."""
        found: dict[Path, FileState] = {}
        for path in self.tree.files(self.tree.root, self._list_error if report else None):
            state = file_state(path)
            if state is not None:
                found[path] = state
        return found

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not await asyncio.to_thread(self.tree.root.is_dir):
                self.close()
                self.on_lost()
                return
            try:
                current = await asyncio.to_thread(self._snapshot)
            except Exception as exc:
                logger.exception("listing %s failed", self.tree.root)
                self.on_error(f"listing {self.tree.root} failed: {exc}")
                continue
            self._apply(current)

    def _apply(self, current: dict[Path, FileState]) -> None:
        previous, self._seen = self._seen, current
        for path in previous.keys() - current.keys():
            self.settler.forget(path)
        for path, state in current.items():
            before = previous.get(path)
            if before is None:
                self.settler.observe(path, self._new_kind)
            elif before != state:
                self.settler.observe(path, "modified")
