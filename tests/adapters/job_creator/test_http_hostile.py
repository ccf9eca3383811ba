"""Property-based: `HttpJobCreator` reading hostile replies (deep, non-finite, oversized numbers, lone
surrogates, garbage, the token echoed back). It returns a job only for a 2xx reply holding a job, raises
`JobCreationError` otherwise (never anything else), within its deadline, and no message it produces
carries the token."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portico.adapters.job_creator.http import HttpJobCreator
from portico.ports.job_creator import JobCreationError
from portico.testing.hostile import TOKEN, LogRecorder, hostile_value


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    status = draw(st.sampled_from([201, 201, 201, 200, 400, 401, 413, 429, 500, 503, 302]))
    value = hostile_value(lambda options: draw(st.sampled_from(options)))
    kind = draw(st.sampled_from(["job", "job", "garbage", "echo", "error"]))
    if kind == "job":
        text = (
            '{"id": "j-1", "job_type": "t", "created_at": "2026-01-01T00:00:00Z", '
            f'"payload": {{"x": {value}}}, "metadata": {{}}}}'
        )
    elif kind == "garbage":
        text = value
    elif kind == "echo":
        text = json.dumps({"error": f"bad token Bearer {TOKEN}", "field": TOKEN, TOKEN: [TOKEN]})
    else:
        text = f'{{"error": {value}}}'
    return Reply(status, text.encode("utf-8", "surrogatepass"), {"Content-Type": "application/json"})


class Hostile:
    """A queue service that answers whatever the test says."""

    def __init__(self) -> None:
        self.reply = Reply(201, b"{}")
        self.authorizations: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.authorizations.append(request.headers.get("Authorization", ""))
        await request.read()
        return web.Response(status=self.reply.status, body=self.reply.body, headers=self.reply.headers)


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, str]]:
    server = Hostile()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield server, f"http://{host}:{port}"
    await runner.cleanup()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(reply=replies())
async def test_hostile_replies_are_a_job_or_a_job_creation_error(
    hostile: tuple[Hostile, str], reply: Reply
) -> None:
    server, url = hostile
    server.reply = reply
    async with HttpJobCreator(
        url, token=TOKEN, request_timeout=2, deadline=0.5, backoff_base=0.01, backoff_max=0.02
    ) as creator:
        with LogRecorder() as logs:
            try:
                job = await creator.create_job("t", {"n": 1}, queue_name="p")
            except JobCreationError as exc:
                assert TOKEN not in str(exc)
            else:
                assert reply.status in (200, 201)
                assert job.id == "j-1"
        assert not logs.leaked(TOKEN)
    assert set(server.authorizations) == {f"Bearer {TOKEN}"}
