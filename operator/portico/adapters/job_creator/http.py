"""The job creator the operator uses: posts jobs to the queue service over HTTP.

Retrying is only safe because every attempt carries the same `Idempotency-Key`: when a response is lost
after the service stored the job, the next attempt gets that job back (200) instead of a second one.
Connection errors, timeouts, 5xx and 429 are retried with exponential backoff and full jitter (a crowd of
triggers retrying after an outage spreads out instead of arriving in waves), honouring `Retry-After`;
every other 4xx is final. The whole call is bounded by `deadline`, so a trigger never waits forever.
"""

import asyncio
import email.utils
import hashlib
import json
import logging
import random
import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import quote
from uuid import UUID

import aiohttp
import pydantic
from yarl import URL

from portico import __version__
from portico.domain.histogram import Histogram
from portico.domain.input_policy import ENVELOPE_DEPTH, PolicyViolation, parse_json
from portico.ports.job_creator import Job, JobCreationError, JobCreator

logger = logging.getLogger(__name__)

REQUEST_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_HEADER_SAFE_KEY = re.compile(r"[\x21-\x7e]{1,200}")
MAX_ERROR_DETAIL = 300
_strict_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def header_safe_idempotency_key(key: str) -> str:
    """The key as sent in the `Idempotency-Key` header. Short keys of visible ASCII go unchanged; any other
    key (long, non-ASCII, with spaces or control characters) is replaced by `sha256:<hex>` of its UTF-8
    bytes: deterministic, so retries and restarts still send the same header, and always header-safe."""
    if _HEADER_SAFE_KEY.fullmatch(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _error_detail(body: bytes) -> str:
    """The service's own explanation from an error body (`{"error": ..., "field": ...}`), shortened."""
    text = body.decode("utf-8", "replace")
    try:
        data = parse_json(text, max_depth=ENVELOPE_DEPTH)
    except PolicyViolation:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        text = data["error"]
        if isinstance(data.get("field"), str):
            text = f"{data['field']}: {text}"
    text = " ".join(text.split())
    return text[:MAX_ERROR_DETAIL] + ("…" if len(text) > MAX_ERROR_DETAIL else "")


class _Retryable(Exception):
    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class HttpJobCreator(JobCreator):
    """A `JobCreator` backed by the queue service's HTTP API. One instance holds one connection pool;
    share it between triggers and `close()` it once (or use it as `async with`). The pool belongs to the
    event loop of the first call."""

    peer: ClassVar[str] = "queue service"
    """What the other end is called in messages (subclasses post to other kinds of HTTP services)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        deadline: float = 30.0,
        max_connections: int = 32,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        max_response_bytes: int = 64 * 1024 * 1024,
        rng: random.Random | None = None,
        metrics_of: "HttpJobCreator | None" = None,
    ) -> None:
        """`metrics_of`: count this creator's requests in that creator's figures (the operator's
        `portico_queue_request*` metrics cover every queue service it sends to)."""
        if min(connect_timeout, request_timeout, deadline) <= 0 or max_connections < 1:
            raise ValueError("timeouts and the deadline must be positive, max_connections at least 1")
        if max_response_bytes < 1024:
            raise ValueError("max_response_bytes must be at least 1024")
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"the {self.peer} URL must be http(s)://host[:port][/path], not {base_url!r}")
        self.base_url = str(url.with_user(None).with_query(None).with_fragment(None)).rstrip("/")
        """Without credentials, so it is safe to show in messages."""
        self._base = str(url.with_query(None).with_fragment(None)).rstrip("/")
        self._token = token
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._deadline = deadline
        self.request_seconds: Histogram = (
            Histogram(REQUEST_SECONDS_BUCKETS) if metrics_of is None else metrics_of.request_seconds
        )
        """Duration of every request to the queue service (each attempt), for the metrics exporter."""
        self.requests_by_outcome: Counter[str] = (
            Counter() if metrics_of is None else metrics_of.requests_by_outcome
        )
        self._max_connections = max_connections
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_response_bytes = max_response_bytes
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._jobs_url = URL(f"{self._base}/v1/jobs", encoded=True)
        self._full_timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        """The shared session, made on first use. A session belongs to one event loop; used from another
        (a library user calling `asyncio.run` twice), the creator starts a fresh pool there."""
        if self._closed:
            raise JobCreationError("the job creator is closed", retryable=False)
        loop = asyncio.get_running_loop()
        if self._session is not None and self._session_loop is not loop:
            self._session = None
        if self._session is None:
            self._session_loop = loop
            headers = {"User-Agent": f"portico/{__version__}", "Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30.0),
                headers=headers,
                raise_for_status=False,
            )
        return self._session

    def _redact(self, message: str) -> str:
        return message.replace(self._token, "<token>") if self._token else message

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0.0, min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        body: bytes | None,
        headers: dict[str, str],
        seconds: float,
    ) -> tuple[int, bytes]:
        """One request, timed and counted by outcome (2xx, 4xx, 5xx, error) for the metrics."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = "error"
        try:
            status, data = await self._send(session, method, url, body, headers, seconds)
            outcome = f"{status // 100}xx"
            return status, data
        except _Retryable as failure:
            if failure.status is not None:
                outcome = f"{failure.status // 100}xx"
            raise
        finally:
            self.request_seconds.observe(loop.time() - started)
            self.requests_by_outcome[outcome] += 1

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        body: bytes | None,
        headers: dict[str, str],
        seconds: float,
    ) -> tuple[int, bytes]:
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=(
                    self._full_timeout
                    if seconds >= self._request_timeout
                    else aiohttp.ClientTimeout(total=seconds, sock_connect=self._connect_timeout)
                ),
            ) as response:
                data = await self._read_bounded(response)
        except aiohttp.InvalidURL as exc:
            raise JobCreationError(
                f"invalid {self.peer} URL {self.base_url}: {exc}", retryable=False
            ) from None
        except TimeoutError:
            raise _Retryable(f"no answer within {seconds:.1f}s") from None
        except aiohttp.ClientError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        if response.status == 429 or response.status >= 500:
            raise _Retryable(
                f"HTTP {response.status}: {_error_detail(data)}",
                status=response.status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        return response.status, data

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, refused beyond `max_response_bytes` (checked while reading): a misbehaving service
        cannot make a client buffer without limit."""
        limit = self._max_response_bytes
        length = response.content_length
        if length is not None and length <= limit:
            return await response.read()
        if length is None:
            data = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > limit:
                    break
            if len(data) <= limit:
                return bytes(data)
        raise JobCreationError(
            f"the {self.peer} sent more than {limit} bytes in one answer", retryable=False, status=None
        )

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        what: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        deadline_seconds: float | None = None,
    ) -> tuple[int, bytes]:
        """Send until an answer that is not retryable arrives, or the deadline (the creator's, or
        `deadline_seconds`) leaves no room for another attempt (then a retryable `JobCreationError` with
        the last reason)."""
        session = self._get_session()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + (self._deadline if deadline_seconds is None else deadline_seconds)
        attempt = 0
        while True:
            if session.closed:
                message = f"{what}: the job creator was closed before an answer arrived"
                raise JobCreationError(message, retryable=True)
            attempt += 1
            remaining = deadline - loop.time()
            try:
                return await self._attempt(
                    session, method, url, body, headers or {}, min(self._request_timeout, remaining)
                )
            except _Retryable as failure:
                delay = failure.retry_after if failure.retry_after is not None else self._backoff(attempt)
                if loop.time() + delay >= deadline:
                    attempts = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                    elapsed = loop.time() - started
                    message = (
                        f"{what}: {failure.reason} (gave up after {attempts} in {elapsed:.1f}s; "
                        f"{self.peer} {self.base_url})"
                    )
                    raise JobCreationError(
                        self._redact(message), retryable=True, status=failure.status
                    ) from None
                logger.info(
                    "%s: %s; attempt %d again in %.2fs",
                    what,
                    self._redact(failure.reason),
                    attempt + 1,
                    delay,
                )
                await asyncio.sleep(delay)

    def _rejected(self, what: str, status: int, data: bytes) -> JobCreationError:
        if status in (401, 403):
            reason = f"the {self.peer} refused the credentials"
        elif 300 <= status < 400:
            reason = f"the {self.peer} answered with a redirect"
        else:
            reason = f"the {self.peer} rejected the request"
        message = f"{what}: {reason} (HTTP {status}: {_error_detail(data)})"
        return JobCreationError(self._redact(message), retryable=False, status=status)

    def _job(self, what: str, status: int, data: bytes) -> Job:
        """The job in a reply. The queue service stores only jobs within the input policy, whose nesting
        pydantic's parser reads, so a job the service stored is a job this reads; when a reply cannot be
        read, the policy says why."""
        try:
            return Job.model_validate_json(data)
        except pydantic.ValidationError as exc:
            try:
                parse_json(data, max_depth=ENVELOPE_DEPTH)
                reason = f"no valid job ({exc.error_count()} errors)"
            except PolicyViolation as violation:
                reason = f"a body outside the input policy: {violation}"
        message = f"{what}: HTTP {status} from the queue service with {reason}"
        raise JobCreationError(self._redact(message), retryable=False, status=status) from None

    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Create the job. Without `idempotency_key` a random one is used, which still makes this call's
        own retries safe. A job outside the input policy is refused by the queue service (400, not
        retried), before it is stored. Keys that are not header-safe are sent hashed
        (`header_safe_idempotency_key`)."""
        metadata, idempotency_key = self.with_context(metadata, idempotency_key)
        return await self._create(job_type, payload, queue_name, priority, metadata, idempotency_key, None)

    async def _create(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str,
        priority: int,
        metadata: dict[str, str] | None,
        idempotency_key: str | None,
        max_attempts: int | None,
    ) -> Job:
        what = f"creating a {job_type!r} job"
        request: dict[str, Any] = {
            "job_type": job_type,
            "queue_name": queue_name,
            "priority": priority,
            "payload": payload,
            "metadata": metadata or {},
        }
        if max_attempts is not None:
            request["max_attempts"] = max_attempts
        try:
            body = _strict_json.encode(request).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise JobCreationError(f"{what}: the job is not valid JSON: {exc}", retryable=False) from None
        key = (
            header_safe_idempotency_key(idempotency_key) if idempotency_key is not None else uuid.uuid4().hex
        )
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        status, data = await self._request("POST", self._jobs_url, what=what, body=body, headers=headers)
        if status not in (200, 201):
            raise self._rejected(what, status, data)
        job = self._job(what, status, data)
        if status == 200:
            job.existing = True
        return job

    async def get_job(self, job_id: str | UUID) -> Job | None:
        job_id = str(job_id)
        what = f"reading job {job_id!r}"
        url = URL(
            f"{self._base}/v1/jobs/{quote(job_id.encode('utf-8', 'surrogatepass'), safe='')}", encoded=True
        )
        status, data = await self._request("GET", url, what=what)
        if status == 404:
            return None
        if status != 200:
            raise self._rejected(what, status, data)
        return self._job(what, status, data)
