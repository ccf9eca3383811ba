"""Settling on a fast-forwarded clock with files that exist only in a dict: a file is handed on once its
state held still for the settle time, once per version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from portico.sources.file.settling import FileState, Ready, Settler, file_key

pytestmark = pytest.mark.looptime


class Files:
    def __init__(self) -> None:
        self.states: dict[Path, FileState] = {}

    def __call__(self, path: Path) -> FileState | None:
        return self.states.get(path)


def settler(
    files: Files, ready: list[Ready], events: tuple[str, ...] = ("created", "modified", "movedIn")
) -> Settler:
    return Settler(
        settle_seconds=2.0,
        enabled=events,
        on_ready=ready.append,
        state_of=files,
        wall_clock=lambda: 1000.0,  # type: ignore[arg-type]
    )


def test_key_is_path_size_and_mtime_per_trigger() -> None:
    key = file_key("uid-3", "/in/a.csv", 10, 1_000)
    assert key == file_key("uid-3", "/in/a.csv", 10, 1_000)
    assert key.startswith("file/uid-3/")
    others = {
        file_key("uid-4", "/in/a.csv", 10, 1_000),
        file_key("uid-3", "/in/b.csv", 10, 1_000),
        file_key("uid-3", "/in/a.csv", 11, 1_000),
        file_key("uid-3", "/in/a.csv", 10, 1_001),
    }
    assert key not in others and len(others) == 4


async def test_a_growing_file_is_handed_on_once_it_holds_still() -> None:
    files, ready = Files(), []
    s = settler(files, ready)
    path = Path("/in/a.csv")
    for size in (10, 20, 30):
        files.states[path] = (size, size)
        s.observe(path, "created" if size == 10 else "modified")
        await asyncio.sleep(1.5)
        assert ready == []
    await asyncio.sleep(1)
    assert ready == [Ready(path, "created", 30, 30)]
    s.observe(path, "modified")  # same state again: nothing new
    await asyncio.sleep(3)
    assert len(ready) == 1 and s.pending == {}


async def test_a_file_changing_under_the_timer_waits_again() -> None:
    files, ready = Files(), []
    s = settler(files, ready)
    path = Path("/in/b.csv")
    files.states[path] = (1, 1)
    s.observe(path, "created")
    await asyncio.sleep(1)
    files.states[path] = (2, 2)  # changed without an event (a lost one)
    await asyncio.sleep(1.5)
    assert ready == []
    await asyncio.sleep(2)
    assert ready == [Ready(path, "created", 2, 2)]


async def test_disabled_kinds_gone_files_and_existing_ones() -> None:
    files, ready = Files(), []
    s = settler(files, ready, events=("movedIn",))
    created, moved, gone, old = (Path(f"/in/{n}") for n in ("c", "m", "g", "o"))
    files.states.update({created: (1, 1), moved: (1, 1), gone: (1, 1), old: (1, int(990e9))})
    s.observe(created, "created")
    s.observe(moved, "movedIn")
    s.observe(gone, "movedIn")
    s.observe(old, "existing")  # modified 10 s before "now": already settled
    del files.states[gone]
    s.observe(created, "modified")  # not enabled, and not a new file
    await asyncio.sleep(0.01)
    assert [r.path for r in ready] == [old]
    await asyncio.sleep(3)
    assert sorted(r.path.name for r in ready) == ["m", "o"]
    assert created in s.known, "seen, remembered, but no job"
    assert s.changed(created) is None
    files.states[created] = (5, 5)
    assert s.changed(created) == "modified"
    assert s.changed(Path("/in/new")) is None
    files.states[Path("/in/new")] = (1, 1)
    assert s.changed(Path("/in/new")) == "created"


async def test_forgetting_and_clearing_cancel_the_timers() -> None:
    files, ready = Files(), []
    s = settler(files, ready)
    a, b = Path("/in/d/a"), Path("/in/b")
    files.states.update({a: (1, 1), b: (1, 1)})
    s.observe(a, "created")
    s.observe(b, "created")
    s.forget_under(Path("/in/d"))
    assert list(s.pending) == [b]
    s.clear()
    await asyncio.sleep(5)
    assert ready == [] and s.pending == {}
    assert s.still_current(Ready(b, "created", 1, 1))
    assert not s.still_current(Ready(b, "created", 1, 2))
