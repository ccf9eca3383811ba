"""The seed's file-system trigger (its "File System Trigger for Processing Uploads" example, and the file
trigger of its "Multiple Triggers with Application Lifecycle" example) run as written with the library's
`FileTrigger`: imports adapted, and `/uploads` a real temporary directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.kits.job.job_service import JobService
from portico.sources.file import FileTrigger
from tests.sources.conftest import eventually


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


async def test_file_system_trigger_for_processing_uploads(uploads: Path) -> None:
    job_queue = InMemoryJobQueue()
    job_service = JobService(job_queue=job_queue)

    # Usage
    file_trigger = FileTrigger(
        job_creator=job_service,
        watch_path=Path(uploads),
        job_type="file.process",
        queue_name="file_processing",
    )

    await file_trigger.start()

    # Jobs will be created automatically when files are uploaded to /uploads
    try:
        (uploads / "alice").mkdir()
        (uploads / "alice" / "photo.jpg").write_bytes(b"\xff\xd8" + b"x" * 1000)
        (uploads / "report.pdf").write_bytes(b"%PDF-1.7")
        await eventually(lambda: len(job_queue.jobs) == 2)
        await asyncio.sleep(0.5)
    finally:
        await file_trigger.stop()
    assert not file_trigger.is_running
    jobs = sorted(job_queue.jobs.values(), key=lambda job: job.payload["file_path"])
    assert [job.payload["file_path"] for job in jobs] == [
        str(uploads / "alice" / "photo.jpg"),
        str(uploads / "report.pdf"),
    ], "recursive, as the seed's observer"
    assert {(job.job_type, job.queue_name) for job in jobs} == {("file.process", "file_processing")}


async def test_lifecycle_example_file_trigger_with_the_defaults(uploads: Path) -> None:
    job_queue = InMemoryJobQueue()
    job_service = JobService(job_queue=job_queue)

    file_trigger = FileTrigger(job_creator=job_service, watch_path=Path(uploads))

    await file_trigger.start()
    try:
        assert file_trigger.is_running
        (uploads / "batch.csv").write_text("a,b\n")
        await eventually(lambda: len(job_queue.jobs) == 1)
    finally:
        await file_trigger.stop()
    [job] = job_queue.jobs.values()
    assert job.queue_name == "file_processing"
