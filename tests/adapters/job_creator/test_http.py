"""`HttpJobCreator` against real HTTP servers: a scripted one that fails on purpose (5xx, 429 with
Retry-After, dropped connections, hangs, rejections) and the real queue service. Time-based behaviour
(backoff, Retry-After, deadline, timeouts) runs on the fast-forwarded loop clock."""

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

from portico.adapters.job_creator.http import HttpJobCreator, header_safe_idempotency_key, parse_retry_after
from portico.ports.job_creator import JobCreationError, JobStatus
from portico.queue_service.validation import IDEMPOTENCY_KEY_PATTERN
from tests.conftest import QueueServiceProcess, RunningQueueService

Behaviour = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    peer: Any


@dataclass
class ScriptedServer:
    """Answers each request with the next behaviour of `script` (the last one repeats) and records it."""

    url: str = ""
    script: list[Behaviour] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                dict(request.headers),
                body,
                asyncio.get_running_loop().time(),
                request.transport.get_extra_info("peername") if request.transport else None,
            )
        )
        behaviour = self.script[min(len(self.seen), len(self.script)) - 1]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await behaviour(request, body)
        finally:
            self.in_flight -= 1

    @property
    def keys(self) -> list[str | None]:
        return [seen.headers.get("Idempotency-Key") for seen in self.seen]


def job_from(body: bytes, *, job_id: str = "job-1") -> dict[str, Any]:
    request = json.loads(body) if body else {"job_type": "t"}
    return {
        "id": job_id,
        "job_type": request["job_type"],
        "queue_name": request.get("queue_name", "default"),
        "priority": request.get("priority", 0),
        "payload": request.get("payload", {}),
        "metadata": request.get("metadata", {}),
        "status": "pending",
        "idempotency_key": None,
        "created_at": "2026-11-28T09:00:00Z",
        "attempts": 0,
        "max_attempts": 3,
    }


def created(status: int = 201, *, hold: float = 0.0) -> Behaviour:
    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        if hold:
            await asyncio.sleep(hold)
        job = job_from(body)
        job["idempotency_key"] = request.headers.get("Idempotency-Key")
        return web.json_response(job, status=status)

    return answer


def failing(status: int, *, headers: dict[str, str] | None = None, error: str = "nope") -> Behaviour:
    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"error": error, "field": "job_type"}, status=status, headers=headers)

    return answer


async def dropped(request: web.Request, body: bytes) -> web.StreamResponse:
    """Close the connection without answering."""
    assert request.transport is not None
    request.transport.close()
    await asyncio.sleep(0)
    return web.Response()


async def hanging(request: web.Request, body: bytes) -> web.StreamResponse:
    await asyncio.sleep(3600)
    return web.Response()


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    scripted.url = f"http://{host}:{port}"
    yield scripted
    await runner.cleanup()


class EdgeOfJitter(random.Random):
    """Full jitter picks uniformly in [0, cap]; this one always picks the cap (or the floor) and records
    the ranges it was asked for."""

    def __init__(self, *, high: bool = True) -> None:
        super().__init__(0)
        self.high = high
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b if self.high else a


# -- retries ----------------------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_5xx_are_retried_with_the_same_idempotency_key_and_body(server: ScriptedServer) -> None:
    server.script = [failing(503), failing(500), failing(502), created()]
    async with HttpJobCreator(server.url) as creator:
        job = await creator.create_job(
            "report.daily",
            {"a": 1},
            queue_name="reports",
            priority=5,
            metadata={"m": "x"},
            idempotency_key="k-1",
        )
    assert job.id == "job-1"
    assert creator.requests_by_outcome == {"5xx": 3, "2xx": 1}, "every attempt is timed and counted"
    assert creator.request_seconds.count == 4
    assert (job.job_type, job.queue_name, job.priority, job.payload, job.metadata) == (
        "report.daily",
        "reports",
        5,
        {"a": 1},
        {"m": "x"},
    )
    assert server.keys == ["k-1"] * 4
    assert len({seen.body for seen in server.seen}) == 1
    assert all(seen.method == "POST" and seen.path == "/v1/jobs" for seen in server.seen)
    assert all(seen.headers["Content-Type"] == "application/json" for seen in server.seen)


