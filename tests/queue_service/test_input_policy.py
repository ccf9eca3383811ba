"""The queue service under the input policy: hostile bodies are refused (400 naming the rule and the
field) before anything is stored, and nothing already stored can break a claim, a list or a read."""

import json
import sqlite3
from typing import Any

import aiohttp
import pytest

from portico.queue_service import store as store_module
from tests.conftest import RunningQueueService
from tests.queue_service.test_endpoints import JSON_HEADERS, create, get, post


async def raw_create(
    http: aiohttp.ClientSession, service: RunningQueueService, body: bytes
) -> tuple[int, Any]:
    async with http.post(f"{service.url}/v1/jobs", data=body, headers=JSON_HEADERS) as response:
        return response.status, await response.json()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        (b'{"job_type":"t","queue_name":"p","payload":{"x":' + nested(976) + b"}}", "body", "json-depth"),
        (b'{"job_type":"t","payload":{"x":' + nested(65) + b"}}", "payload.x" + "[0]" * 63, "json-depth"),
        (b'{"job_type":"t","payload":{"x":1e400}}', "payload.x", "finite-number"),
        (b'{"job_type":"t","payload":{"x":-1e400}}', "payload.x", "finite-number"),
        (b'{"job_type":"t","payload":{"x":123456789012345678901234567890}}', "payload.x", "number-range"),
        (b'{"job_type":"t\\u0000x"}', "job_type", "identifier-characters"),
        (b'{"job_type":"t\\nINFO forged log line"}', "job_type", "identifier-characters"),
        (b'{"job_type":"t","metadata":{"k":"\\udc00"}}', "metadata.k", "unicode"),
    ],
)
async def test_hostile_bodies_are_refused_naming_rule_and_field(
    http: aiohttp.ClientSession, service: RunningQueueService, body: bytes, field: str, rule: str
) -> None:
    status, error = await raw_create(http, service, body)
    assert (status, error["field"], error["rule"]) == (400, field, rule), error
    assert await service.list_jobs() == []


async def test_names_with_a_trailing_newline_are_refused(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    status, error = await post(http, f"{service.url}/v1/jobs", {"job_type": "t", "queue_name": "abc\n"})
    assert (status, error["field"]) == (400, "queue_name")
    status, error = await post(http, f"{service.url}/v1/queues/abc%0A/claim", {})
    assert (status, error["field"]) == (400, "queue")
    status, error = await get(http, f"{service.url}/v1/jobs", cursor="5\n")
    assert (status, error["field"]) == (400, "cursor")
    assert await service.list_jobs() == []


def _store_raw_payload(service: RunningQueueService, job_id: str, text: str) -> None:
    """What an older version (or another writer) may have left in the database."""
    with sqlite3.connect(service.settings.db_path) as conn:
        conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", (text, job_id))


async def test_a_stored_payload_of_any_depth_never_breaks_claims_lists_or_reads(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    """The issue's repro: a payload nested 976 deep made every later claim answer 500 after committing its
    leases, so three claims later the whole batch was dead unseen. Stored text now goes out as it is."""
    poisoned = await create(http, service, queue_name="p")
    normal = await create(http, service, queue_name="p", payload={"n": 1})
    _store_raw_payload(service, poisoned["id"], '{"x":' + "[" * 976 + "]" * 976 + "}")

    async def text(method: str, path: str, body: Any = None) -> str:
        async with http.request(method, f"{service.url}{path}", json=body) as response:
            assert response.status == 200, await response.text()
            return await response.text()

    for _ in range(3):
        assert poisoned["id"] in await text("GET", "/v1/jobs?queue=p")
        assert poisoned["id"] in await text("GET", f"/v1/jobs/{poisoned['id']}")
    claimed = await text("POST", "/v1/queues/p/claim", {"limit": 10})
    assert poisoned["id"] in claimed and normal["id"] in claimed
    for job in (poisoned, normal):
        stored = await service.store.get(job["id"])
        lease = stored.split('"lease_id":"', 1)[1].split('"', 1)[0]
        assert '"status":"completed"' in await text(
            "POST", f"/v1/jobs/{job['id']}/complete", {"lease_id": lease}
        )


async def test_a_claim_whose_answer_cannot_be_built_leases_nothing(
    http: aiohttp.ClientSession, service: RunningQueueService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers are built inside the claim's transaction: when that fails, the leases are rolled back, so
    no job loses an attempt (and, three claims later, its life) without any worker having seen it."""
    job = await create(http, service, queue_name="p")
    real = store_module.job_json

    def broken(row: Any) -> str:
        if row[6] == "running":
            raise RecursionError("maximum recursion depth exceeded")
        return real(row)

    monkeypatch.setattr(store_module, "job_json", broken)
    for _ in range(3):
        status, _ = await post(http, f"{service.url}/v1/queues/p/claim", {})
        assert status >= 500
    monkeypatch.setattr(store_module, "job_json", real)
    stored = await service.get_job(job["id"])
    assert (stored.status, stored.attempts) == ("pending", 0)
    status, claimed = await post(http, f"{service.url}/v1/queues/p/claim", {})
    assert [found["id"] for found in claimed["jobs"]] == [job["id"]]


async def test_what_is_accepted_is_served_back_as_strict_json(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    payload = {"deep": json.loads("[" * 63 + "]" * 63), "big": 2**63 - 1, "small": -(2**63), "f": 1.5}
    job = await create(http, service, payload=payload)
    async with http.get(f"{service.url}/v1/jobs/{job['id']}") as response:
        text = await response.text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["payload"] == payload
