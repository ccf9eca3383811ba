"""Hardened serving for Portico's two HTTP servers: the webhook server and the queue service.

aiohttp's defaults suit a trusted network, not an endpoint exposed to the internet:

- no bound on the time to send headers, and an idle keep-alive of about an hour;
- no cap on connections;
- a malformed request line or header is logged with a traceback that quotes the raw line and echoed in
  a plain-text 400, so `Authorization: Bearer <token>\\x00` lands in logs and answers;
- `Server: Python/3.x aiohttp/3.x` on its own answers;
- when file descriptors run out, the event loop logs "out of system resource" thousands of times a
  second.

`GuardedRunner` is an `AppRunner` that fixes all of that for any application: header timeout, keep-alive
timeout, a connection cap answered 503, JSON error answers that never quote the request, `Server:
portico` everywhere, and a rate-limited log of resource exhaustion.
"""

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

logger = logging.getLogger(__name__)

SERVER_NAME = "portico"
RESOURCE_LOG_INTERVAL_SECONDS = 10.0
"""At most one log line per this many seconds while the process is out of file descriptors."""


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """Connection-level limits, the same knobs for both servers."""

    header_timeout: float = 10.0
    """Seconds from the first byte of a request to the end of its headers; then the connection is closed
    with 408."""
    keepalive_timeout: float = 15.0
    """Seconds an idle keep-alive connection stays open between requests."""
    max_connections: int = 1024
    """Open connections beyond which a new one is answered 503 and closed at once."""

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0 or self.max_connections < 1:
            raise ValueError("timeouts must be positive and max_connections at least 1")


BODY_READ_ERRORS = (ContentEncodingError, RequestPayloadError)
"""What reading a request body raises when the body, not the connection, is at fault."""
ACCEPTED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})


def encoding_refusal(content_encoding: str) -> str | None:
    """Why a request's Content-Encoding is refused (415), or None when it is one this server decodes."""
    if content_encoding.strip().lower() in ACCEPTED_ENCODINGS:
        return None
    return "the Content-Encoding must be gzip, deflate or identity"


def body_read_refusal(exc: BaseException) -> tuple[int, str]:
    """The answer to one of `BODY_READ_ERRORS`: 415 for a body that does not decode as its
    Content-Encoding says, 400 for a malformed transfer encoding."""
    cause = exc if isinstance(exc, ContentEncodingError) else exc.__cause__
    if isinstance(cause, ContentEncodingError):
        return 415, "the body does not decode as its Content-Encoding says"
    return 400, "the body is malformed (transfer encoding)"


def _raw_answer(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nServer: {SERVER_NAME}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


_OVER_CAPACITY = _raw_answer(
    503, "Service Unavailable", "too many open connections; retry later", "Retry-After: 1\r\n"
)
_HEADERS_TOO_SLOW = _raw_answer(408, "Request Timeout", "the request headers were not received in time")


class _RateLimitedLog:
    """One log line per interval for a recurring condition, with the number of occurrences in between."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -float("inf")
        self.suppressed = 0

    def __call__(self, level: int, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return
        suffix = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        self._last, self.suppressed = now, 0
        logger.log(level, "%s%s", message, suffix)


_over_capacity_log = _RateLimitedLog(RESOURCE_LOG_INTERVAL_SECONDS)
_out_of_resources_log = _RateLimitedLog(RESOURCE_LOG_INTERVAL_SECONDS)


class _GuardedHandler(RequestHandler):
    """One connection: aiohttp's protocol with a header timeout, a connection cap, and error answers and
    logs that never contain the request's text."""

    def __init__(self, manager: "_GuardedServer", **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if isinstance(manager, _GuardedServer) and len(manager.connections) >= self._limits.max_connections:
            _over_capacity_log(logging.WARNING, "connection limit reached: new connections are answered 503")
            self._force_close = True
            self._manager = None
            write = getattr(transport, "write", None)
            if write is not None:
                write(_OVER_CAPACITY)
            transport.close()
            return
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and not self._request_in_progress and not self._messages:
            self._header_timer = self._loop.call_later(self._limits.header_timeout, self._headers_too_slow)
        super().data_received(data)
        if self._header_timer is not None and (self._messages or self._request_in_progress):
            self._header_timer.cancel()
            self._header_timer = None

    def _process_keepalive(self) -> None:
        """A request whose headers are arriving is the header timer's to end (with a 408), not the idle
        timer's (which would close without a word)."""
        if self._header_timer is None:
            super()._process_keepalive()
        else:
            self._keepalive_handle = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._messages or self._request_in_progress or self.transport is None:
            return
        self.transport.write(_HEADERS_TOO_SLOW)
        self.force_close()
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's error answer, minus what leaks: its log quotes the raw request line (a bearer token
        with a stray NUL, for one) and its plain-text body echoes it. Here only the kind of error is
        logged and answered."""
        if isinstance(exc, HttpProcessingError):
            text = "malformed HTTP request"
            if isinstance(exc, LineTooLong):
                status, text = 431, "a request line or header is too long"
            elif isinstance(exc, ContentEncodingError):
                status, text = 415, "the Content-Encoding must be gzip, deflate or identity"
            logger.info(
                "malformed HTTP request from %s refused with %d (%s)",
                request.remote,
                status,
                type(exc).__name__,
            )
        elif status == 500:
            logger.error(
                "unexpected error answering a request (%s)", type(exc).__name__ if exc else "unknown"
            )
            text = "internal error"
        else:
            logger.info("request from %s answered %d by the HTTP layer", request.remote, status)
            text = "the request could not be handled"
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already being sent; the connection is closed")
        response = web.Response(
            status=status,
            body=json.dumps({"error": text}).encode(),
            headers={"Content-Type": "application/json", "Server": SERVER_NAME},
        )
        response.force_close()
        return response


class _GuardedServer(web.Server):
    def __init__(self, *args: Any, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


def _is_out_of_resources(context: dict[str, Any]) -> bool:
    exception = context.get("exception")
    return "out of system resource" in str(context.get("message", "")) or (
        isinstance(exception, OSError) and exception.errno in (23, 24)  # ENFILE, EMFILE
    )


def limit_resource_logs(loop: asyncio.AbstractEventLoop) -> None:
    """Rate-limit the event loop's "out of system resource" reports (one per accept attempt, thousands a
    second when file descriptors run out); every other report goes to the handler in place before."""
    previous = loop.get_exception_handler()
    if getattr(previous, "portico_resource_limiter", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _is_out_of_resources(context):
            _out_of_resources_log(
                logging.ERROR,
                "out of file descriptors: new connections wait until some close "
                f"({context.get('exception') or context.get('message')})",
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.portico_resource_limiter = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


class GuardedRunner(web.AppRunner):
    """An `AppRunner` serving `app` within `limits`. Every answer, aiohttp's own included, carries
    `Server: portico`."""

    def __init__(self, app: web.Application, *, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        self.limits = limits or ServerLimits()
        app.on_response_prepare.append(_server_header)
        super().__init__(app, keepalive_timeout=self.limits.keepalive_timeout, **kwargs)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        limit_resource_logs(asyncio.get_running_loop())
        return _GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            limits=self.limits,
            **plain._kwargs,
        )