@pytest.mark.looptime
async def test_without_a_key_one_random_key_covers_all_attempts_of_a_call(server: ScriptedServer) -> None:
    server.script = [failing(503), created()]
    async with HttpJobCreator(server.url) as creator:
        await creator.create_job("t", {})
        await creator.create_job("t", {})
    first, again, second = server.keys
    assert first and first == again
    assert second and second != first


@pytest.mark.looptime
async def test_429_waits_as_long_as_retry_after_says(server: ScriptedServer) -> None:
    server.script = [failing(429, headers={"Retry-After": "7"}), created()]
    loop = asyncio.get_running_loop()
    async with HttpJobCreator(server.url, deadline=30) as creator:
        await creator.create_job("t", {})
    assert server.seen[1].at - server.seen[0].at == pytest.approx(7, abs=0.01)
    assert loop.time() < 8


@pytest.mark.looptime
async def test_503_with_retry_after_is_honoured_too(server: ScriptedServer) -> None:
    server.script = [failing(503, headers={"Retry-After": "3"}), created()]
    async with HttpJobCreator(server.url) as creator:
        await creator.create_job("t", {})
    assert server.seen[1].at - server.seen[0].at == pytest.approx(3, abs=0.01)


@pytest.mark.looptime
async def test_backoff_is_exponential_with_full_jitter(server: ScriptedServer) -> None:
    server.script = [failing(503)] * 6 + [created()]
    jitter = EdgeOfJitter(high=True)
    async with HttpJobCreator(server.url, backoff_base=1, backoff_max=8, deadline=100, rng=jitter) as creator:
        await creator.create_job("t", {})
    assert jitter.ranges == [(0, 1), (0, 2), (0, 4), (0, 8), (0, 8), (0, 8)]
    gaps = [later.at - earlier.at for earlier, later in zip(server.seen, server.seen[1:], strict=False)]
    assert gaps == pytest.approx([1, 2, 4, 8, 8, 8], abs=0.01)


@pytest.mark.looptime
async def test_dropped_connections_are_retried(server: ScriptedServer) -> None:
    server.script = [dropped, dropped, created()]
    async with HttpJobCreator(server.url) as creator:
        job = await creator.create_job("t", {}, idempotency_key="k")
    assert job.idempotency_key == "k"
    assert server.keys == ["k", "k", "k"]


@pytest.mark.looptime
async def test_an_answer_slower_than_the_request_timeout_is_retried(server: ScriptedServer) -> None:
    server.script = [hanging, created()]
    loop = asyncio.get_running_loop()
    async with HttpJobCreator(server.url, request_timeout=2, deadline=30) as creator:
        await creator.create_job("t", {}, idempotency_key="k")
    assert server.keys == ["k", "k"]
    assert 2 <= loop.time() < 3


@pytest.mark.looptime
async def test_gives_up_at_the_deadline_with_a_retryable_error(server: ScriptedServer) -> None:
    server.script = [failing(503, error="database is locked")]
    loop = asyncio.get_running_loop()
    async with HttpJobCreator(server.url, deadline=10, backoff_base=0.5, backoff_max=2) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert caught.value.retryable is True
    assert caught.value.status == 503
    assert "database is locked" in str(caught.value)
    assert server.url in str(caught.value)
    assert len(server.seen) >= 3
    assert loop.time() <= 10


@pytest.mark.looptime
async def test_hanging_service_is_bounded_by_the_deadline(server: ScriptedServer) -> None:
    server.script = [hanging]
    loop = asyncio.get_running_loop()
    async with HttpJobCreator(server.url, request_timeout=60, deadline=5) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert caught.value.retryable is True
    assert loop.time() <= 5.01


@pytest.mark.looptime
async def test_a_retry_after_beyond_the_deadline_gives_up_at_once(server: ScriptedServer) -> None:
    server.script = [failing(429, headers={"Retry-After": "120"})]
    loop = asyncio.get_running_loop()
    async with HttpJobCreator(server.url, deadline=30) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert (caught.value.retryable, caught.value.status) == (True, 429)
    assert len(server.seen) == 1
    assert loop.time() < 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 422])
async def test_other_4xx_are_final(server: ScriptedServer, status: int) -> None:
    server.script = [failing(status, error="job_type must be a string"), created()]
    async with HttpJobCreator(server.url) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert caught.value.retryable is False
    assert caught.value.status == status
    assert "job_type must be a string" in str(caught.value)
    assert len(server.seen) == 1


