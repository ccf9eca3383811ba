"""A minimal binding of Linux inotify(7) through ctypes: non-blocking, read on the event loop.

inotify is used directly rather than through a wrapper such as watchfiles because the wrappers fold
"created" and "moved in" into one "added" change, and users choose between them (a directory fed by atomic
renames wants `movedIn` only, so the uploader's temporary files never become jobs).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import sys
from collections.abc import Iterator

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


class InotifyUnavailable(OSError):
    """This system has no inotify (not Linux, or a libc without it)."""


def available() -> bool:
    """Whether inotify can be used here: Linux, with a libc that has `inotify_init1`."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None), "inotify_init1")
    except (OSError, TypeError):
        return False


class Inotify:
    """One inotify instance, non-blocking; `read()` returns what is queued."""

    def __init__(self) -> None:
        if not available():
            raise InotifyUnavailable(f"inotify is not available on {sys.platform}")
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.inotify_init1.argtypes = [ctypes.c_int]
        self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
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
