"""An HTTP request and its answer as the webhook pipeline sees them, whatever server carried them."""

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

logger = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json", "Server": "portico"}
"""An internet-facing endpoint does not advertise its software versions."""
CLIENT_CLOSED_REQUEST = 499
"""Recorded (never sent: nobody is listening) when the client went away before its request was read."""

BodyReader = Callable[[int], Awaitable[bytes | None]]
"""Reads the request body up to a limit: the bytes, or None as soon as they exceed it. Raises
`UndecodableBody`, and ConnectionError when the client goes away."""


class UndecodableBody(Exception):
    """The Content-Encoding is not one the server decodes, or the body is not valid data of it (415), or
    its transfer encoding is malformed (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WebhookRequest:
    """One HTTP request as the pipeline sees it. `headers` must look up names case-insensitively."""

    method: str
    path: str
    headers: Mapping[str, str]
    read_body: BodyReader
    remote: str | None = None

    @classmethod
    def of_bytes(
        cls,
        method: str,
        path: str,
        headers: Mapping[str, str] | list[tuple[str, str]],
        body: bytes,
        remote: str | None = None,
    ) -> "WebhookRequest":
        """A request whose body is already in memory (tests, other frameworks)."""

        async def read(limit: int) -> bytes | None:
            return body if len(body) <= limit else None

        items = list(headers.items()) if isinstance(headers, Mapping) else headers
        return cls(method, path, CIMultiDictProxy(CIMultiDict(items)), read, remote)


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False
    """Close the connection after answering: the rest of a refused body is not worth reading."""


def json_answer(
    status: int, body: dict[str, object], headers: Mapping[str, str] | None = None
) -> WebhookResponse:
    return WebhookResponse(status, json.dumps(body).encode(), {**JSON_HEADERS, **(headers or {})})


def no_webhook() -> WebhookResponse:
    return json_answer(404, {"error": "no webhook at this path"})


def method_not_allowed() -> WebhookResponse:
    return json_answer(405, {"error": "only POST is accepted"}, {"Allow": "POST"})


def client_gone() -> WebhookResponse:
    logger.debug("a webhook client closed its connection before its request was read")
    return json_answer(CLIENT_CLOSED_REQUEST, {"error": "the client closed the connection"})


def is_json(headers: Mapping[str, str]) -> bool:
    raw = headers.get("Content-Type", "")
    if raw == "application/json":
        return True
    mime = raw.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


class WebhookRefusal(Exception):
    """A request answered with an error status; `reason` goes to the log, `message` to the sender."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        headers: dict[str, str] | None = None,
        close: bool = False,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or message
        self.headers = headers or {}
        self.close = close
        self.extra = extra
