"""The service against its own `/openapi.json`: schemathesis generates valid and invalid requests for every
operation, and every answer must be one the document declares (status, content type, body schema), with
no server errors and invalid input rejected. Bounded: 30 examples per operation and mode."""

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from portico.queue_service.openapi import openapi_document
from portico.queue_service.settings import QueueServiceSettings
from tests.conftest import QueueServiceProcess

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueServiceProcess]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    service = QueueServiceProcess(tmp / "queue.db", tmp / "queue-service.log")
    service.start()
    try:
        yield service
    finally:
        service.stop()


SETTINGS = QueueServiceSettings()
"""The settings `served` runs with (the CLI's defaults); the document depends on them."""

schema = schemathesis.openapi.from_dict(
    openapi_document(SETTINGS),
    config=schemathesis.Config.from_dict(
        {"generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION}}
    ),
)


def test_the_served_document_is_the_one_under_test(served: QueueServiceProcess) -> None:
    with urllib.request.urlopen(f"{served.url}/openapi.json", timeout=10) as response:
        assert json.load(response) == openapi_document(SETTINGS)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_the_service_keeps_its_openapi_contract(
    case: schemathesis.Case[Any], served: QueueServiceProcess
) -> None:
    case.call_and_validate(base_url=served.url)
