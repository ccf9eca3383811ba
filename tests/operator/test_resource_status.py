"""The status schema assembled from the fields every trigger has and each source's own status model."""

from typing import Any, ClassVar

import pytest
from pydantic import Field

from portico.domain.model import SpecModel
from portico.operator.resource_status import CommonStatus, StatusModelError, status_model
from portico.ports.trigger_source import NoSourceStatus, TriggerSource
from portico.sources.catalog import SOURCE_CLASSES
from tests.operator.fakes import FakeSource


def _wire_names(model: type[SpecModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def test_common_fields_then_each_sources_own_then_the_conditions() -> None:
    names = _wire_names(status_model(SOURCE_CLASSES))
    common = _wire_names(CommonStatus)
    assert names[: len(common) - 1] == common[:-1] and names[-1] == "conditions"
    for source in SOURCE_CLASSES:
        assert source.status_model is not NoSourceStatus, f"{source.name} declares its status fields"
        assert set(_wire_names(source.status_model)) <= set(names)


def test_a_field_two_sources_report_is_one_field_with_both_descriptions() -> None:
    connected = status_model(SOURCE_CLASSES).model_fields["connected"]
    assert connected.annotation == bool | None
    assert connected.description == (
        "AMQP: whether the broker connection is up. databasePoll: whether the database connection is up."
    )


def _source(status: type[SpecModel], source_name: str = "other") -> type[TriggerSource[Any]]:
    return type(source_name, (FakeSource,), {"name": source_name, "status_model": status})


def test_a_source_may_not_redefine_a_common_field() -> None:
    class Status(SpecModel):
        phase: str | None = Field(default=None, description="Mine.")

    with pytest.raises(StatusModelError, match="redefines the common field 'phase'"):
        status_model((FakeSource, _source(Status)))


def test_sources_must_agree_on_the_type_of_a_shared_field() -> None:
    class Flag(SpecModel):
        connected: bool | None = Field(default=None, description="Up.")

    class Count(SpecModel):
        connected: int | None = Field(default=None, description="Connections.")

    with pytest.raises(StatusModelError, match="'connected'"):
        status_model((_source(Flag, "a"), _source(Count, "b")))


def test_a_source_without_status_fields_adds_none() -> None:
    class Bare(FakeSource):
        status_model: ClassVar[type[SpecModel]] = NoSourceStatus

    assert _wire_names(status_model((Bare,))) == _wire_names(CommonStatus)
