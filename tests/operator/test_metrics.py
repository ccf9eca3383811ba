"""The per-trigger metrics read from the registry, and the status writer's patch counter."""

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from portico.operator.metrics import TriggerCollector
from tests.operator.fakes import resource, settle


@pytest.mark.looptime
async def test_trigger_and_status_writer_figures(env: Any) -> None:
    registry, source, _, _, _ = env
    await registry.apply(resource())
    await source.built[0].emitter.emit(payload={})
    await settle()
    collected = CollectorRegistry(auto_describe=False)
    collected.register(TriggerCollector(registry, registry.status_writer))
    labels = {"namespace": "ns", "trigger": "t", "source": "fake", "target": "queueService"}
    assert collected.get_sample_value("portico_jobs_created_total", labels) == 1
    assert collected.get_sample_value("portico_trigger_running", labels) == 1
    assert collected.get_sample_value("portico_status_patches_total") == registry.status_writer.patches > 0
