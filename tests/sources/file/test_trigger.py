"""The file trigger on a real directory, into the real queue service: complete files become jobs once,
whatever the writer's pace, the trigger's restarts or the queue service's outages. The tests that do not
depend on telling a created file from a moved one run with both watchers (inotify and polling)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.ports.job_trigger import TriggerStartError
from portico.sources.file import FileTrigger
from tests.sources.conftest import CountingJobCreator, RecordingEvents, RestartableQueueService, eventually
from tests.sources.file.conftest import REF, SETTLE, TEMPLATE, files_of, spec, write


async def test_a_slowly_written_file_triggers_once_when_complete(
    inbox: Path, memory_trigger: Any, watcher: str
) -> None:
    trigger, creator = await memory_trigger(watcher)
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
        first = FileTrigger(creator, spec=spec(inbox), template=TEMPLATE, ref=REF)
        second = FileTrigger(creator, spec=spec(inbox), template=TEMPLATE, ref=REF)
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


async def test_recursive_watches_new_subdirectories(inbox: Path, memory_trigger: Any, watcher: str) -> None:
    write(inbox / "a" / "one.csv")
    _, flat = await memory_trigger(watcher)
    _, deep = await memory_trigger(watcher, recursive=True, patterns=["*.csv"])
    await eventually(lambda: len(deep.jobs) == 1)
    (inbox / "b" / "c").mkdir(parents=True)
    write(inbox / "b" / "c" / "two.csv")
    write(inbox / ".git" / "three.csv")
    write(inbox / "top.csv")
    await eventually(lambda: len(deep.jobs) == 3)
    await asyncio.sleep(SETTLE * 2)
    assert files_of(deep) == ["one.csv", "top.csv", "two.csv"]
    assert files_of(flat) == ["top.csv"]


async def test_a_file_gone_before_settling_is_not_triggered(
    inbox: Path, memory_trigger: Any, watcher: str
) -> None:
    trigger, creator = await memory_trigger(watcher)
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
        trigger = FileTrigger(creator, spec=spec(inbox), template=TEMPLATE, ref=REF)
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
    missing = FileTrigger(creator, spec=spec(tmp_path / "nope"), template=TEMPLATE)
    with pytest.raises(TriggerStartError) as info:
        await missing.start()
    assert info.value.reason == "DirectoryNotFound" and info.value.retryable
    assert str(tmp_path / "nope") in str(info.value)
    assert not missing.is_running
    (tmp_path / "file").write_text("x")
    not_dir = FileTrigger(creator, spec=spec(tmp_path / "file"), template=TEMPLATE)
    with pytest.raises(TriggerStartError) as info:
        await not_dir.start()
    assert info.value.reason == "NotADirectory"


async def test_removed_directory_is_reported_and_watched_again(
    inbox: Path, memory_trigger: Any, watcher: str
) -> None:
    events = RecordingEvents()
    trigger, creator = await memory_trigger(watcher)
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


async def test_seed_constructor_defaults(inbox: Path) -> None:
    """The seed's positional shape: recursive, queue file_processing, job type file.process by default."""
    creator = InMemoryJobCreator()
    trigger = FileTrigger(creator, inbox, settle_seconds=SETTLE)
    assert trigger.spec.recursive and trigger.spec.path == str(inbox)
    await trigger.start()
    try:
        write(inbox / "deep" / "er" / "upload.bin")
        await eventually(lambda: len(creator.jobs) == 1)
    finally:
        await trigger.stop()
    [job] = creator.jobs.values()
    assert (job.job_type, job.queue_name) == ("file.process", "file_processing")
    assert job.payload["file_path"] == str(inbox / "deep" / "er" / "upload.bin")
    named = FileTrigger(
        job_creator=creator,
        watch_path=inbox,
        job_type="csv.import",
        queue_name="imports",
        patterns=["*.csv"],
        file_events=["movedIn"],
        recursive=False,
    )
    assert named.spec.patterns == ["*.csv"] and named.spec.events == ["movedIn"]
    assert not named.spec.recursive
    assert named.emitter.template is not None and named.emitter.template.queue == "imports"


def test_constructor_refuses_ambiguity_and_bad_options(inbox: Path) -> None:
    creator = InMemoryJobCreator()
    with pytest.raises(TypeError, match="watch_path"):
        FileTrigger(creator)
    with pytest.raises(TypeError, match="not both"):
        FileTrigger(creator, inbox, spec=spec(inbox))
    with pytest.raises(ValueError, match="patterns"):
        FileTrigger(creator, inbox, patterns=["/abs"])
    relative = FileTrigger(creator, Path("uploads"))
    assert relative.spec.path == os.path.abspath("uploads")
