"""The HTTP server that webhook triggers share, and the per-endpoint plumbing around it.

One server (one port) serves every webhook trigger of the operator process: a trigger claims its path
on start and releases it on stop, so routes come and go with the resources without restarting
anything. Routing is a plain dict lookup in one catch-all handler — aiohttp's router cannot remove
routes from a running application, and a dict is as fast as routing gets.

The server is embedded the way Kopf embeds its probe server: `AppRunner(handle_signals=False)` so the
host process keeps its signal handling, a `ready` flag for tests, and a cleanup that a cancellation of
the caller cannot interrupt half-way.
"""

import asyncio
import bisect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from portico.http_guard import (
    BODY_READ_ERRORS,
    GuardedRunner,
    ServerLimits,
    body_read_refusal,
    encoding_refusal,
)

logger = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json", "Server": "portico"}
"""An internet-facing endpoint does not advertise its software versions (aiohttp would)."""
SHUTDOWN_TIMEOUT_SECONDS = 2.0
"""How long a stopping server lets open connections finish. Triggers drain their own requests before
they release their paths, so by then little is left in flight."""


class WebhookEndpoint(Protocol):
    """What the server routes a POST to: one trigger's handler."""

    @property
    def owner(self) -> str:
        """Who serves the path (`namespace/name`), shown to the trigger that asks for the same path."""
        ...

    async def handle(self, request: web.Request) -> web.StreamResponse: ...


class PathInUseError(Exception):
    def __init__(self, path: str, owner: str) -> None:
        super().__init__(f"webhook path {path} is already served by {owner}")
        self.path = path
        self.owner = owner


def normalize_path(path: str) -> str:
    """`/hooks/a/` and `/hooks/a` are the same endpoint."""
    return path.rstrip("/") or "/"


def json_response(
    status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={**JSON_HEADERS, **(headers or {})}
    )


class WebhookServer:
    """An aiohttp server whose routes are claimed and released at run time."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, limits: ServerLimits | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.limits = limits or ServerLimits()
        self.ready = False
        self._routes: dict[str, WebhookEndpoint] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for). Only valid once started."""
        if self._port is None:
            raise RuntimeError("the webhook server is not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def paths(self) -> Sequence[str]:
        return sorted(self._routes)

    def owner_of(self, path: str) -> str | None:
        endpoint = self._routes.get(normalize_path(path))
        return endpoint.owner if endpoint else None

    def claim(self, path: str, endpoint: WebhookEndpoint) -> None:
        """Route POSTs on `path` to `endpoint`. The first claimant keeps a path: raises PathInUseError
        naming it when another owner asks for the same one. The same owner may take its path over, so a
        reconfigured trigger can start before its predecessor has stopped."""
        path = normalize_path(path)
        current = self._routes.get(path)
        if current is not None and current is not endpoint and current.owner != endpoint.owner:
            raise PathInUseError(path, current.owner)
        self._routes[path] = endpoint

    def release(self, path: str, endpoint: WebhookEndpoint) -> None:
        """Stop routing `path`, if `endpoint` still owns it."""
        path = normalize_path(path)
        if self._routes.get(path) is endpoint:
            del self._routes[path]

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = GuardedRunner(
            self.build_app(),
            limits=self.limits,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.requested_port).start()
        except BaseException:
            await asyncio.shield(runner.cleanup())
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self.ready = True
        logger.info("webhook server listening", extra={"host": self.host, "port": self._port})

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self.ready = False
        if runner is not None:
            await asyncio.shield(runner.cleanup())

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        endpoint = self._routes.get(normalize_path(request.path))
        if endpoint is None:
            return json_response(404, {"error": "no webhook at this path"})
        if request.method != "POST":
            return json_response(405, {"error": "only POST is accepted"}, {"Allow": "POST"})
        try:
            return await endpoint.handle(request)
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return client_gone()
        except Exception:
            logger.exception("webhook handler failed", extra={"path": request.path, "owner": endpoint.owner})
            return json_response(500, {"error": "internal error"})


CLIENT_CLOSED_REQUEST = 499
"""Recorded (never sent: nobody is listening) when the client went away before its request was read."""


def client_gone() -> web.Response:
    logger.debug("a webhook client closed its connection before its request was read")
    return json_response(CLIENT_CLOSED_REQUEST, {"error": "the client closed the connection"})


class UndecodableBody(Exception):
    """The Content-Encoding is not one the server decodes, or the body is not valid data of it (415), or
    its transfer encoding is malformed (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body_capped(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes.

    A declared Content-Length over the limit is refused before reading anything; a chunked body (or a
    lying one) is read only up to the limit, so a large upload never sits in memory. A gzip or deflate
    body is decoded as it arrives and the limit applies to the decoded bytes, so a compression bomb
    stops at the limit too. Raises `UndecodableBody` for any other Content-Encoding or a corrupt body.
    """
    refusal = encoding_refusal(request.headers.get("Content-Encoding", ""))
    if refusal is not None:
        raise UndecodableBody(415, refusal)
    if request.content_length is not None and request.content_length > limit:
        return None
    received = bytearray()
    while True:
        try:
            chunk = await request.content.readany()
        except BODY_READ_ERRORS as exc:
            raise UndecodableBody(*body_read_refusal(exc)) from None
        if not chunk:
            return bytes(received)
        received += chunk
        if len(received) > limit:
            return None


class TokenBucket:
    """`rate` tokens per second up to `burst`; one request takes one token.

    Time comes from the running loop's clock, so tests can fast-forward it.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated: float | None = None

    def try_take(self) -> float:
        """0 when a token was taken, else the seconds until one will be available."""
        now = asyncio.get_running_loop().time()
        if self._updated is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds in seconds, Prometheus' default buckets: what the metrics exporter turns into a histogram."""


@dataclass
class RequestMetrics:
    """Requests of one endpoint by status code and a latency histogram (non-cumulative bucket counts;
    the last count is for requests slower than every bound)."""

    by_status: dict[int, int] = field(default_factory=dict)
    latency_bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum_seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.by_status.values())

    def observe(self, status: int, seconds: float) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.latency_bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum_seconds += seconds

    def snapshot(self) -> "RequestMetrics":
        return RequestMetrics(
            by_status=dict(self.by_status),
            latency_bucket_counts=list(self.latency_bucket_counts),
            latency_sum_seconds=self.latency_sum_seconds,
        )
