"""The HTTP side of the queue service: routes, request checks, error answers, and `portico queue-service`.

Requests are checked completely (content type, size, JSON, fields, idempotency key) before anything
reaches the store, so a rejected request never leaves a trace.
"""

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast, get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from portico.http_guard import (
    BODY_READ_ERRORS,
    GuardedRunner,
    ServerLimits,
    body_read_refusal,
    encoding_refusal,
)
from portico.queue_service.metrics import QueueMetrics
from portico.queue_service.openapi import openapi_document
from portico.queue_service.settings import QueueServiceSettings, Synchronous, read_token
from portico.queue_service.store import JobConflict, JobNotFound, JobStore, StoreUnavailable, to_json
from portico.queue_service.validation import (
    RequestError,
    check_idempotency_key,
    check_queue_name,
    encode_cursor,
    parse_claim,
    parse_complete,
    parse_create,
    parse_extend,
    parse_fail,
    parse_json,
    parse_list_query,
)

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", QueueServiceSettings)
STORE = web.AppKey("store", JobStore)
METRICS = web.AppKey("metrics", QueueMetrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_CLOSED_REQUEST = 499
"""Recorded (never sent) when the client went away before its request was read: not a server error."""

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Metric labels stay bounded whatever methods clients invent."""


class _ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.close = close


def _json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=to_json(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    rule: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, str] = {"error": message}
    if field is not None:
        error["field"] = field
    if rule is not None:
        error["rule"] = rule
    return _json_response(error, status=status, headers=headers)


def _jobs_response(jobs: list[str], **extra: str | None) -> web.Response:
    """`{"jobs": [...], ...}` from jobs already encoded by the store."""
    tail = "".join(f",{to_json(name)}:{to_json(value)}" for name, value in extra.items())
    return web.Response(text=f'{{"jobs":[{",".join(jobs)}]{tail}}}', content_type="application/json")


async def _read_json(request: web.Request, *, required: bool) -> Any:
    """The JSON body. Optional bodies may be absent (then `{}`); a present body must be JSON, within the
    size limit, which is enforced while reading rather than after buffering everything."""
    if not required and not request.body_exists:
        return {}
    if request.content_type != "application/json":
        raise _ApiError(415, f"the body must be application/json, not {request.content_type}")
    refusal = encoding_refusal(request.headers.get("Content-Encoding", ""))
    if refusal is not None:
        raise _ApiError(415, refusal)
    settings = request.app[SETTINGS]
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _ApiError(413, f"the body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(settings.body_timeout):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _ApiError(413, f"the body is larger than {limit} bytes (decoded)") from None
    except BODY_READ_ERRORS as exc:
        raise _ApiError(*body_read_refusal(exc), close=True) from None
    except TimeoutError:
        raise _ApiError(408, "the body was not received in time", close=True) from None
    if not body and not required:
        return {}
    return parse_json(body)


async def create_job(request: web.Request) -> web.Response:
    data = await _read_json(request, required=True)
    key = check_idempotency_key(request.headers.get("Idempotency-Key"))
    settings = request.app[SETTINGS]
    spec = parse_create(data, default_max_attempts=settings.default_max_attempts)
    job, created = await request.app[STORE].create(
        job_type=spec.job_type,
        queue_name=spec.queue_name,
        priority=spec.priority,
        payload=spec.payload,
        metadata=spec.metadata,
        max_attempts=spec.max_attempts,
        idempotency_key=key,
    )
    request.app[METRICS].job_created(spec.queue_name, created)
    return web.Response(text=job, status=201 if created else 200, content_type="application/json")


def _job_response(job: str) -> web.Response:
    return web.Response(text=job, content_type="application/json")


async def get_job(request: web.Request) -> web.Response:
    job = await request.app[STORE].get(request.match_info["job_id"])
    if job is None:
        raise JobNotFound()
    return _job_response(job)


async def list_jobs(request: web.Request) -> web.Response:
    query = parse_list_query({name: request.query[name] for name in request.query})
    jobs, last = await request.app[STORE].list_jobs(
        queue_name=query.queue_name,
        status=query.status,
        job_type=query.job_type,
        metadata=query.metadata,
        after=query.after,
        limit=query.limit,
    )
    return _jobs_response(jobs, next_cursor=None if last is None else encode_cursor(last))


async def claim_jobs(request: web.Request) -> web.Response:
    queue_name = check_queue_name(request.match_info["queue"], "queue")
    data = await _read_json(request, required=False)
    claim = parse_claim(data, default_lease_seconds=request.app[SETTINGS].default_lease_seconds)
    jobs = await request.app[STORE].claim(
        queue_name, worker=claim.worker, lease_seconds=claim.lease_seconds, limit=claim.limit
    )
    return _jobs_response(jobs)


async def complete_job(request: web.Request) -> web.Response:
    data = await _read_json(request, required=True)
    complete = parse_complete(data)
    job = await request.app[STORE].complete(request.match_info["job_id"], lease_id=complete.lease_id)
    return _job_response(job)


async def extend_lease(request: web.Request) -> web.Response:
    extend = parse_extend(await _read_json(request, required=True))
    job = await request.app[STORE].extend(
        request.match_info["job_id"], lease_id=extend.lease_id, lease_seconds=extend.lease_seconds
    )
    return _job_response(job)


async def fail_job(request: web.Request) -> web.Response:
    data = await _read_json(request, required=True)
    fail = parse_fail(data)
    job = await request.app[STORE].fail(
        request.match_info["job_id"],
        lease_id=fail.lease_id,
        error=fail.error,
        retry=fail.retry,
        retry_delay=fail.retry_delay,
    )
    return _job_response(job)


async def health(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        if not store.healthy:
            raise StoreUnavailable("the store's writer is not running")
        await store.ping()
    except StoreUnavailable as exc:
        return _json_response({"status": "unavailable", "error": str(exc)}, status=503)
    return _json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return _json_response(openapi_document(request.app[SETTINGS]))


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    )


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication for /v1, one JSON error shape for every failure, and request metrics."""
    started = time.perf_counter()
    token = request.app[SETTINGS].token
    response: web.StreamResponse
    try:
        if token is not None and request.path.startswith("/v1/") and not _authorized(request, token):
            raise _ApiError(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        response = await handler(request)
    except RequestError as exc:
        response = _error_response(400, exc.message, field=exc.field, rule=exc.rule)
    except _ApiError as exc:
        response = _error_response(exc.status, exc.message, headers=exc.headers)
        if exc.close:
            response.force_close()
    except ConnectionError:
        logger.debug("the client went away during %s %s", request.method, request.path)
        response = _error_response(CLIENT_CLOSED_REQUEST, "the client closed the connection")
    except JobNotFound:
        response = _error_response(404, "no job has this id", field="job_id")
    except JobConflict as exc:
        response = _error_response(409, str(exc))
    except StoreUnavailable as exc:
        response = _error_response(503, str(exc), headers={"Retry-After": "1"})
    except web.HTTPException as exc:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = _error_response(exc.status, exc.reason, headers=headers)
    except Exception:
        logger.exception("unexpected error answering %s %s", request.method, request.path)
        response = _error_response(500, "internal error")
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "(unmatched)"
    method = request.method if request.method in _KNOWN_METHODS else "other"
    request.app[METRICS].request_answered(method, route, response.status, time.perf_counter() - started)
    return response


async def _store_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open the store (running migrations) before serving; sweep expired leases while serving; commit
    what was accepted and close on the way out."""
    store = app[STORE]
    await store.open()
    reaper = asyncio.create_task(_reap_expired_leases(store, app[SETTINGS].reap_interval))
    try:
        yield
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await store.close()


async def _reap_expired_leases(store: JobStore, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            requeued = await store.requeue_expired()
        except StoreUnavailable as exc:
            logger.warning("could not return expired leases to the queue: %s", exc)
            continue
        if requeued:
            logger.info("%d jobs with an expired lease went back to their queue", requeued)


def create_app(settings: QueueServiceSettings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_errors_and_metrics])
    store = JobStore(settings)
    app[SETTINGS] = settings
    app[STORE] = store
    app[METRICS] = QueueMetrics(store)
    app.cleanup_ctx.append(_store_lifecycle)
    app.router.add_post("/v1/jobs", create_job)
    app.router.add_get("/v1/jobs", list_jobs, allow_head=False)
    app.router.add_get("/v1/jobs/{job_id}", get_job, allow_head=False)
    app.router.add_post("/v1/jobs/{job_id}/complete", complete_job)
    app.router.add_post("/v1/jobs/{job_id}/fail", fail_job)
    app.router.add_post("/v1/jobs/{job_id}/extend", extend_lease)
    app.router.add_post("/v1/queues/{queue}/claim", claim_jobs)
    app.router.add_get("/healthz", health, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    return app


def _url(address: Any) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(settings: QueueServiceSettings, host: str, port: int) -> int:
    """Serve until SIGINT or SIGTERM. Prints `queue service listening on URL` once bound (with the real
    port when asked for port 0), which scripts and tests wait for."""
    app = create_app(settings)
    runner = GuardedRunner(
        app,
        limits=settings.limits,
        handle_signals=False,
        shutdown_timeout=10.0,
        access_log=logging.getLogger("aiohttp.access") if logger.isEnabledFor(logging.DEBUG) else None,
    )
    try:
        await runner.setup()
    except Exception as exc:
        logger.error("the queue store could not be opened at %s: %s", settings.db_path, exc)
        return 1
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        for address in runner.addresses:
            print(f"queue service listening on {_url(address)}", flush=True)
        logger.info(
            "queue service ready (database %s, token %s)", settings.db_path, "on" if settings.token else "off"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logger.info("queue service stopping")
    finally:
        await runner.cleanup()
    return 0


def run_queue_service(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        token = read_token(args.token_file)
    except OSError as exc:
        logger.error("cannot read the token file: %s", exc)
        return 2
    synchronous = os.environ.get("PORTICO_QUEUE_SYNCHRONOUS", "NORMAL").upper()
    if synchronous not in get_args(Synchronous):
        logger.error("PORTICO_QUEUE_SYNCHRONOUS must be one of %s", ", ".join(get_args(Synchronous)))
        return 2
    settings = QueueServiceSettings(
        db_path=args.db,
        token=token,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        limits=ServerLimits(
            header_timeout=args.header_timeout,
            keepalive_timeout=args.keepalive_timeout,
            max_connections=args.max_connections,
        ),
        synchronous=cast(Synchronous, synchronous),
    )
    return asyncio.run(serve(settings, args.host, args.port))
