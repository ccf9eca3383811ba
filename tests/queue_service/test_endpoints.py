"""The queue service's HTTP API against a real server: creation, reads, listing, the worker cycle, and every
way a request can be rejected (with nothing stored)."""

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningQueueService
from tests.queue_service.conftest import FakeClock

JSON_HEADERS = {"Content-Type": "application/json"}


async def post(
    http: aiohttp.ClientSession, url: str, body: Any = None, *, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    async with http.post(url, data=data, headers={**JSON_HEADERS, **(headers or {})}) as response:
        return response.status, await response.json()


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with http.get(url, params=params) as response:
        return response.status, await response.json()


async def create(
    http: aiohttp.ClientSession, service: RunningQueueService, key: str | None = None, **body: Any
) -> dict[str, Any]:
    body.setdefault("job_type", "report.daily")
    status, job = await post(
        http, f"{service.url}/v1/jobs", body, headers={"Idempotency-Key": key} if key else None
    )
    assert status == 201, job
    return dict(job)


async def test_create_returns_the_stored_job(
    http: aiohttp.ClientSession, service: RunningQueueService, clock: FakeClock
) -> None:
    job = await create(
        http,
        service,
        key="delivery-1",
        queue_name="reports",
        priority=5,
        payload={"report_type": "daily_summary", "nested": [1, {"a": None}]},
        metadata={"team": "finance"},
        max_attempts=7,
    )
    assert job["job_type"] == "report.daily"
    assert job["queue_name"] == "reports"
    assert job["priority"] == 5
    assert job["payload"] == {"report_type": "daily_summary", "nested": [1, {"a": None}]}
    assert job["metadata"] == {"team": "finance"}
    assert job["status"] == "pending"
    assert job["idempotency_key"] == "delivery-1"
    assert job["attempts"] == 0
    assert job["max_attempts"] == 7
    assert job["created_at"] == "2027-01-15T08:00:00.000000Z"

    status, fetched = await get(http, f"{service.url}/v1/jobs/{job['id']}")
    assert status == 200
    assert fetched == job


async def test_defaults(http: aiohttp.ClientSession, service: RunningQueueService) -> None:
    job = await create(http, service)
    assert (job["queue_name"], job["priority"], job["payload"], job["metadata"]) == ("default", 0, {}, {})
    assert job["max_attempts"] == 3
    assert job["idempotency_key"] is None


async def test_same_idempotency_key_returns_the_first_job_with_200(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    first = await create(http, service, key="k-1", payload={"n": 1})
    status, again = await post(
        http,
        f"{service.url}/v1/jobs",
        {"job_type": "other", "payload": {"n": 2}},
        headers={"Idempotency-Key": "k-1"},
    )
    assert status == 200
    assert again == first
    other = await create(http, service, key="k-2")
    assert other["id"] != first["id"]
    assert [job.id for job in await service.list_jobs()] == [first["id"], other["id"]]


async def test_without_a_key_every_request_is_a_new_job(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    first = await create(http, service)
    second = await create(http, service)
    assert first["id"] != second["id"]


async def test_list_filters_and_pages_in_creation_order(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    created = []
    for n in range(25):
        created.append(
            await create(
                http, service, queue_name="a" if n % 2 else "b", job_type=f"type.{n % 3}", payload={"n": n}
            )
        )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        status, page = await get(http, f"{service.url}/v1/jobs", **params)
        assert status == 200
        seen.extend(job["id"] for job in page["jobs"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [job["id"] for job in created]

    _, page = await get(http, f"{service.url}/v1/jobs", queue="a", job_type="type.1")
    assert [job["payload"]["n"] for job in page["jobs"]] == [n for n in range(25) if n % 2 and n % 3 == 1]
    _, page = await get(http, f"{service.url}/v1/jobs", status="running")
    assert page == {"jobs": [], "next_cursor": None}


async def test_list_filters_by_one_metadata_entry(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    for n in range(6):
        meta = {"trigger.uid": f"uid-{n % 2}", "trigger.name": "a=b" if n == 5 else "x"}
        await create(http, service, payload={"n": n}, metadata=meta)
    _, page = await get(http, f"{service.url}/v1/jobs", metadata="trigger.uid=uid-1", limit="2")
    assert [job["payload"]["n"] for job in page["jobs"]] == [1, 3]
    _, rest = await get(
        http, f"{service.url}/v1/jobs", metadata="trigger.uid=uid-1", cursor=page["next_cursor"]
    )
    assert [job["payload"]["n"] for job in rest["jobs"]] == [5]
    _, page = await get(http, f"{service.url}/v1/jobs", metadata="trigger.name=a=b")
    assert [job["payload"]["n"] for job in page["jobs"]] == [5]
    _, page = await get(http, f"{service.url}/v1/jobs", metadata="team=finance")
    assert page == {"jobs": [], "next_cursor": None}
    for bad in ("no-equals-sign", '"quote"=x', "=value", "k" * 254 + "=v"):
        status, body = await get(http, f"{service.url}/v1/jobs", metadata=bad)
        assert (status, body["field"]) == (400, "metadata"), bad


async def test_claim_takes_highest_priority_first_and_fifo_within_a_priority(
    http: aiohttp.ClientSession, service: RunningQueueService, clock: FakeClock
) -> None:
    order = [("low-1", 0), ("high-1", 10), ("low-2", 0), ("high-2", 10), ("mid", 5), ("negative", -3)]
    for name, priority in order:
        await create(http, service, queue_name="work", priority=priority, payload={"name": name})
        clock.advance(0.001)
    await create(http, service, queue_name="elsewhere", priority=100)

    claimed = []
    for _ in range(len(order)):
        status, result = await post(http, f"{service.url}/v1/queues/work/claim", {"worker": "w1"})
        assert status == 200
        [job] = result["jobs"]
        assert job["status"] == "running"
        assert job["worker"] == "w1"
        assert job["attempts"] == 1
        assert job["lease_id"]
        claimed.append(job["payload"]["name"])
    assert claimed == ["high-1", "high-2", "mid", "low-1", "low-2", "negative"]

    status, result = await post(http, f"{service.url}/v1/queues/work/claim")
    assert (status, result) == (200, {"jobs": []})


async def test_claim_with_a_limit_and_without_a_body(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    for n in range(5):
        await create(http, service, payload={"n": n})
    async with http.post(f"{service.url}/v1/queues/default/claim") as response:
        assert response.status == 200
        assert len((await response.json())["jobs"]) == 1
    status, result = await post(
        http, f"{service.url}/v1/queues/default/claim", {"limit": 3, "lease_seconds": 5}
    )
    assert status == 200
    assert [job["payload"]["n"] for job in result["jobs"]] == [1, 2, 3]


async def claim_one(
    http: aiohttp.ClientSession, service: RunningQueueService, queue: str = "default"
) -> dict[str, Any]:
    status, result = await post(http, f"{service.url}/v1/queues/{queue}/claim", {})
    assert status == 200
    [job] = result["jobs"]
    return dict(job)


async def test_complete(http: aiohttp.ClientSession, service: RunningQueueService) -> None:
    job = await create(http, service)
    claimed = await claim_one(http, service)
    status, done = await post(
        http, f"{service.url}/v1/jobs/{job['id']}/complete", {"lease_id": claimed["lease_id"]}
    )
    assert status == 200
    assert done["status"] == "completed"
    assert done["lease_id"] is None
    status, error = await post(
        http, f"{service.url}/v1/jobs/{job['id']}/complete", {"lease_id": claimed["lease_id"]}
    )
    assert status == 409
    assert "completed" in error["error"]


async def test_complete_and_fail_require_the_lease(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    """A worker whose lease expired must not overwrite the result of the worker holding the job now."""
    job = await create(http, service)
    await claim_one(http, service)
    for action in ("complete", "fail"):
        for body in ({}, {"lease_id": None}):
            status, error = await post(http, f"{service.url}/v1/jobs/{job['id']}/{action}", body)
            assert (status, error["field"]) == (400, "lease_id")
    assert (await service.get_job(job["id"])).status == "running"


async def test_fail_retries_until_max_attempts_then_dead(
    http: aiohttp.ClientSession, service: RunningQueueService, clock: FakeClock
) -> None:
    job = await create(http, service, max_attempts=2)
    lease = (await claim_one(http, service))["lease_id"]
    status, failed = await post(
        http,
        f"{service.url}/v1/jobs/{job['id']}/fail",
        {"lease_id": lease, "error": "timeout", "retry_delay_seconds": 60},
    )
    assert status == 200
    assert (failed["status"], failed["attempts"], failed["last_error"]) == ("pending", 1, "timeout")

    status, result = await post(http, f"{service.url}/v1/queues/default/claim", {})
    assert result == {"jobs": []}, "not claimable before the retry delay"
    clock.advance(61)
    claimed = await claim_one(http, service)
    assert claimed["attempts"] == 2
    status, dead = await post(
        http,
        f"{service.url}/v1/jobs/{job['id']}/fail",
        {"lease_id": claimed["lease_id"], "error": "timeout again"},
    )
    assert (dead["status"], dead["attempts"]) == ("dead", 2)
    clock.advance(3600)
    status, result = await post(http, f"{service.url}/v1/queues/default/claim", {})
    assert result == {"jobs": []}


async def test_fail_without_retry_is_final(http: aiohttp.ClientSession, service: RunningQueueService) -> None:
    job = await create(http, service, max_attempts=5)
    lease = (await claim_one(http, service))["lease_id"]
    status, failed = await post(
        http, f"{service.url}/v1/jobs/{job['id']}/fail", {"lease_id": lease, "retry": False}
    )
    assert (status, failed["status"], failed["attempts"]) == (200, "failed", 1)


async def test_complete_or_fail_of_a_job_that_is_not_running_conflicts(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    job = await create(http, service)
    for action in ("complete", "fail"):
        status, error = await post(http, f"{service.url}/v1/jobs/{job['id']}/{action}", {"lease_id": "x"})
        assert status == 409
        assert "pending" in error["error"]
    await claim_one(http, service)
    status, error = await post(http, f"{service.url}/v1/jobs/{job['id']}/complete", {"lease_id": "not-mine"})
    assert status == 409
    assert (await service.get_job(job["id"])).status == "running"


async def test_health_metrics_and_openapi(http: aiohttp.ClientSession, service: RunningQueueService) -> None:
    await create(http, service, queue_name="reports")
    await create(http, service, key="same")
    await post(http, f"{service.url}/v1/jobs", {"job_type": "x"}, headers={"Idempotency-Key": "same"})

    assert await get(http, f"{service.url}/healthz") == (200, {"status": "ok"})
    async with http.get(f"{service.url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    assert 'portico_queue_jobs_created_total{queue="reports"} 1.0' in text
    assert "portico_queue_idempotent_repeats_total 1.0" in text
    assert 'portico_queue_jobs{queue="default",status="pending"} 1.0' in text
    assert 'portico_queue_http_requests_total{method="POST",route="/v1/jobs",status="200"} 1.0' in text
    assert "portico_queue_commits_total" in text

    status, document = await get(http, f"{service.url}/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routes = {
        (route.method, route.resource.canonical)
        for route in service.runner.app.router.routes()
        if route.resource is not None
    }
    assert operations == routes
    assert "securitySchemes" not in document["components"]


# -- rejected requests ------------------------------------------------------------------------------------


async def raw_post(
    http: aiohttp.ClientSession, url: str, data: Any, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, data=data, headers=headers) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


VALID = b'{"job_type": "x"}'


@pytest.mark.parametrize(
    ("data", "headers", "status", "field"),
    [
        pytest.param(VALID, {"Content-Type": "text/plain"}, 415, None, id="text-plain"),
        pytest.param(VALID, {"Content-Type": "application/x-www-form-urlencoded"}, 415, None, id="form"),
        pytest.param(VALID, {}, 415, None, id="no-content-type"),
        pytest.param(b"", JSON_HEADERS, 400, "body", id="empty"),
        pytest.param(b'{"job_type": "x"', JSON_HEADERS, 400, "body", id="truncated-json"),
        pytest.param(b'{"job_type": "x", "priority": NaN}', JSON_HEADERS, 400, "priority", id="nan"),
        pytest.param(b"[" * 100_000, JSON_HEADERS, 400, "body", id="deeply-nested"),
        pytest.param(b"\xff\xfe{}", JSON_HEADERS, 400, "body", id="not-utf8"),
        pytest.param(b'["x"]', JSON_HEADERS, 400, "body", id="not-an-object"),
        pytest.param(b"{}", JSON_HEADERS, 400, "job_type", id="missing-job-type"),
        pytest.param(b'{"job_type": ""}', JSON_HEADERS, 400, "job_type", id="empty-job-type"),
        pytest.param(b'{"job_type": 5}', JSON_HEADERS, 400, "job_type", id="job-type-number"),
        pytest.param(b'{"job_type": "\\ud800"}', JSON_HEADERS, 400, "job_type", id="lone-surrogate"),
        pytest.param(
            b'{"job_type": "x", "payload": {"k": "\\udc00"}}',
            JSON_HEADERS,
            400,
            "payload.k",
            id="surrogate-in-payload",
        ),
        pytest.param(
            b'{"job_type": "x", "metadata": {"k": "a\\uD83D"}}',
            JSON_HEADERS,
            400,
            "metadata.k",
            id="surrogate-in-metadata",
        ),
        pytest.param(
            b'{"job_type": "x", "priority": "high"}', JSON_HEADERS, 400, "priority", id="priority-text"
        ),
        pytest.param(
            b'{"job_type": "x", "priority": 1.5}', JSON_HEADERS, 400, "priority", id="priority-fraction"
        ),
        pytest.param(
            b'{"job_type": "x", "priority": true}', JSON_HEADERS, 400, "priority", id="priority-bool"
        ),
        pytest.param(
            b'{"job_type": "x", "priority": 1e40}', JSON_HEADERS, 400, "priority", id="priority-huge"
        ),
        pytest.param(b'{"job_type": "x", "payload": [1]}', JSON_HEADERS, 400, "payload", id="payload-list"),
        pytest.param(
            b'{"job_type": "x", "metadata": {"a": 1}}', JSON_HEADERS, 400, "metadata.a", id="metadata-int"
        ),
        pytest.param(
            b'{"job_type": "x", "metadata": "a"}', JSON_HEADERS, 400, "metadata", id="metadata-text"
        ),
        pytest.param(
            b'{"job_type": "x", "queue_name": "a b"}', JSON_HEADERS, 400, "queue_name", id="queue-space"
        ),
        pytest.param(
            b'{"job_type": "x", "max_attempts": 0}', JSON_HEADERS, 400, "max_attempts", id="attempts-0"
        ),
        pytest.param(b'{"job_type": "x", "colour": "red"}', JSON_HEADERS, 400, "colour", id="unknown-field"),
        pytest.param(
            VALID, {**JSON_HEADERS, "Idempotency-Key": "k" * 256}, 400, "Idempotency-Key", id="key-too-long"
        ),
        pytest.param(
            VALID, {**JSON_HEADERS, "Idempotency-Key": "clé"}, 400, "Idempotency-Key", id="key-non-ascii"
        ),
    ],
)
async def test_rejected_creates_store_nothing(
    http: aiohttp.ClientSession,
    service: RunningQueueService,
    data: bytes,
    headers: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    got_status, error = await raw_post(http, f"{service.url}/v1/jobs", data, headers)
    assert got_status == status, error
    assert isinstance(error["error"], str) and error["error"]
    assert error.get("field") == field
    assert await service.list_jobs() == []


async def test_body_over_the_limit_is_413_declared_or_streamed(
    http: aiohttp.ClientSession, queue_service_factory: Any
) -> None:
    service = await queue_service_factory(max_body_bytes=1000)
    big = json.dumps({"job_type": "x", "payload": {"blob": "x" * 2000}}).encode()
    status, error = await raw_post(http, f"{service.url}/v1/jobs", big, JSON_HEADERS)
    assert status == 413
    assert "1000 bytes" in error["error"]

    async def chunks() -> Any:
        for start in range(0, len(big), 100):
            yield big[start : start + 100]

    status, error = await raw_post(http, f"{service.url}/v1/jobs", chunks(), JSON_HEADERS)
    assert status == 413
    fits = json.dumps({"job_type": "x", "payload": {"blob": "x" * 900}}).encode()
    status, _ = await raw_post(http, f"{service.url}/v1/jobs", fits, JSON_HEADERS)
    assert status == 201
    assert len(await service.list_jobs()) == 1


async def test_unknown_job_is_404(http: aiohttp.ClientSession, service: RunningQueueService) -> None:
    status, error = await get(http, f"{service.url}/v1/jobs/no-such-job")
    assert (status, error["field"]) == (404, "job_id")
    for action in ("complete", "fail"):
        status, error = await post(http, f"{service.url}/v1/jobs/no-such-job/{action}", {"lease_id": "x"})
        assert status == 404


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/jobs?limit=0", "limit"),
        ("/v1/jobs?limit=many", "limit"),
        ("/v1/jobs?status=lost", "status"),
        ("/v1/jobs?cursor=bm9wZQ", "cursor"),
        ("/v1/jobs?cursor=", "cursor"),
        ("/v1/jobs?cursor=-1", "cursor"),
    ],
)
async def test_bad_list_parameters_are_400(
    http: aiohttp.ClientSession, service: RunningQueueService, url: str, field: str
) -> None:
    async with http.get(f"{service.url}{url}") as response:
        assert response.status == 400
        assert (await response.json())["field"] == field


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/queues/default/claim", {"lease_seconds": 0}, "lease_seconds"),
        ("/v1/queues/default/claim", {"limit": 101}, "limit"),
        ("/v1/queues/default/claim", {"worker": 1}, "worker"),
        ("/v1/queues/-bad/claim", {}, "queue"),
        ("/v1/jobs/x/fail", {"lease_id": "x", "retry": "yes"}, "retry"),
        ("/v1/jobs/x/fail", {"lease_id": "x", "retry_delay_seconds": -1}, "retry_delay_seconds"),
        ("/v1/jobs/x/complete", {"lease": "x"}, "lease"),
    ],
)
async def test_bad_worker_requests_are_400(
    http: aiohttp.ClientSession, service: RunningQueueService, path: str, body: Any, field: str
) -> None:
    status, error = await post(http, f"{service.url}{path}", body)
    assert (status, error["field"]) == (400, field)


async def test_worker_bodies_must_be_json(http: aiohttp.ClientSession, service: RunningQueueService) -> None:
    status, _ = await raw_post(
        http, f"{service.url}/v1/queues/default/claim", b"limit=1", {"Content-Type": "text/plain"}
    )
    assert status == 415


async def test_wrong_method_is_405_with_allow(
    http: aiohttp.ClientSession, service: RunningQueueService
) -> None:
    async with http.delete(f"{service.url}/v1/jobs") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
        assert "error" in await response.json()


async def test_token_is_required_on_the_api_when_configured(
    http: aiohttp.ClientSession, queue_service_factory: Any
) -> None:
    service = await queue_service_factory(token="s3cret")
    url = f"{service.url}/v1/jobs"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        status, error = await raw_post(http, url, VALID, {**JSON_HEADERS, **headers})
        assert status == 401
        assert "s3cret" not in json.dumps(error)
        async with http.get(url, headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await service.list_jobs() == []

    status, _ = await raw_post(http, url, VALID, {**JSON_HEADERS, "Authorization": "Bearer s3cret"})
    assert status == 201
    async with http.get(f"{service.url}/healthz") as response:
        assert response.status == 200, "probes need no token"
    async with http.get(f"{service.url}/openapi.json") as response:
        document = await response.json()
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert "401" in document["paths"]["/v1/jobs"]["post"]["responses"]
