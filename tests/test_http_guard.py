"""Both HTTP servers (the webhook server and the queue service) against clients that misbehave on the
wire: malformed header lines carrying a real token, slow or idle connections, too many connections, clients
that leave mid-body, compressed bodies. Raw sockets, since a well-behaved client cannot send these."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import TriggerRef
from portico.http_guard import ServerLimits
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.trigger import WebhookAuthSpec, WebhookConfig, WebhookTrigger

TOKEN = "tok-3f9c1d7e5b2a48c6"
"""A real bearer token: the one both servers are configured with."""
FAST = ServerLimits(header_timeout=0.3, keepalive_timeout=0.3, max_connections=4)


@dataclass
class Target:
    """One server under test: where to POST with the token, and how to count what it created."""

    name: str
    port: int
    path: str
    created: Callable[[], Awaitable[int]]
    status_counts: Callable[[], Awaitable[dict[int, int]]]


async def _webhook(limits: ServerLimits) -> AsyncIterator[Target]:
    server = WebhookServer("127.0.0.1", 0, limits=limits)
    await server.start()
    jobs = InMemoryJobCreator()
    trigger = WebhookTrigger(
        jobs,
        WebhookConfig(prefix="/hooks/team/h", auth=WebhookAuthSpec(type="bearer"), secret=SecretStr(TOKEN)),
        ref=TriggerRef(name="h", namespace="team", uid="uid-h"),
        server=server,
    )
    await trigger.start()

    async def created() -> int:
        return len(jobs.jobs)

    async def status_counts() -> dict[int, int]:
        return dict(trigger.metrics().by_status)

    try:
        yield Target("webhook", server.port, trigger.path, created, status_counts)
    finally:
        await trigger.stop()
        await server.stop()


async def _queue(factory: Any, limits: ServerLimits, **settings: Any) -> AsyncIterator[Target]:
    service = await factory(token=TOKEN, limits=limits, **settings)
    port = int(service.url.rsplit(":", 1)[1])

    async def created() -> int:
        return len(await service.list_jobs())

    async def status_counts() -> dict[int, int]:
        counts: dict[int, int] = {}
        async with aiohttp.ClientSession() as http, http.get(f"{service.url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("portico_queue_http_requests_total{"):
                status = int(line.split('status="', 1)[1].split('"', 1)[0])
                counts[status] = counts.get(status, 0) + int(float(line.rsplit(" ", 1)[1]))
        return counts

    yield Target("queue", port, "/v1/jobs", created, status_counts)


@pytest.fixture(params=["webhook", "queue"])
async def target(request: pytest.FixtureRequest, queue_service_factory: Any) -> AsyncIterator[Target]:
    maker = _webhook(FAST) if request.param == "webhook" else _queue(queue_service_factory, FAST)
    async for made in maker:
        yield made


async def exchange(port: int, data: bytes, *, wait: float = 3.0, close_after_write: bool = False) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or `wait` seconds pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close_after_write:
            return b""
        received = b""
        try:
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    received += chunk
        except TimeoutError:
            pass
        return received
    finally:
        writer.close()


def request(path: str, extra_header_lines: bytes = b"", body: bytes = b"{}", **headers: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
    head += "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    if "Content_Length" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + extra_header_lines + b"\r\n" + body


MALFORMED_HEADER_SHAPES = {
    "token-then-nul": f"Authorization: Bearer {TOKEN}\x00\r\n".encode(),
    "token-then-bare-lf": f"Authorization: Bearer {TOKEN}\nX-Next: 1\r\n".encode(),
    "token-then-bare-cr": f"Authorization: Bearer {TOKEN}\rX-Next: 1\r\n".encode(),
    "token-then-control": f"Authorization: Bearer {TOKEN}\x01\x7f\r\n".encode(),
    "token-overlong": f"Authorization: Bearer {TOKEN}{'A' * 20_000}\r\n".encode(),
    "token-non-ascii": f"Authorization: Bearer {TOKEN}".encode() + b"\xff\xfe\xc3\r\n",
    "token-in-header-name": f"Bearer {TOKEN}: x\r\n".encode(),
    "token-folded": f"Authorization: Bearer\r\n {TOKEN}\x00\r\n".encode(),
    "token-no-colon": f"Authorization Bearer {TOKEN}\r\n".encode(),
    "token-in-request-line": None,
}


def _shape_request(target: Target, shape: str) -> bytes:
    line = MALFORMED_HEADER_SHAPES[shape]
    if line is None:
        return f"POST {target.path}?t={TOKEN}\x00 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    return request(target.path, line)


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


@pytest.mark.parametrize("shape", sorted(MALFORMED_HEADER_SHAPES))
async def test_malformed_header_lines_never_leak_the_token(
    target: Target, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await exchange(target.port, _shape_request(target, shape))
    assert TOKEN.encode() not in answer
    assert TOKEN not in _everything_logged(caplog)
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
        assert b"\r\nServer: portico\r\n" in answer
    assert await target.created() == 0


async def test_every_answer_says_server_portico(target: Target) -> None:
    for raw in (
        request(target.path, f"Authorization: Bearer {TOKEN}\r\n".encode(), body=b'{"job_type": "t"}'),
        request(target.path, b"Authorization: Bearer wrong\r\n"),
        request("/no/such/path"),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ):
        answer = await exchange(target.port, raw)
        assert b"\r\nServer: portico\r\n" in answer, answer[:300]
        assert b"aiohttp" not in answer and b"Python/" not in answer


async def test_headers_sent_too_slowly_get_408_and_the_connection_closes(target: Target) -> None:
    """One header line every 50 ms: each byte arrives in time, the headers as a whole do not."""
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)

    async def trickle() -> None:
        writer.write(f"POST {target.path} HTTP/1.1\r\nHost: x\r\n".encode())
        with contextlib.suppress(ConnectionError):
            for _ in range(60):
                await asyncio.sleep(0.05)
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(3):
            answer = await reader.read()
    finally:
        sender.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_an_idle_keep_alive_connection_is_closed(target: Target) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        writer.write(b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(3):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:100]


async def test_connections_beyond_the_cap_get_503(target: Target) -> None:
    held = [await asyncio.open_connection("127.0.0.1", target.port) for _ in range(FAST.max_connections)]
    try:
        await asyncio.sleep(0.05)
        answer = await exchange(target.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait=2)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
        assert b"Retry-After: 1" in answer and b"Server: portico" in answer
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.1)
    answer = await exchange(target.port, request("/no/such/path"))
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:100]


async def test_a_client_leaving_mid_body_is_not_an_error(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    raw = request(target.path, f"Authorization: Bearer {TOKEN}\r\n".encode(), body=b'{"job_type": "t", "pay')
    raw = raw.replace(b"Content-Length: 22", b"Content-Length: 5000")
    await exchange(target.port, raw, close_after_write=True)
    await asyncio.sleep(0.3)
    counts = await target.status_counts()
    assert 500 not in counts, counts
    assert counts.get(499) == 1, counts
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], _everything_logged(caplog)
    assert await target.created() == 0


def _job_body(target: Target) -> bytes:
    return b'{"job_type": "t", "payload": {"n": 1}}' if target.name == "queue" else b'{"job_type": "t"}'


@pytest.mark.parametrize(
    ("encoding", "encode", "status"),
    [
        ("gzip", gzip.compress, None),
        ("deflate", zlib.compress, None),
        ("gzip", lambda body: b"this is not gzip at all", 415),
        ("deflate", lambda body: b"\x00\x01\x02 not deflate", 415),
        ("br", lambda body: body, 415),
        ("x-unknown", lambda body: body, 415),
        ("gzip", lambda body: gzip.compress(b'{"job_type": "t", "pad": "' + b" " * 3_000_000 + b'"}'), 413),
    ],
)
async def test_compressed_bodies_are_decoded_within_the_limit_or_refused_with_415(
    target: Target, encoding: str, encode: Callable[[bytes], bytes], status: int | None
) -> None:
    body = encode(_job_body(target))
    raw = request(
        target.path, f"Authorization: Bearer {TOKEN}\r\nContent-Encoding: {encoding}\r\n".encode(), body=body
    )
    answer = await exchange(target.port, raw)
    got = int(answer.split(b" ", 2)[1])
    if status is None:
        assert got in (201, 202), answer
        assert await target.created() == 1
    else:
        assert got == status, answer
        assert await target.created() == 0


async def test_the_queue_service_bounds_the_time_to_send_a_body(queue_service_factory: Any) -> None:
    async for target in _queue(queue_service_factory, FAST, body_timeout=0.3):
        raw = request(target.path, f"Authorization: Bearer {TOKEN}\r\n".encode(), body=b'{"job_ty')
        raw = raw.replace(b"Content-Length: 8", b"Content-Length: 100")
        answer = await exchange(target.port, raw, wait=3)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert await target.created() == 0


_WEBHOOK_SERVER_SCRIPT = """
import asyncio, logging
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.sources.webhook.trigger import WebhookAuthSpec, WebhookConfig, WebhookTrigger

