"""The per-trigger metrics read from the registry, the status writer's patch counter, and the metrics
server."""

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from portico.operator.metrics import MetricsServer, TriggerCollector
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


class SlowCollector:
    """A collector whose exposition takes as long as thousands of triggers' series do."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def collect(self) -> Iterator[Metric]:
        time.sleep(self.seconds)
        family = GaugeMetricFamily("portico_slow", "A slow family.")
        family.add_metric([], 1.0)
        yield family


async def test_a_scrape_does_not_hold_the_event_loop() -> None:
    """Schedules fire from the operator's event loop; the exposition of thousands of triggers takes
    seconds, and on the loop would make them late or skip their runs."""
    server = MetricsServer("127.0.0.1", 0, cast(Any, SlowCollector(0.5)))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            loop = asyncio.get_running_loop()
            scrape = asyncio.create_task(session.get(f"http://127.0.0.1:{server.port}/metrics"))
            late = []
            for _ in range(12):  # 50 ms timers for as long as the scrape is being written
                due = loop.time() + 0.05
                await asyncio.sleep(0.05)
                late.append(loop.time() - due)
            assert max(late) < 0.15, f"a timer waited for the scrape: {max(late):.3f}s late"
            response = await scrape
            assert response.status == 200 and "portico_slow 1.0" in await response.text()
    finally:
        await server.close()
