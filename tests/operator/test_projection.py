"""The status projection: counters across trigger instances and operator restarts, and the source's
own fields checked against its status model."""

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import Field

from portico.domain.model import SpecModel
from portico.operator.projection import SourceFields, source_fields
from tests.operator.fakes import resource, settle


@pytest.mark.looptime
async def test_counters_survive_reconfigure_and_restart(env: Any) -> None:
    registry, source, patcher, _, _ = env
    patcher.status.update({"jobsCreated": 10, "errors": 2})
    await registry.apply(resource(status={"jobsCreated": 10, "errors": 2}))
    await source.built[0].emitter.emit(payload={"n": 1})
    await registry.apply(resource(2))
    await source.built[1].emitter.emit(payload={"n": 2})
    await settle()
    assert patcher.status["jobsCreated"] == 12
    assert patcher.status["errors"] == 2
    assert patcher.status["lastJobId"]


class Status(SpecModel):
    last_poll_time: datetime | None = Field(default=None, description="When.")
    rows: int | None = Field(default=None, description="How many.")


def test_source_fields_are_written_as_json_under_their_wire_names() -> None:
    moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    own = source_fields({"lastPollTime": moment, "rows": 3}, Status)
    assert own == SourceFields({"lastPollTime": "2026-03-02T09:00:00Z", "rows": 3})


def test_an_undeclared_key_is_left_out_and_named() -> None:
    """The API server would prune it silently: the projection names it instead."""
    own = source_fields({"rows": 3, "row_count": 4, "last_poll_time": "2026-03-02T09:00:00Z"}, Status)
    assert own.values == {"rows": 3}
    assert own.problems == ("row_count: not declared by Status", "last_poll_time: not declared by Status")


def test_a_value_of_the_wrong_type_is_left_out_and_named() -> None:
    """The API server would reject the whole patch, counters included."""
    own = source_fields({"rows": "many", "lastPollTime": None}, Status)
    assert own.values == {"lastPollTime": None}
    assert len(own.problems) == 1 and own.problems[0].startswith("rows: ")


@pytest.mark.looptime
async def test_an_undeclared_status_key_is_logged_once_and_the_rest_is_written(
    env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry, source, patcher, _, _ = env
    await registry.apply(resource(report={"lable": "typo"}))
    await settle()
    await source.built[0].emitter.emit(payload={})
    await settle()
    assert patcher.status["label"] == "x" and patcher.status["jobsCreated"] == 1
    assert "lable" not in patcher.status
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "lable" in r.getMessage()]
    assert len(logged) == 1, "once per trigger and problem, not at every status write"
    assert "lable: not declared by FakeStatus" in logged[0].getMessage()


@pytest.mark.looptime
async def test_a_source_reporting_only_declared_keys_logs_nothing(
    env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry, *_ = env
    await registry.apply(resource())
    await settle()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
