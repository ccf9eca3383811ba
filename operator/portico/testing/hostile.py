"""Hostile input for every HTTP entry point, shared by the property-based tests and `bench/hostile.py`.

The shapes that once produced a 5xx, a job stored but reported failed, a leaked token or a stalled
server: deep nesting, non-finite and oversized numbers, lone surrogates, control characters in names,
broken bytes, compressed and corrupt bodies, malformed header lines carrying a real token. A case is built
by `hostile_case(pick)`, where `pick` chooses one item of a sequence: `random.Random(seed).choice` for the
benchmark, a hypothesis draw in the tests (which then shrinks failures to the smallest case).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Pick = Callable[[Sequence[Any]], Any]

TOKEN = "tok-7Q2xW9rLm4Kd8vNz"
"""The real bearer token the servers under test are configured with; it must never come back."""

DEPTHS = (1, 10, 62, 63, 64, 65, 66, 100, 200, 976, 980, 1000, 5000, 100_000)
NUMBERS = (
    "1e400",
    "-1e400",
    "1E+999",
    "NaN",
    "Infinity",
    "-Infinity",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1" + "0" * 30,
    "1" * 5000,
    "1e19",
    "0.1e-400",
    "42",
)
TEXTS = (
    '"\\ud800"',
    '"\\udfff"',
    '"a\\udbffb"',
    '"\\u0000"',
    '"\\ud83d\\ude00"',
    '"abc\\n"',
    '"\\u001b[31mred"',
    '"' + "x" * 300 + '"',
    '"plain"',
)
LEAVES = (*NUMBERS, *TEXTS, "true", "null", "{}", "[]")
IDENTIFIERS = (
    '"t"',
    '"t"',
    '"t\\u0000"',
    '"t\\n"',
    '"abc\\n"',
    '"\\ud800"',
    '"t\\r\\nINFO forged"',
    '""',
    '"' + "t" * 300 + '"',
    "5",
)
DAMAGE = ("none",) * 6 + ("truncate", "latin1", "bom", "nul")
ENCODINGS = ("plain",) * 6 + ("gzip", "deflate", "corrupt", "bomb", "unknown")
UNKNOWN_ENCODINGS = ("br", "zstd", "x-custom", "gzip, br")

MALFORMED_HEADER_LINES = (
    f"Authorization: Bearer {TOKEN}\x00\r\n".encode(),
    f"Authorization: Bearer {TOKEN}\nX-Next: 1\r\n".encode(),
    f"Authorization: Bearer {TOKEN}\rX-Next: 1\r\n".encode(),
    f"Authorization: Bearer {TOKEN}\x01\r\n".encode(),
    f"Authorization: Bearer {TOKEN}{'A' * 20_000}\r\n".encode(),
    f"Authorization: Bearer {TOKEN}".encode() + b"\xff\xfe\r\n",
    f"Bearer {TOKEN}: x\r\n".encode(),
    f"Authorization: Bearer\r\n {TOKEN}\x00\r\n".encode(),
    f"Authorization Bearer {TOKEN}\r\n".encode(),
)
GOOD_AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
AUTH_LINES = (GOOD_AUTH,) * 6 + MALFORMED_HEADER_LINES


def nested(depth: int, *, kind: str = "list", leaf: str = "1") -> str:
    if kind == "list":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


def hostile_value(pick: Pick) -> str:
    """A JSON (or nearly JSON) value as text."""
    shape = pick(("deep", "leaf", "deep-leaf", "object-key"))
    if shape == "deep":
        return nested(pick(DEPTHS), kind=pick(("list", "object")))
    if shape == "leaf":
        return str(pick(LEAVES))
    if shape == "deep-leaf":
        return nested(pick(DEPTHS[:6]), leaf=pick(LEAVES))
    return "{" + str(pick(TEXTS)) + ": " + str(pick(LEAVES)) + "}"


@dataclass
class Case:
    """One hostile request: its body as sent, extra headers, and the raw header line carrying the token."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    auth_line: bytes = GOOD_AUTH

    def raw(self, path: str) -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        head += f"Content-Length: {len(self.body)}\r\n"
        return head.encode() + self.auth_line + b"\r\n" + self.body


