"""Where there is no inotify (any system but Linux), the trigger polls instead of failing: simulated here
by making the platform check fail, on Linux."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.ports.job_trigger import TriggerStartError
from portico.sources.file import FileTrigger, inotify
from portico.sources.file.watchers import InotifyWatcher, PollingWatcher
from tests.sources.conftest import eventually
from tests.sources.file.conftest import POLL, SETTLE, TEMPLATE, files_of, spec, write


@pytest.fixture
def not_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")


def test_inotify_is_found_on_linux() -> None:
    assert inotify.available() == sys.platform.startswith("linux")


@pytest.mark.usefixtures("not_linux")
async def test_without_inotify_auto_falls_back_to_polling(inbox: Path) -> None:
    assert not inotify.available()
    write(inbox / "before.csv")
    creator = InMemoryJobCreator()
    trigger = FileTrigger(creator, spec=spec(inbox), template=TEMPLATE, poll_interval_seconds=POLL)
    await trigger.start()
    try:
        assert isinstance(trigger._watcher, PollingWatcher)
        assert trigger.is_running
        write(inbox / "after.csv")
        await eventually(lambda: len(creator.jobs) == 2)
        with (inbox / "after.csv").open("ab") as f:
            f.write(b"more\n")
        await eventually(lambda: len(creator.jobs) == 3)
        await asyncio.sleep(SETTLE * 2)
    finally:
        await trigger.stop()
    assert files_of(creator) == ["after.csv", "after.csv", "before.csv"]
    assert sorted(job.metadata["file.event"] for job in creator.jobs.values()) == [
        "created",
        "existing",
        "modified",
    ]


@pytest.mark.usefixtures("not_linux")
async def test_asking_for_inotify_without_it_fails_to_start_clearly(inbox: Path) -> None:
    trigger = FileTrigger(InMemoryJobCreator(), spec=spec(inbox), template=TEMPLATE, watcher="inotify")
    with pytest.raises(TriggerStartError) as info:
        await trigger.start()
    assert info.value.reason == "WatchFailed"
    assert "inotify is not available on darwin" in str(info.value)
    assert not trigger.is_running


async def test_polling_reports_moved_in_files_as_moved_in_when_only_that_is_enabled(
    inbox: Path, tmp_path: Path
) -> None:
    creator = InMemoryJobCreator()
    trigger = FileTrigger(
        creator,
        spec=spec(inbox, events=["movedIn"]),
        template=TEMPLATE,
        watcher="polling",
        poll_interval_seconds=POLL,
    )
    await trigger.start()
    try:
        write(tmp_path / "staged.csv")
        (tmp_path / "staged.csv").rename(inbox / "staged.csv")
        await eventually(lambda: len(creator.jobs) == 1)
    finally:
        await trigger.stop()
    [job] = creator.jobs.values()
    assert job.metadata["file.event"] == "movedIn"


async def test_auto_uses_inotify_on_linux(inbox: Path) -> None:
    trigger = FileTrigger(InMemoryJobCreator(), spec=spec(inbox), template=TEMPLATE)
    await trigger.start()
    try:
        expected = InotifyWatcher if sys.platform.startswith("linux") else PollingWatcher
        assert isinstance(trigger._watcher, expected)
    finally:
        await trigger.stop()
