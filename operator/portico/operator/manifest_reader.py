"""Reading manifests an attacker may have written: bounded in size, time, depth and alias expansion.

`portico validate` runs in CI on files from pull requests. A YAML alias bomb, a nesting thousands deep, a
FIFO, `/dev/zero` or a 5,000-digit integer must each end in one clear line, not a hang, a MemoryError or
a traceback. Reading is split from validation so that every limit lives in one place.
"""

import math
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 4 * 1024 * 1024
"""A manifest file larger than this is refused unread (the API server takes objects up to about 1.5 MB)."""
MAX_FILES = 10_000
"""A directory holding more manifest files than this is refused."""
MAX_DEPTH = 100
"""Deepest nesting of mappings and sequences in one document, counted through aliases."""
MAX_NODES = 200_000
"""Most values in one document once its aliases are expanded: an alias bomb is refused before it is
expanded, so memory and time stay bounded whatever the file says."""
MAX_INTEGER_DIGITS = 32
"""Longer integers are refused (the API server's integers are 64-bit; Python would refuse past 4,300)."""
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class UnreadableInput(Exception):
    """The input could not be read as text at all (missing, not a regular file, too large, binary)."""


class InvalidYaml(Exception):
    """The text is not YAML this tool accepts (syntax, limits, values JSON cannot hold)."""


@dataclass(frozen=True)
class Source:
    name: str
    text: str


def read_sources(paths: list[str]) -> Iterator[Source | tuple[str, UnreadableInput]]:
    """Each named file, each manifest file under a named directory, or standard input for `-`; an
    input that cannot be read comes back as `(name, error)` instead."""
    for p in paths:
        if p == "-":
            try:
                yield Source("<stdin>", _decode(_read_stdin()))
            except UnreadableInput as exc:
                yield "<stdin>", exc
            continue
        try:
            is_dir = os.path.isdir(p)
        except (OSError, ValueError):
            is_dir = False
        if not is_dir:
            yield _read_one(p)
            continue
        try:
            files = _manifest_files(p)
        except UnreadableInput as exc:
            yield p, exc
            continue
        for f in files:
            yield _read_one(f)


def _read_one(path: str) -> Source | tuple[str, UnreadableInput]:
    try:
        return Source(path, _decode(read_bounded(path)))
    except UnreadableInput as exc:
        return path, exc


def _manifest_files(directory: str) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(directory, onerror=None, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(MANIFEST_SUFFIXES):
                found.append(str(Path(root) / name))
                if len(found) > MAX_FILES:
                    raise UnreadableInput(f"holds more than {MAX_FILES} manifest files")
    return found


def read_bounded(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opening never blocks (a FIFO without a
    writer), and devices, FIFOs and sockets are refused before anything is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UnreadableInput("no such file or directory") from None
    except PermissionError:
        raise UnreadableInput("permission denied") from None
    except (OSError, ValueError) as exc:
        raise UnreadableInput(_os_error(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableInput("not a regular file (a device, FIFO or socket is not read)")
        if info.st_size > limit:
            raise UnreadableInput(f"larger than {limit} bytes ({info.st_size})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return _read_limited(f, limit)
    except OSError as exc:
        raise UnreadableInput(_os_error(exc)) from None
    finally:
        os.close(fd)


def _read_limited(stream: Any, limit: int = MAX_FILE_BYTES) -> bytes:
    data: bytes = stream.read(limit + 1)
    if len(data) > limit:
        raise UnreadableInput(f"larger than {limit} bytes")
    return data


def _read_stdin() -> bytes:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is not None:
        return _read_limited(stream)
    text: str = sys.stdin.read(MAX_FILE_BYTES + 1)
    if len(text) > MAX_FILE_BYTES:
        raise UnreadableInput(f"larger than {MAX_FILE_BYTES} bytes")
    return text.encode("utf-8", "surrogateescape")


def _os_error(exc: BaseException) -> str:
    return exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableInput("is UTF-16 encoded; save it as UTF-8")
    if b"\x00" in data:
        raise UnreadableInput("is a binary file (it contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableInput(f"is not UTF-8 text (byte {exc.start})") from None


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, composing no deeper than `MAX_DEPTH` and refusing integers longer than
    `MAX_INTEGER_DIGITS` and floats JSON cannot hold."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise InvalidYaml(f"{_where(mark)}nested deeper than {MAX_DEPTH} levels")
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_INTEGER_DIGITS:
            raise InvalidYaml(
                f"{_where(node.start_mark)}an integer of {digits} digits is too large "
                f"(at most {MAX_INTEGER_DIGITS})"
            )
        value: int = super().construct_yaml_int(node)
        return value

    def construct_yaml_float(self, node: ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise InvalidYaml(f"{_where(node.start_mark)}{node.value} is not a number JSON can hold")
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_yaml_float)


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _check_expansion(root: Node) -> None:
    """Refuse a document whose aliases would expand past `MAX_NODES` values or `MAX_DEPTH` levels, or
    refer to themselves. Computed once per distinct node (iteratively), so it costs what the file
    holds, not what it would expand to."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            visiting.discard(key)
            if size[key] > MAX_NODES:
                raise InvalidYaml(
                    f"{_where(node.start_mark)}aliases expand to more than {MAX_NODES} values "
                    "(an alias bomb?)"
                )
            if depth[key] > MAX_DEPTH:
                raise InvalidYaml(f"{_where(node.start_mark)}aliases expand deeper than {MAX_DEPTH} levels")
            continue
        if key in size:
            continue
        if key in visiting:
            raise InvalidYaml(f"{_where(node.start_mark)}an alias refers to the value that contains it")
        visiting.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_documents(text: str) -> list[Any]:
    """Every document of a YAML (or JSON) text, within the limits above. Raises `InvalidYaml` with a
    one-line message."""
    loader: _BoundedLoader | None = None
    documents: list[Any] = []
    try:
        loader = _BoundedLoader(text)
        while loader.check_node():
            root = loader.get_node()
            if root is None:
                continue
            _check_expansion(root)
            documents.append(loader.construct_document(root))
    except InvalidYaml:
        raise
    except (ComposerError, ConstructorError, yaml.MarkedYAMLError) as exc:
        raise InvalidYaml(f"{_where(exc.problem_mark)}{exc.problem or exc.context or 'invalid'}") from None
    except yaml.YAMLError as exc:
        raise InvalidYaml(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        raise InvalidYaml(f"cannot be loaded: {type(exc).__name__}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return documents