async def test_a_closed_port_is_retryable(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    async with HttpJobCreator(url, deadline=0.3, backoff_base=0.01) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert caught.value.retryable is True
    assert caught.value.status is None
    assert url in str(caught.value)


# -- what is sent, and what is never said -----------------------------------------------------------------


async def test_the_token_is_sent_but_never_appears_in_errors(server: ScriptedServer) -> None:
    async def echo_authorization(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"error": f"denied: {request.headers['Authorization']}"}, status=403)

    server.script = [echo_authorization]
    async with HttpJobCreator(server.url, token="tok-3f9a", deadline=0.2) as creator:
        with pytest.raises(JobCreationError) as rejected:
            await creator.create_job("t", {})
        server.script = [failing(503, error="proxy saw Bearer tok-3f9a")]
        with pytest.raises(JobCreationError) as unavailable:
            await creator.create_job("t", {})
    assert server.seen[0].headers["Authorization"] == "Bearer tok-3f9a"
    for error in (rejected.value, unavailable.value):
        assert "tok-3f9a" not in str(error)
        assert "tok-3f9a" not in repr(error.args)


async def test_credentials_in_the_url_stay_out_of_messages(unused_tcp_port: int) -> None:
    async with HttpJobCreator(f"http://user:pw-77@127.0.0.1:{unused_tcp_port}", deadline=0.1) as creator:
        assert "pw-77" not in creator.base_url
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert "pw-77" not in str(caught.value)


async def test_a_2xx_without_a_valid_job_is_an_error(server: ScriptedServer) -> None:
    async def not_a_job(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"ok": True}, status=201)

    server.script = [not_a_job]
    async with HttpJobCreator(server.url) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert (caught.value.retryable, caught.value.status) == (False, 201)


@pytest.mark.parametrize("payload", [{"x": object()}, {"x": float("nan")}])
async def test_payloads_that_are_not_json_fail_before_sending(server: ScriptedServer, payload: Any) -> None:
    async with HttpJobCreator(server.url) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", payload)
    assert caught.value.retryable is False
    assert server.seen == []


async def test_the_pool_is_shared_and_bounded(server: ScriptedServer) -> None:
    server.script = [created(hold=0.05)]
    async with HttpJobCreator(server.url, max_connections=4) as creator:
        await asyncio.gather(*(creator.create_job("t", {}) for _ in range(20)))
        await asyncio.gather(*(creator.create_job("t", {}) for _ in range(20)))
    assert server.most_in_flight == 4
    assert len({seen.peer for seen in server.seen}) == 4, "connections are kept alive and reused"


async def test_a_base_url_with_a_path_prefix(server: ScriptedServer) -> None:
    server.script = [created()]
    async with HttpJobCreator(f"{server.url}/queue/") as creator:
        await creator.create_job("t", {})
    assert server.seen[0].path == "/queue/v1/jobs"


