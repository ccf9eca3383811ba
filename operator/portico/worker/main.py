"""`portico worker`: a `Worker` over the queue service's HTTP API, with Prometheus metrics and probes
on their own port, JSON logs, and a graceful stop on SIGTERM."""

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from portico.adapters.job_queue.http import HttpJobQueue
from portico.logs import setup_logging
from portico.worker.handlers import HandlerError, load_handlers
from portico.worker.retry import RetryBackoff
from portico.worker.worker import Worker

logger = logging.getLogger(__name__)

WORKER = web.AppKey("worker", Worker)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[WORKER].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    """Liveness: the worker runs (also while it drains on shutdown)."""
    worker = request.app[WORKER]
    ok = worker.started.is_set()
    return web.json_response({"status": "ok" if ok else "starting"}, status=200 if ok else 503)


async def _readyz(request: web.Request) -> web.Response:
    """Readiness: claiming, and the queue service answered the last claim."""
    worker = request.app[WORKER]
    ready = worker.started.is_set() and not worker.stopping and worker.queue_reachable
    return web.json_response({"status": "ready" if ready else "not ready"}, status=200 if ready else 503)


def create_probe_app(worker: Worker) -> web.Application:
    app = web.Application()
    app[WORKER] = worker
    app.router.add_get("/metrics", _metrics, allow_head=False)
    app.router.add_get("/healthz", _healthz, allow_head=False)
    app.router.add_get("/readyz", _readyz, allow_head=False)
    return app


async def serve(worker: Worker, queue: HttpJobQueue, host: str, port: int) -> int:
    runner = web.AppRunner(create_probe_app(worker), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:
            print(f"worker metrics listening on http://{address[0]}:{address[1]}", flush=True)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
    finally:
        await queue.close()
        await asyncio.shield(runner.cleanup())
    return 0


def _token(token_file: str | None) -> str | None:
    """From `--queue-token-file` (or `PORTICO_QUEUE_TOKEN_FILE`): a mounted Secret, never the command
    line."""
    path = token_file or os.environ.get("PORTICO_QUEUE_TOKEN_FILE")
    return (Path(path).read_text(encoding="utf-8").strip() or None) if path else None


def run_worker(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    queue_url = args.queue_url or os.environ.get("PORTICO_QUEUE_URL")
    if not queue_url:
        logger.error("--queue-url (or PORTICO_QUEUE_URL) is required")
        return 2
    try:
        token = _token(args.queue_token_file)
    except OSError as exc:
        logger.error("cannot read the queue token file: %s", exc)
        return 2
    try:
        handlers = load_handlers(args.handlers)
        queue = HttpJobQueue(
            queue_url,
            token=token,
            max_connections=args.concurrency + 8,
            lease_call_deadline=max(1.0, args.lease_seconds / 3),
            request_timeout=max(1.0, min(10.0, args.lease_seconds / 3)),
        )
        worker = Worker(
            queue,
            handlers,
            queues=args.queues or ["default"],
            concurrency=args.concurrency,
            lease_seconds=args.lease_seconds,
            handler_timeout=args.handler_timeout,
            shutdown_timeout=args.shutdown_timeout,
            poll_interval=args.poll_interval,
            backoff=RetryBackoff(base=args.retry_backoff_base, maximum=args.retry_backoff_max),
            max_payload_bytes=args.max_payload_bytes,
            worker_id=args.id,
        )
    except HandlerError as exc:
        logger.error("no usable handlers: %s", exc)
        return 2
    except ValueError as exc:
        logger.error("invalid worker settings: %s", exc)
        return 2
    return asyncio.run(serve(worker, queue, args.metrics_host, args.metrics_port))