async def main():
    logging.basicConfig(level=logging.INFO)
    config = WebhookConfig(prefix="/hooks/h", host="127.0.0.1", port=0, auth=WebhookAuthSpec(type="none"))
    trigger = WebhookTrigger(InMemoryJobCreator(), config)
    await trigger.start()
    print("listening on", trigger.url.rsplit("/hooks", 1)[0], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

DESCRIPTOR_LIMIT = 64


@pytest.mark.parametrize("server", ["webhook", "queue"])
def test_running_out_of_file_descriptors_logs_a_line_not_a_flood(server: str, tmp_path: Any) -> None:
    """With its descriptors exhausted by idle clients, a server logs the condition about once per interval
    (it used to log a traceback per accept attempt, thousands a second), and serves again once they go."""
    import resource
    import select
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))

    if server == "webhook":
        command = [sys.executable, "-c", _WEBHOOK_SERVER_SCRIPT]
    else:
        command = [sys.executable, "-m", "portico", "queue-service", "--port", "0", "--db", ":memory:"]
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=low_limit)
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert "listening on" in line, log_path.read_text()
        url = line.split("listening on", 1)[1].strip()
        port = int(url.rsplit(":", 1)[1])
        for _ in range(DESCRIPTOR_LIMIT * 2):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(2.5)
        logged = log_path.read_text()
        reports = logged.count("out of file descriptors")
        assert 1 <= reports <= 2, logged[-3000:]
        assert "Traceback" not in logged and "socket.accept() out of system resource" not in logged
        for client in clients:
            client.close()
        clients.clear()
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    assert response.status == 200
                break
            except urllib.error.HTTPError as exc:  # the webhook server has no /healthz: a 404 is an answer
                assert exc.code == 404
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not recover"
                time.sleep(0.2)
    finally:
        for client in clients:
            client.close()
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
