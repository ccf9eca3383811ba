"""The file trigger on a real directory (inotify), into the real queue service: complete files become jobs
once, whatever the writer's pace, the trigger's restarts or the queue service's outages."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic import ValidationError

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import TriggerContext
from portico.sources.file.trigger import FileSource, FileSpec, FileTrigger, file_key, matches
from tests.sources.conftest import CountingJobCreator, RecordingEvents, RestartableQueueService, eventually

SETTLE = 0.2
TEMPLATE = JobTemplate(type="file.import", queue="files", payload={"team": "data"})
REF = TriggerRef(name="incoming", namespace="data", uid="uid-3")


def spec(path: Path, **fields: Any) -> FileSpec:
    return FileSpec.model_validate({"path": str(path), "settleSeconds": SETTLE, **fields})


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
async def memory_trigger(inbox: Path) -> AsyncIterator[Any]:
    """A started trigger factory with an in-memory job creator; everything it starts is stopped."""
    started: list[FileTrigger] = []

    async def start(**fields: Any) -> tuple[FileTrigger, InMemoryJobCreator]:
        creator = InMemoryJobCreator()
        trigger = FileTrigger(job_creator=creator, config=spec(inbox, **fields), template=TEMPLATE, ref=REF)
        await trigger.start()
        started.append(trigger)
        return trigger, creator

    yield start
    for trigger in started:
        await trigger.stop()


def write(path: Path, data: bytes = b"a,b\n1,2\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def files_of(creator: InMemoryJobCreator) -> list[str]:
    return sorted(Path(job.payload["file_path"]).name for job in creator.jobs.values())


# --- the spec and pure parts ---------------------------------------------------------------------------


def test_spec_defaults_and_validation(inbox: Path) -> None:
    assert FileSpec(path="/data").to_resource() == {
        "path": "/data",
        "patterns": ["*"],
        "ignorePatterns": [".*", "*.tmp", "*.part"],
        "recursive": False,
        "events": ["created", "modified", "movedIn"],
        "settleSeconds": 1.0,
        "triggerExisting": True,
    }
    for fields, message in [
        ({"path": "relative/dir"}, "path"),
        ({"patterns": []}, "patterns"),
        ({"patterns": ["/abs/*.csv"]}, "relative"),
        ({"patterns": [""]}, "non-empty glob"),
        ({"events": ["created", "created"]}, "must not repeat"),
        ({"events": ["deleted"]}, "events"),
        ({"settleSeconds": -1}, "settleSeconds"),
    ]:
        with pytest.raises(ValidationError) as info:
            FileSpec.model_validate({"path": "/data", **fields})
        assert message in str(info.value), fields


def test_patterns_match_from_the_right() -> None:
    assert matches(PurePosixPath("a.csv"), ["*.csv"])
    assert matches(PurePosixPath("deep/er/a.csv"), ["*.csv"])
    assert matches(PurePosixPath("exports/a.csv"), ["exports/*.csv"])
    assert not matches(PurePosixPath("imports/a.csv"), ["exports/*.csv"])
    assert not matches(PurePosixPath("a.csv.part"), ["*.csv"])


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


# --- behaviour on a real directory ---------------------------------------------------------------------


async def test_files_become_jobs_in_the_queue_service(inbox: Path, queue_service: Any) -> None:
    write(inbox / "old.csv")
    write(inbox / "notes.txt")
    write(inbox / ".hidden.csv")
    events = RecordingEvents()
    async with HttpJobCreator(queue_service.url) as creator:
        context = TriggerContext(ref=REF, template=TEMPLATE, job_creator=creator, events=events)
        trigger = FileSource().build(spec(inbox, patterns=["*.csv"]), context)
        await trigger.start()
        await trigger.start()  # idempotent
        assert trigger.is_running
        try:
            await eventually(lambda: trigger.get_health().jobs_created_count == 1)
            write(inbox / "new.csv", b"x" * 123)
            write(inbox / "upload.csv.part", b"partial")
            await eventually(lambda: trigger.get_health().jobs_created_count == 2)
            await asyncio.sleep(SETTLE * 2)
        finally:
            await trigger.stop()
        assert not trigger.is_running
    jobs = {Path(job.payload["file_path"]).name: job for job in await queue_service.list_jobs()}
    assert sorted(jobs) == ["new.csv", "old.csv"]
    new = jobs["new.csv"]
    info = os.stat(inbox / "new.csv")
    assert new.job_type == "file.import" and new.queue_name == "files"
    assert new.payload == {
        "team": "data",
        "file_path": str(inbox / "new.csv"),
        "size": 123,
        "mtime": datetime.fromtimestamp(info.st_mtime_ns / 1e9, UTC).isoformat(),
    }
    assert new.idempotency_key == file_key("uid-3", str(inbox / "new.csv"), 123, info.st_mtime_ns)
    assert new.metadata["file.event"] == "created"
    assert new.metadata["trigger.source"] == "file"
    assert jobs["old.csv"].metadata["file.event"] == "existing"
    assert trigger.get_health().source_status == {
        "watchedPath": str(inbox),
        "watching": False,
        "pendingFiles": 0,
    }


async def test_a_slowly_written_file_triggers_once_when_complete(inbox: Path, memory_trigger: Any) -> None:
    trigger, creator = await memory_trigger()
    target = inbox / "big.csv"
    with target.open("wb") as f:
        for _ in range(8):
            f.write(b"x" * 1000)
            f.flush()
            await asyncio.sleep(SETTLE / 2)
            assert not creator.jobs, "triggered before the file was complete"
    await eventually(lambda: len(creator.jobs) == 1)
    await asyncio.sleep(SETTLE * 2)
    [job] = creator.jobs.values()
    assert job.payload["size"] == 8000
    assert trigger.get_health().jobs_created_count == 1


async def test_restart_with_files_present_creates_no_duplicates(inbox: Path, queue_service: Any) -> None:
    """Restarted as the operator does it (a new trigger object) and as a library user may (the same one)."""
    for i in range(5):
        write(inbox / f"f{i}.csv")
    async with HttpJobCreator(queue_service.url) as http:
        creator = CountingJobCreator(http)
        first = FileTrigger(job_creator=creator, config=spec(inbox), template=TEMPLATE, ref=REF)
        second = FileTrigger(job_creator=creator, config=spec(inbox), template=TEMPLATE, ref=REF)
        for trigger, calls in ((first, 5), (first, 10), (second, 15)):
            await trigger.start()
            try:
                await eventually(lambda n=calls: sum(creator.calls.values()) == n)  # type: ignore[misc]
            finally:
                await trigger.stop()
    assert sorted(creator.calls.values()) == [3] * 5, "each start sends each file once"
    assert first.get_health().jobs_created_count == 5, "the restart's resends were jobs already there"
    assert second.get_health().jobs_created_count == 0
    assert len(await queue_service.list_jobs()) == 5, "the later starts created nothing new"


async def test_events_choose_created_moved_in_or_modified(
    inbox: Path, tmp_path: Path, memory_trigger: Any
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(inbox / "existing.csv")
    _, moved_only = await memory_trigger(events=["movedIn"], triggerExisting=False)
    _, created_only = await memory_trigger(events=["created"], triggerExisting=False)
    _, modified_only = await memory_trigger(events=["modified"], triggerExisting=False)
    write(inbox / "written.csv")
    write(outside / "renamed.csv")
    os.rename(outside / "renamed.csv", inbox / "renamed.csv")
    with (inbox / "existing.csv").open("ab") as f:
        f.write(b"3,4\n")
    await eventually(lambda: len(moved_only.jobs) + len(created_only.jobs) + len(modified_only.jobs) == 3)
    await asyncio.sleep(SETTLE * 3)
    assert files_of(moved_only) == ["renamed.csv"]
    assert files_of(created_only) == ["written.csv"]
    assert files_of(modified_only) == ["existing.csv"]
    with (inbox / "written.csv").open("ab") as f:
        f.write(b"more\n")
    await eventually(lambda: len(modified_only.jobs) == 2)
    assert files_of(modified_only) == ["existing.csv", "written.csv"], "a created file's later change counts"


async def test_recursive_watches_new_subdirectories(inbox: Path, memory_trigger: Any) -> None:
    write(inbox / "a" / "one.csv")
    _, flat = await memory_trigger()
    _, deep = await memory_trigger(recursive=True, patterns=["*.csv"])
    await eventually(lambda: len(deep.jobs) == 1)
    (inbox / "b" / "c").mkdir(parents=True)
    write(inbox / "b" / "c" / "two.csv")
    write(inbox / ".git" / "three.csv")
    write(inbox / "top.csv")
    await eventually(lambda: len(deep.jobs) == 3)
    await asyncio.sleep(SETTLE * 2)
    assert files_of(deep) == ["one.csv", "top.csv", "two.csv"]
    assert files_of(flat) == ["top.csv"]


async def test_a_file_gone_before_settling_is_not_triggered(inbox: Path, memory_trigger: Any) -> None:
    trigger, creator = await memory_trigger()
    write(inbox / "brief.csv")
    (inbox / "brief.csv").unlink()
    write(inbox / "stays.csv")
    await eventually(lambda: len(creator.jobs) == 1)
    await asyncio.sleep(SETTLE * 2)
    assert files_of(creator) == ["stays.csv"]
    assert trigger.get_health().source_status["pendingFiles"] == 0


async def test_queue_service_down_retries_without_loss_or_duplicates(
    inbox: Path, restartable_queue_service: RestartableQueueService
) -> None:
    qs = restartable_queue_service
    async with HttpJobCreator(qs.url, deadline=0.2, backoff_max=0.05) as http:
        creator = CountingJobCreator(http)
        trigger = FileTrigger(job_creator=creator, config=spec(inbox), template=TEMPLATE, ref=REF)
        await trigger.start()
        try:
            write(inbox / "first.csv")
            await eventually(lambda: trigger.get_health().jobs_created_count == 1)
            await qs.stop()
            for i in range(10):
                write(inbox / f"during-{i}.csv")
            await eventually(lambda: trigger.get_health().errors_count >= 10)
            assert trigger.is_running
            await qs.start()
            await eventually(lambda: trigger.get_health().jobs_created_count == 11, timeout=30)
        finally:
            await trigger.stop()
    jobs = await qs.list_jobs()
    assert len(jobs) == 11 and len({job.idempotency_key for job in jobs}) == 11


async def test_missing_or_wrong_directory_fails_to_start(tmp_path: Path) -> None:
    creator = InMemoryJobCreator()
    missing = FileTrigger(job_creator=creator, config=spec(tmp_path / "nope"), template=TEMPLATE)
    with pytest.raises(TriggerStartError) as info:
        await missing.start()
    assert info.value.reason == "DirectoryNotFound" and info.value.retryable
    assert str(tmp_path / "nope") in str(info.value)
    assert not missing.is_running
    (tmp_path / "file").write_text("x")
    not_dir = FileTrigger(job_creator=creator, config=spec(tmp_path / "file"), template=TEMPLATE)
    with pytest.raises(TriggerStartError) as info:
        await not_dir.start()
    assert info.value.reason == "NotADirectory"


async def test_removed_directory_is_reported_and_watched_again(inbox: Path, memory_trigger: Any) -> None:
    events = RecordingEvents()
    trigger, creator = await memory_trigger()
    trigger.emitter.events = events
    shutil.rmtree(inbox)
    await eventually(lambda: not trigger.is_running)
    assert "was removed" in (trigger.get_health().last_error or "")
    assert ("Warning", "DirectoryLost") in [(e[0], e[1]) for e in events.events]
    os.mkdir(inbox)
    await eventually(lambda: trigger.is_running, timeout=10)
    write(inbox / "after.csv")
    await eventually(lambda: len(creator.jobs) == 1)
    assert files_of(creator) == ["after.csv"]
