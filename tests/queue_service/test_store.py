"""The store underneath the API: group commit, atomic idempotency under concurrency, back-pressure,
migrations, draining on close."""

import asyncio
import json
import random
import sqlite3
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from portico.queue_service.settings import QueueServiceSettings
from portico.queue_service.store import JobNotFound, JobStore, StoreUnavailable, iso, new_job_id
from tests.conftest import RunningQueueService

JOB: dict[str, Any] = {
    "job_type": "t",
    "queue_name": "default",
    "priority": 0,
    "payload": {},
    "metadata": {},
    "max_attempts": 3,
}


async def open_store(path: Path | str, **settings: Any) -> JobStore:
    store = JobStore(QueueServiceSettings(db_path=str(path), **settings))
    await store.open()
    return store


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "q.db")
    try:
        results = await asyncio.gather(*(store.create(**JOB, idempotency_key=f"k{n}") for n in range(500)))
        assert all(created for _, created in results)
        assert store.committed_ops == 500
        assert store.commits <= 5
    finally:
        await store.close()


async def test_a_failing_operation_does_not_spoil_its_batch(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "q.db")
    try:
        results = await asyncio.gather(
            store.create(**JOB, idempotency_key="a"),
            store.complete("missing", lease_id="x"),
            store.create(**JOB, idempotency_key="b"),
            return_exceptions=True,
        )
        assert isinstance(results[1], JobNotFound)
        assert results[0][1] is True and results[2][1] is True  # type: ignore[index]
        jobs, _ = await store.list_jobs()
        assert len(jobs) == 2
    finally:
        await store.close()


async def test_a_poisoned_group_commit_fails_only_the_culprit(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "q.db")
    try:
        good, bad, also_good = await asyncio.gather(
            store.create(**JOB, idempotency_key="a"),
            store.create(**{**JOB, "job_type": "\ud800"}, idempotency_key="b"),
            store.create(**JOB, idempotency_key="c"),
            return_exceptions=True,
        )
        assert isinstance(bad, StoreUnavailable)
        assert good[1] is True and also_good[1] is True  # type: ignore[index]
        jobs, _ = await store.list_jobs()
        assert [json.loads(job)["idempotency_key"] for job in jobs] == ["a", "c"]
    finally:
        await store.close()


async def test_back_pressure_rejects_beyond_the_pending_limit(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "q.db", max_pending_writes=10)
    try:
        results = await asyncio.gather(
            *(store.create(**JOB, idempotency_key=None) for _ in range(50)), return_exceptions=True
        )
        assert sum(isinstance(r, StoreUnavailable) for r in results) == 40
        assert len((await store.list_jobs())[0]) == 10
    finally:
        await store.close()


async def test_overload_answers_503_with_retry_after(
    http: aiohttp.ClientSession, queue_service_factory: Any
) -> None:
    service = await queue_service_factory(max_pending_writes=0)
    async with http.post(f"{service.url}/v1/jobs", json={"job_type": "x"}) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert "overloaded" in (await response.json())["error"]


async def test_close_commits_everything_accepted(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "q.db")
    pending = [asyncio.ensure_future(store.create(**JOB, idempotency_key=f"k{n}")) for n in range(100)]
    await asyncio.sleep(0)
    await store.close()
    assert all(task.done() and task.result()[1] for task in pending)
    with pytest.raises(StoreUnavailable):
        await store.create(**JOB, idempotency_key="late")
    reopened = await open_store(tmp_path / "q.db")
    try:
        assert len((await reopened.list_jobs(limit=1000))[0]) == 100
    finally:
        await reopened.close()


async def test_in_memory_store(tmp_path: Path) -> None:
    store = await open_store(":memory:")
    try:
        text, created = await store.create(**JOB, idempotency_key="k")
        assert created
        job = json.loads(text)
        assert await store.get(job["id"]) == text
    finally:
        await store.close()


async def test_migrations_run_once_and_refuse_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = await open_store(path)
    text, _ = await store.create(**JOB, idempotency_key="k")
    job = json.loads(text)
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    store = await open_store(path)
    assert await store.get(job["id"]) == text
    await store.close()

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        await open_store(path)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "portico", "queue-service", "--port", "0", "--db", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    assert b"schema version 99" in stderr


async def test_concurrent_duplicates_create_one_job(
    queue_service: RunningQueueService,
) -> None:
    """Requests race over separate connections; per key exactly one 201, everyone gets the same job."""
    keys = [f"delivery-{n}" for n in range(20)]
    requests = [key for key in keys for _ in range(10)]
    random.Random(4).shuffle(requests)
    connector = aiohttp.TCPConnector(limit=len(requests), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def send(key: str) -> tuple[str, int, str]:
            async with http.post(
                f"{queue_service.url}/v1/jobs", json={"job_type": "t"}, headers={"Idempotency-Key": key}
            ) as response:
                return key, response.status, (await response.json())["id"]

        first_wave = await asyncio.gather(*(send(key) for key in requests))
        second_wave = await asyncio.gather(*(send(key) for key in keys))

    ids: dict[str, set[str]] = {}
    for key, _, job_id in first_wave + second_wave:
        ids.setdefault(key, set()).add(job_id)
    assert all(len(found) == 1 for found in ids.values())
    created = [key for key, status, _ in first_wave if status == 201]
    assert sorted(created) == sorted(keys)
    assert {status for _, status, _ in second_wave} == {200}
    jobs = await queue_service.list_jobs()
    assert sorted(job.idempotency_key for job in jobs) == sorted(keys)


def test_timestamps_render_like_datetime_does() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        ts = rng.uniform(0, 4_000_000_000)
        expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        assert iso(ts) == expected
    assert iso(1_800_000_000.9999996) == "2027-01-15T08:00:01.000000Z"


def test_job_ids_are_unique_time_ordered_uuid7() -> None:
    ids = [new_job_id(1_800_000_000 + (n + 0.5) / 1000) for n in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(uuid.UUID(job_id).version == 7 for job_id in ids)
