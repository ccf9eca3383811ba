"""Shared parts of the file source's tests: a watched inbox, a factory of started triggers (inotify or
polling) with an in-memory job creator, and small helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.sources.file import FileSpec, FileTrigger

SETTLE = 0.2
POLL = 0.05
TEMPLATE = JobTemplate(type="file.import", queue="files", payload={"team": "data"})
REF = TriggerRef(name="incoming", namespace="data", uid="uid-3")


def spec(path: Path, **fields: Any) -> FileSpec:
    return FileSpec.model_validate({"path": str(path), "settleSeconds": SETTLE, **fields})


def write(path: Path, data: bytes = b"a,b\n1,2\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def files_of(creator: InMemoryJobCreator) -> list[str]:
    return sorted(Path(job.payload["file_path"]).name for job in creator.jobs.values())


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture(params=["inotify", "polling"])
def watcher(request: pytest.FixtureRequest) -> str:
    """Both ways of noticing changes; polling is what runs where there is no inotify."""
    return str(request.param)


@pytest.fixture
async def memory_trigger(inbox: Path) -> AsyncIterator[Any]:
    """A started trigger factory with an in-memory job creator; everything it starts is stopped."""
    started: list[FileTrigger] = []

    async def start(watcher: str = "inotify", **fields: Any) -> tuple[FileTrigger, InMemoryJobCreator]:
        creator = InMemoryJobCreator()
        trigger = FileTrigger(
            creator,
            spec=spec(inbox, **fields),
            template=TEMPLATE,
            ref=REF,
            watcher=watcher,  # type: ignore[arg-type]
            poll_interval_seconds=POLL,
        )
        await trigger.start()
        started.append(trigger)
        return trigger, creator

    yield start
    for trigger in started:
        await trigger.stop()
