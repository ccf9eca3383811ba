"""The status writer coalesces: many changes become about one patch per interval, only changed fields
are sent, and nothing is lost at close."""

import asyncio
import itertools
from typing import Any

import pytest

from portico.domain.trigger import TriggerRef
from portico.operator.status import (
    ConflictError,
    ObjectStatus,
    ResourceGoneError,
    StatusPatcher,
    StatusWriter,
)

REF = TriggerRef(name="t", namespace="ns", uid="u1")


class RecordingPatcher(StatusPatcher):
    """The API server's side: a status, a resourceVersion, and the patches it received."""

    def __init__(self) -> None:
        self.patches: list[tuple[float, dict[str, Any]]] = []
        self.server: dict[str, Any] = {}
        self.version = 1
        self.fail_next = 0
        self.gone = False

    async def patch_status(
        self, ref: TriggerRef, patch: dict[str, Any], resource_version: str | None = None
    ) -> ObjectStatus:
        if self.gone:
            raise ResourceGoneError(str(ref))
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("API server unavailable")
        if resource_version is not None and resource_version != str(self.version):
            raise ConflictError(str(ref))
        self.patches.append((asyncio.get_running_loop().time(), patch))
        self.server.update(patch)
        self.version += 1
        return ObjectStatus(dict(self.server), str(self.version))

    async def read_status(self, ref: TriggerRef) -> ObjectStatus:
        return ObjectStatus(dict(self.server), str(self.version))

    def other_writer_adds(self, key: str, amount: int) -> None:
        self.server[key] = self.server.get(key, 0) + amount
        self.version += 1


@pytest.fixture
async def writer() -> Any:
    patcher = RecordingPatcher()
    w = StatusWriter(patcher, interval=1.0)
    await w.start()
    yield w, patcher
    await w.close()


@pytest.mark.looptime
async def test_many_changes_coalesce_into_one_patch_per_interval(writer: Any) -> None:
    w, patcher = writer
    state = {"jobsCreated": 0}
    w.track("u1", REF, lambda: dict(state))
    for _ in range(1000):
        state["jobsCreated"] += 1
        w.mark_dirty("u1")
        await asyncio.sleep(0.005)  # 1,000 jobs over 5 seconds
    await asyncio.sleep(1.5)
    assert 5 <= len(patcher.patches) <= 7
    times = [t for t, _ in patcher.patches]
    assert all(b - a >= 0.999 for a, b in itertools.pairwise(times))
    assert patcher.patches[-1][1] == {"jobsCreated": 1000}


@pytest.mark.looptime
async def test_only_changed_fields_are_sent(writer: Any) -> None:
    w, patcher = writer
    state = {"phase": "Running", "jobsCreated": 1}
    patcher.server = {"phase": "Running"}
    w.track("u1", REF, lambda: dict(state), status={"phase": "Running"}, resource_version="1")
    await asyncio.sleep(0.1)
    assert patcher.patches[-1][1] == {"jobsCreated": 1}
    state["other"] = None
    w.mark_dirty("u1")
    await asyncio.sleep(2)
    assert len(patcher.patches) == 1, "nothing changed, so nothing is written"


@pytest.mark.looptime
async def test_urgent_change_is_written_at_once(writer: Any) -> None:
    w, patcher = writer
    state = {"phase": "Pending"}
    w.track("u1", REF, lambda: dict(state))
    await asyncio.sleep(0.01)
    state["phase"] = "Running"
    start = asyncio.get_running_loop().time()
    w.mark_dirty("u1", urgent=True)
    await asyncio.sleep(0.01)
    assert patcher.patches[-1] == (pytest.approx(start, abs=0.02), {"phase": "Running"})


@pytest.mark.looptime
async def test_failed_patch_is_retried(writer: Any) -> None:
    w, patcher = writer
    patcher.fail_next = 2
    w.track("u1", REF, lambda: {"phase": "Running"})
    await asyncio.sleep(5)
    assert [p for _, p in patcher.patches] == [{"phase": "Running"}]
    assert w.errors == 2


@pytest.mark.looptime
async def test_deleted_resource_is_no_longer_written(writer: Any) -> None:
    w, patcher = writer
    patcher.gone = True
    state = {"jobsCreated": 1}
    w.track("u1", REF, lambda: dict(state))
    await asyncio.sleep(0.1)
    patcher.gone = False
    state["jobsCreated"] = 2
    w.mark_dirty("u1")
    await asyncio.sleep(2)
    assert patcher.patches == []


