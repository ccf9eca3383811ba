"""The file source as the operator builds it: `spec.file` and the resource's template, into the real queue
service."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from portico.adapters.job_creator.http import HttpJobCreator
from portico.ports.trigger_source import TriggerContext
from portico.sources.file import FileSource, file_key
from tests.sources.conftest import RecordingEvents, eventually
from tests.sources.file.conftest import REF, SETTLE, TEMPLATE, spec, write


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
