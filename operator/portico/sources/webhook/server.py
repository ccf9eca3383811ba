"""The HTTP server that webhook triggers share: an aiohttp adapter over the request pipeline.

One server (one port) serves every webhook trigger of the operator process: a trigger claims its path
on start and releases it on stop, so routes come and go with the resources without restarting
anything. Routing is a plain dict lookup in one catch-all handler — aiohttp's router cannot remove
routes from a running application, and a dict is as fast as routing gets.

The server is embedded the way Kopf embeds its probe server: `AppRunner(handle_signals=False)` so the
host process keeps its signal handling, a `ready` flag for tests, and a cleanup that a cancellation of
the caller cannot interrupt half-way.
"""

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web

from portico.http_guard import (
    BODY_READ_ERRORS,
    GuardedRunner,
    ServerLimits,
    body_read_refusal,
    encoding_refusal,
)
from portico.sources.webhook.messages import (
    JSON_HEADERS,
    UndecodableBody,
    WebhookRequest,
    WebhookResponse,
    client_gone,
    json_answer,
    method_not_allowed,
    no_webhook,
)
from portico.sources.webhook.spec import normalize_path

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 2.0
"""How long a stopping server lets open connections finish. Triggers drain their own requests before
they release their paths, so by then little is left in flight."""


class WebhookEndpoint(Protocol):
    """What the server routes a POST to: one trigger."""

    @property
    def owner(self) -> str:
        """Who serves the path (`namespace/name`), shown to the trigger that asks for the same path."""
        ...

    async def handle(self, request: WebhookRequest) -> WebhookResponse: ...


class PathInUseError(Exception):
    def __init__(self, path: str, owner: str) -> None:
        super().__init__(f"webhook path {path} is already served by {owner}")
        self.path = path
        self.owner = owner


def to_response(answer: WebhookResponse) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body, headers=answer.headers)
    if answer.close:
        response.force_close()
    return response


def json_response(
    status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> web.Response:
    return to_response(json_answer(status, body, headers))


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
            return to_response(no_webhook())
        if request.method != "POST":
            return to_response(method_not_allowed())
        incoming = WebhookRequest(
            request.method,
            request.path,
            request.headers,
            functools.partial(read_body_capped, request),
            request.remote,
        )
        try:
            answer = await endpoint.handle(incoming)
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            answer = client_gone()
        except Exception:
            logger.exception("webhook handler failed", extra={"path": request.path, "owner": endpoint.owner})
            answer = json_answer(500, {"error": "internal error"})
        return to_response(answer)


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


__all__ = [
    "JSON_HEADERS",
    "PathInUseError",
    "UndecodableBody",
    "WebhookEndpoint",
    "WebhookServer",
    "client_gone",
    "json_response",
    "normalize_path",
    "read_body_capped",
]