@pytest.mark.looptime
async def test_close_flushes_pending_changes() -> None:
    patcher = RecordingPatcher()
    w = StatusWriter(patcher, interval=10.0)
    await w.start()
    state = {"jobsCreated": 1}
    w.track("u1", REF, lambda: dict(state))
    await asyncio.sleep(0.1)
    state["jobsCreated"] = 7
    w.mark_dirty("u1")
    await w.close()
    assert patcher.patches[-1][1] == {"jobsCreated": 7}


@pytest.mark.looptime
async def test_many_resources_are_written_independently(writer: Any) -> None:
    w, patcher = writer
    for i in range(50):
        w.track(f"u{i}", TriggerRef(name=f"t{i}", namespace="ns", uid=f"u{i}"), lambda i=i: {"n": i})
    await asyncio.sleep(0.5)
    assert sorted(p["n"] for _, p in patcher.patches) == list(range(50))


@pytest.mark.looptime
async def test_counters_are_added_to_what_other_writers_wrote(writer: Any) -> None:
    w, patcher = writer
    patcher.server = {"jobsCreated": 100}
    state = {"jobsCreated": 0}
    w.track("u1", REF, lambda: dict(state), status={"jobsCreated": 100}, resource_version="1")
    state["jobsCreated"] = 5
    w.mark_dirty("u1")
    await asyncio.sleep(1.1)
    assert patcher.server["jobsCreated"] == 105
    patcher.other_writer_adds("jobsCreated", 7)  # another replica, unseen by our watch yet
    state["jobsCreated"] = 8
    w.mark_dirty("u1")
    await asyncio.sleep(1.1)
    assert patcher.server["jobsCreated"] == 115, "the conflict was re-read, nothing was overwritten"
    assert w.conflicts == 1


@pytest.mark.looptime
async def test_restarted_writer_continues_from_the_server_total(writer: Any) -> None:
    w, patcher = writer
    patcher.server = {"jobsCreated": 40, "errors": 2}
    w.track(
        "u1", REF, lambda: {"jobsCreated": 3, "errors": 0}, status=dict(patcher.server), resource_version="1"
    )
    await asyncio.sleep(0.1)
    assert patcher.server == {"jobsCreated": 43, "errors": 2}
    assert patcher.patches[-1][1] == {"jobsCreated": 43}


@pytest.mark.looptime
async def test_a_conflict_during_the_final_flush_is_re_read_and_written() -> None:
    """A stopping operator's last counts must not be lost because another writer (a finalizer update,
    a replica) moved the resourceVersion just before the final flush."""
    patcher = RecordingPatcher()
    w = StatusWriter(patcher, interval=10.0)
    await w.start()
    state = {"jobsCreated": 0}
    w.track("u1", REF, lambda: dict(state), status={}, resource_version="1")
    await asyncio.sleep(0.1)
    patcher.other_writer_adds("errors", 0)  # the version moves; our copy is stale
    state["jobsCreated"] = 3
    w.mark_dirty("u1")
    await w.close()
    assert patcher.server["jobsCreated"] == 3
    assert w.conflicts == 1


class SlowFirstPatcher(RecordingPatcher):
    """The first patch takes a second to reach the server; a patch sent meanwhile would overtake it."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0

    async def patch_status(
        self, ref: TriggerRef, patch: dict[str, Any], resource_version: str | None = None
    ) -> ObjectStatus:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if not self.patches:
                await asyncio.sleep(1.0)
            return await super().patch_status(ref, patch, resource_version)
        finally:
            self.in_flight -= 1


@pytest.mark.looptime
async def test_writes_of_one_object_never_overtake_each_other() -> None:
    patcher = SlowFirstPatcher()
    w = StatusWriter(patcher, interval=1.0)
    await w.start()
    state = {"phase": "Pending"}
    w.track("u1", REF, lambda: dict(state))
    await asyncio.sleep(0.1)
    state["phase"] = "Running"
    w.mark_dirty("u1", urgent=True)
    await asyncio.sleep(3)
    await w.close()
    assert patcher.most_in_flight == 1
    assert [p for _, p in patcher.patches] == [{"phase": "Pending"}, {"phase": "Running"}]
    assert patcher.server["phase"] == "Running"