@pytest.mark.parametrize("url", ["ftp://queue:21", "queue:8000", "http://"])
def test_unusable_urls_are_refused_early(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        HttpJobCreator(url)


async def test_close_is_idempotent_and_final(server: ScriptedServer) -> None:
    server.script = [created()]
    creator = HttpJobCreator(server.url)
    await creator.close()
    async with creator:
        pass
    await creator.close()
    with pytest.raises(JobCreationError) as caught:
        await creator.create_job("t", {})
    assert caught.value.retryable is False
    assert server.seen == []


@pytest.mark.looptime
async def test_closing_during_a_call_ends_it_with_a_retryable_error(server: ScriptedServer) -> None:
    server.script = [hanging]
    creator = HttpJobCreator(server.url, request_timeout=60, deadline=300)
    call = asyncio.create_task(creator.create_job("t", {}))
    while not server.seen:
        await asyncio.sleep(0.01)
    await creator.close()
    with pytest.raises(JobCreationError) as caught:
        await call
    assert caught.value.retryable is True, "the job may exist: the same key may be retried later"
    assert asyncio.get_running_loop().time() < 1


def test_one_creator_serves_successive_event_loops(queue_service_process: QueueServiceProcess) -> None:
    creator = HttpJobCreator(queue_service_process.url)
    first = asyncio.run(creator.create_job("t", {}, idempotency_key="k"))
    again = asyncio.run(creator.create_job("t", {}, idempotency_key="k"))
    asyncio.run(creator.close())
    assert first.model_dump() == again.model_dump()
    assert (first.existing, again.existing) == (False, True), "the second answer was the job already there"


# -- get_job ----------------------------------------------------------------------------------------------


@pytest.mark.looptime
async def test_get_job(server: ScriptedServer) -> None:
    async def found(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response(job_from(b"", job_id="a/b c") | {"status": "running"})

    server.script = [failing(503), found, failing(404), failing(401)]
    async with HttpJobCreator(server.url) as creator:
        job = await creator.get_job("a/b c")
        assert job is not None
        assert (job.id, job.status) == ("a/b c", JobStatus.RUNNING)
        assert await creator.get_job("missing") is None
        with pytest.raises(JobCreationError) as caught:
            await creator.get_job("x")
    assert caught.value.retryable is False
    assert [(seen.method, seen.path) for seen in server.seen] == [
        ("GET", "/v1/jobs/a%2Fb%20c"),
        ("GET", "/v1/jobs/a%2Fb%20c"),
        ("GET", "/v1/jobs/missing"),
        ("GET", "/v1/jobs/x"),
    ]


# -- against the real queue service -----------------------------------------------------------------------


async def test_against_the_queue_service(queue_service: RunningQueueService) -> None:
    async with HttpJobCreator(queue_service.url) as creator:
        job = await creator.create_job(
            "report.daily",
            {"n": 1},
            queue_name="reports",
            priority=5,
            metadata={"team": "a"},
            idempotency_key="d-1",
        )
        again = await creator.create_job("report.daily", {"n": 2}, idempotency_key="d-1")
        assert again.model_dump() == job.model_dump()
        assert again.existing and not job.existing
        assert await creator.get_job(job.id) == job
        assert await creator.get_job("no-such-job") is None
    [stored] = await queue_service.list_jobs()
    assert (stored.id, stored.queue_name, stored.priority, stored.payload) == (job.id, "reports", 5, {"n": 1})
    assert stored.metadata == {"team": "a"}


async def test_keys_that_are_not_header_safe_still_deduplicate(queue_service: RunningQueueService) -> None:
    awkward = [
        "k" * 5000,
        "clé-ünïcode-🔑",
        "line\nbreak",
        " padded ",
        "",
        "tab\tkey",
        "\ud800 lone surrogate",
    ]
    async with HttpJobCreator(queue_service.url) as creator:
        first = [await creator.create_job("t", {}, idempotency_key=key) for key in awkward]
        again = [await creator.create_job("t", {}, idempotency_key=key) for key in awkward]
    assert [job.id for job in first] == [job.id for job in again]
    assert len({job.id for job in first}) == len(awkward)
    assert len(await queue_service.list_jobs()) == len(awkward)


async def test_a_token_the_service_refuses_is_a_final_error(queue_service_factory: Any) -> None:
    service = await queue_service_factory(token="right-token")
    for token in (None, "wrong-token"):
        async with HttpJobCreator(service.url, token=token) as creator:
            with pytest.raises(JobCreationError) as caught:
                await creator.create_job("t", {})
        assert (caught.value.retryable, caught.value.status) == (False, 401)
        assert "credentials" in str(caught.value)
        assert "wrong-token" not in str(caught.value)
    async with HttpJobCreator(service.url, token="right-token") as creator:
        await creator.create_job("t", {})
    assert len(await service.list_jobs()) == 1


@pytest.mark.looptime
async def test_an_unavailable_service_is_retryable(queue_service_factory: Any) -> None:
    service = await queue_service_factory(max_pending_writes=0)
    async with HttpJobCreator(service.url, deadline=2.5) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {})
    assert (caught.value.retryable, caught.value.status) == (True, 503)
    assert "gave up after 3 attempts" in str(caught.value), "Retry-After: 1 paces the attempts"


# -- pure helpers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["abc", "delivery:1234-5678", "x" * 200, "!~"])
def test_header_safe_keys_pass_unchanged(key: str) -> None:
    assert header_safe_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["x" * 201, "a b", "", "ü", "a\r\nX-Injected: 1", "\ud800"])
def test_other_keys_are_hashed_deterministically(key: str) -> None:
    sent = header_safe_idempotency_key(key)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", sent)
    assert sent == header_safe_idempotency_key(key)
    assert re.fullmatch(IDEMPOTENCY_KEY_PATTERN, sent)


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0.0
    for unreadable in (None, "", "soon", "-1", "1.5"):
        assert parse_retry_after(unreadable) is None
