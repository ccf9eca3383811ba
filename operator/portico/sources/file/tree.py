"""Which files of the watched directory count: pattern matching, and walking the tree the way the spec
says (recursive or not, ignored directories skipped)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath


def matches(relative: PurePosixPath, patterns: Sequence[str]) -> bool:
    """Whether a path relative to the watched directory matches one of the globs (from the right, as
    pathlib's `PurePath.match`)."""
    return any(relative.match(pattern) for pattern in patterns)


class Tree:
    """The watched directory as the spec sees it."""

    def __init__(
        self, root: Path, *, patterns: Sequence[str], ignore_patterns: Sequence[str], recursive: bool
    ) -> None:
        self.root = root
        self.patterns = tuple(patterns)
        self.ignore_patterns = tuple(ignore_patterns)
        self.recursive = recursive

    def relative(self, path: Path) -> PurePosixPath:
        return PurePosixPath(path.relative_to(self.root).as_posix())

    def ignored(self, path: Path) -> bool:
        return matches(self.relative(path), self.ignore_patterns)

    def wanted(self, path: Path) -> bool:
        relative = self.relative(path)
        return matches(relative, self.patterns) and not matches(relative, self.ignore_patterns)

    def subdirectories(self, directory: Path) -> list[Path]:
        """The directories right under `directory` that are not ignored."""
        try:
            with os.scandir(directory) as entries:
                return [
                    Path(entry.path)
                    for entry in entries
                    if entry.is_dir(follow_symlinks=False) and not self.ignored(Path(entry.path))
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def all_subdirectories(self, directory: Path) -> Iterator[Path]:
        for sub in self.subdirectories(directory):
            yield sub
            yield from self.all_subdirectories(sub)

    def directories(self) -> list[Path]:
        """The root and, when recursive, every directory under it that is not ignored."""
        return [self.root, *(self.all_subdirectories(self.root) if self.recursive else ())]

    def files(
        self, directory: Path, on_error: Callable[[Path, OSError], None] | None = None
    ) -> Iterator[Path]:
        """Every wanted file under `directory` (into subdirectories when recursive). A directory that
        cannot be listed is reported to `on_error` and skipped; one that vanished is skipped quietly."""
        try:
            with os.scandir(directory) as entries:
                found = list(entries)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if on_error is not None:
                on_error(directory, exc)
            return
        for entry in found:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if self.recursive and not self.ignored(path):
                    yield from self.files(path, on_error)
            elif self.wanted(path):
                yield path
