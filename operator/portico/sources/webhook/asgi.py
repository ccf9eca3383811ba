"""The webhook endpoint as an ASGI application, over the same request pipeline as the operator's server.

`WebhookTrigger.router` hands it out in the shape the host application expects:

- with FastAPI installed (`pip install portico-triggers[fastapi]`), a `fastapi.APIRouter` holding one
  route, `{prefix}/jobs`: `app.include_router(trigger.router)`, as the seed does;
- without FastAPI, a plain ASGI application (`WebhookASGI`) that serves that path and answers 404 for
  any other: run it on any ASGI server (`uvicorn module:app` with `app = trigger.router`), mount it
  under a prefix (Starlette's `Mount`, Django Channels, a `root_path` of your server), or call it from
  your own ASGI dispatcher. Served as the whole application, its lifespan starts and stops the trigger.

The ASGI server does not decode `Content-Encoding`; this adapter does (gzip, deflate), with the body
limit applied to the decoded bytes, as the aiohttp server does.
"""

import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from portico.http_guard import encoding_refusal
from portico.sources.webhook.messages import (
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

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ASGIApp(Protocol):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


Handler = Callable[[WebhookRequest], Awaitable[WebhookResponse]]
Lifecycle = Callable[[], Awaitable[None]]


class WebhookASGI:
    """An ASGI application that answers POSTs on `path` with `handler` (any path when `path` is None:
    for a framework route that has matched the path already)."""

    def __init__(
        self,
        handler: Handler,
        path: str | None,
        *,
        on_startup: Lifecycle | None = None,
        on_shutdown: Lifecycle | None = None,
    ) -> None:
        self.handler = handler
        self.path = normalize_path(path) if path is not None else None
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await _send(send, await self._answer(scope, receive))
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _answer(self, scope: Scope, receive: Receive) -> WebhookResponse:
        if self.path is not None and normalize_path(_route_path(scope)) != self.path:
            return no_webhook()
        if scope["method"] != "POST":
            return method_not_allowed()
        headers = CIMultiDictProxy(
            CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"])
        )
        client = scope.get("client")
        request = WebhookRequest(
            "POST", scope["path"], headers, _BodyReader(receive, headers), client[0] if client else None
        )
        try:
            return await self.handler(request)
        except ConnectionError:
            return client_gone()
        except Exception:
            logger.exception("webhook handler failed", extra={"path": scope["path"]})
            return json_answer(500, {"error": "internal error"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            phase = message["type"].removeprefix("lifespan.")
            action = self._on_startup if phase == "startup" else self._on_shutdown
            try:
                if action is not None:
                    await action()
            except Exception as exc:
                await send({"type": f"lifespan.{phase}.failed", "message": str(exc)})
                return
            await send({"type": f"lifespan.{phase}.complete"})
            if phase == "shutdown":
                return


def _route_path(scope: Scope) -> str:
    """The path below where the application is mounted (ASGI's `root_path`), as Starlette reads it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


class _BodyReader:
    """Reads an ASGI request body up to a limit, decoding gzip and deflate as it arrives."""

    def __init__(self, receive: Receive, headers: CIMultiDictProxy[str]) -> None:
        self._receive = receive
        self._headers = headers

    async def __call__(self, limit: int) -> bytes | None:
        encoding = self._headers.get("Content-Encoding", "").strip().lower()
        refusal = encoding_refusal(encoding)
        if refusal is not None:
            raise UndecodableBody(415, refusal)
        declared = self._headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            return None
        decoder: Any = None
        received = bytearray()
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client closed the connection")
            chunk: bytes = message.get("body", b"")
            if encoding in ("gzip", "deflate") and chunk:
                if decoder is None:
                    decoder = _decoder(encoding, chunk)
                try:
                    chunk = decoder.decompress(chunk, limit + 1 - len(received))
                except zlib.error:
                    raise _corrupt() from None
            received += chunk
            if len(received) > limit:
                return None
            if not message.get("more_body", False):
                if decoder is not None:
                    received += decoder.flush()
                    if not decoder.eof:
                        raise _corrupt()
                    if len(received) > limit:
                        return None
                return bytes(received)


def _decoder(encoding: str, first: bytes) -> Any:
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    # deflate is meant to be zlib-wrapped, but some clients send raw deflate; tell them apart as aiohttp does.
    return zlib.decompressobj(zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS)


def _corrupt() -> UndecodableBody:
    return UndecodableBody(415, "the body does not decode as its Content-Encoding says")


async def _send(send: Send, answer: WebhookResponse) -> None:
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items()
    ]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    if answer.close:
        headers.append((b"connection", b"close"))
    with contextlib.suppress(OSError):
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


def build_router(handler: Handler, path: str, *, on_startup: Lifecycle, on_shutdown: Lifecycle) -> ASGIApp:
    """A `fastapi.APIRouter` with the endpoint when FastAPI is installed, else the plain application."""
    try:
        from fastapi import APIRouter
    except ImportError:
        return WebhookASGI(handler, path, on_startup=on_startup, on_shutdown=on_shutdown)
    router = APIRouter()
    endpoint: Any = WebhookASGI(handler, None)  # an ASGI application: Starlette passes it the raw request
    router.add_route(path, endpoint, include_in_schema=False, name="webhook_jobs")
    return router