def _damage(raw: bytes, how: str) -> bytes:
    if how == "truncate":
        return raw[: max(1, len(raw) // 2)]
    if how == "latin1":
        return raw.replace(b'"x"', b'"\xe9"', 1)
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "nul":
        return raw.replace(b":", b":\x00", 1)
    return raw


def _encode(body: bytes, how: str, pick: Pick) -> tuple[bytes, dict[str, str]]:
    if how == "gzip":
        return gzip.compress(body), {"Content-Encoding": "gzip"}
    if how == "deflate":
        return zlib.compress(body), {"Content-Encoding": "deflate"}
    if how == "corrupt":
        return b"\x1f\x8b\x08\x00garbage" + body[:50], {"Content-Encoding": "gzip"}
    if how == "bomb":
        return _bomb(), {"Content-Encoding": "gzip"}
    if how == "unknown":
        return body, {"Content-Encoding": pick(UNKNOWN_ENCODINGS)}
    return body, {}


@functools.cache
def _bomb() -> bytes:
    """20 MB of JSON in about 20 kB."""
    return gzip.compress(b'{"x": "' + b" " * 20_000_000 + b'"}', compresslevel=9)


def hostile_case(pick: Pick, *, envelope: bool, delivery_id: str | None = None) -> Case:
    """A request to an entry point: `{"job_type", "queue_name", "payload"}` when `envelope` (the queue
    service, a request-mode webhook), else a bare payload object (a payload-mode webhook)."""
    value = hostile_value(pick)
    if envelope:
        if pick((True, False)):
            names = f'"job_type": {pick(IDENTIFIERS)}, "queue_name": {pick(IDENTIFIERS)}'
            text = f'{{{names}, "payload": {{"x": {value}}}}}'
        else:
            text = f'{{"job_type": "t", "payload": {{"x": {value}}}}}'
    else:
        text = f'{{"x": {value}}}'
    raw = _damage(text.encode("utf-8", "surrogatepass"), pick(DAMAGE))
    body, headers = _encode(raw, pick(ENCODINGS), pick)
    if delivery_id is not None:
        headers["Idempotency-Key"] = delivery_id
    return Case(body, headers, pick(AUTH_LINES))


async def exchange(port: int, data: bytes, *, wait: float = 10.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes the connection. Raises TimeoutError
    when the server neither answers nor closes within `wait` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            pass
        received = b""
        async with asyncio.timeout(wait):
            try:
                while chunk := await reader.read(65536):
                    received += chunk
            except ConnectionError:
                pass
        return received
    finally:
        writer.close()


def status_of(answer: bytes) -> int | None:
    """The status code of a raw answer, None when the server closed without one."""
    if not answer.startswith(b"HTTP/"):
        return None
    return int(answer.split(b" ", 2)[1])


def deliberate(status: int | None) -> bool:
    """No 5xx but the deliberate 503 (overload, queue unavailable)."""
    return status is None or status < 500 or status == 503


class LogRecorder(logging.Handler):
    """Every log record of the process, formatted with its traceback, to grep for secrets."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self._level = logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> LogRecorder:
        root = logging.getLogger()
        self._level = root.level
        root.addHandler(self)
        root.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)

    def leaked(self, secret: str) -> list[str]:
        return [line for line in self.lines if secret in line]


def reported_cases(*, envelope: bool) -> list[Case]:
    """The shapes reported before hardening, each sent as a well-formed, authenticated request: payloads
    800 to 980 deep (stored, then claims of their queue answered 500 after leasing; the exact depth
    depends on the stack), 200 deep (stored but reported failed), 1e400, a queue name with a trailing
    newline, a gzip header over a body that is not gzip."""
    payloads = [nested(976), nested(900), nested(800), nested(200), nested(980), "1e400", '"ok"']
    bodies = [
        (
            f'{{"job_type": "t", "queue_name": "p", "payload": {{"x": {value}}}}}'
            if envelope
            else f'{{"x": {value}}}'
        )
        for value in payloads
    ]
    if envelope:
        bodies.append('{"job_type": "t", "queue_name": "abc\\n", "payload": {}}')
    cases = [Case(body.encode()) for body in bodies]
    cases.append(Case(b"this is not gzip", {"Content-Encoding": "gzip"}))
    return cases
