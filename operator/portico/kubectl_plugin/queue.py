"""The queue service as the plugin reaches it: its URL (a flag, the environment, or the operator
Deployment's own setting) and the jobs one trigger created (`history`)."""

import json
import os
import urllib.parse
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from portico.kubectl_plugin.cluster import Cluster, PluginError, arg_value, container_args, container_env
from portico.kubectl_plugin.output import age, document, shorten, table

PAGE_SIZE = 500
MAX_PAGES = 200
"""History scans at most this many pages (100,000 jobs of one trigger) for the most recent ones."""
ERROR_WIDTH = 50


@dataclass(frozen=True)
class QueueEndpoint:
    url: str
    token: str | None
    origin: str
    """Where the URL came from, for messages: `--queue-url`, `PORTICO_QUEUE_URL`, `deployment ns/name`."""


def _setting_of(deployment: Any) -> str | None:
    """The queue URL the operator Deployment runs with: its `--queue-url` argument or env."""
    return arg_value(container_args(deployment), "--queue-url") or container_env(
        deployment, "PORTICO_QUEUE_URL"
    )


def _read_token(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise PluginError(f"cannot read --queue-token-file: {exc.strerror}") from None


async def find_queue(
    cluster: Cluster, url: str | None, token_file: str | None, operator_namespace: str | None
) -> QueueEndpoint:
    token = (_read_token(token_file) if token_file else None) or os.environ.get("PORTICO_QUEUE_TOKEN") or None
    if url:
        return QueueEndpoint(url.rstrip("/"), token, "--queue-url")
    if os.environ.get("PORTICO_QUEUE_URL"):
        return QueueEndpoint(os.environ["PORTICO_QUEUE_URL"].rstrip("/"), token, "PORTICO_QUEUE_URL")
    for deployment in await cluster.operator_deployments(operator_namespace):
        found = _setting_of(deployment)
        if found:
            meta = deployment.metadata
            return QueueEndpoint(found.rstrip("/"), token, f"deployment {meta.namespace}/{meta.name}")
    raise PluginError(
        "no queue service URL: pass --queue-url (or set PORTICO_QUEUE_URL); none was found on an operator "
        "Deployment (labels "
        + "app.kubernetes.io/name=portico-triggers,app.kubernetes.io/component=operator)"
    )


def unreachable_hint(endpoint: QueueEndpoint) -> str:
    host = urllib.parse.urlsplit(endpoint.url).hostname or ""
    if host.endswith(".svc") or ".svc." in host:
        service, namespace = [*host.split("."), "", ""][:2]
        port = urllib.parse.urlsplit(endpoint.url).port or 80
        return (
            f"{endpoint.url} (from {endpoint.origin}) is a cluster-internal address: run "
            f"`kubectl -n {namespace} port-forward svc/{service} 8000:{port}` and pass "
            "--queue-url http://127.0.0.1:8000"
        )
    return f"check that the queue service at {endpoint.url} (from {endpoint.origin}) is up and reachable"


async def fetch_json(session: aiohttp.ClientSession, endpoint: QueueEndpoint, path: str) -> Any:
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    try:
        async with session.get(endpoint.url + path, headers=headers) as response:
            body = await response.read()
            if response.status == 401:
                raise PluginError(
                    "the queue service refused the request (401): pass its token with --queue-token-file "
                    "or PORTICO_QUEUE_TOKEN"
                )
            if response.status != 200:
                raise PluginError(f"the queue service answered {response.status}: {body[:200]!r}")
            return json.loads(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PluginError(
            f"cannot reach the queue service: {exc or type(exc).__name__}; " + unreachable_hint(endpoint)
        ) from None
    except ValueError:
        raise PluginError("the queue service answered with something that is not JSON") from None


async def trigger_jobs(
    endpoint: QueueEndpoint, uid: str, limit: int, request_seconds: float
) -> tuple[list[Any], bool]:
    """The `limit` most recent jobs whose metadata names the trigger's UID, oldest first, and whether
    the scan stopped at MAX_PAGES before the end."""
    recent: deque[Any] = deque(maxlen=limit)
    cursor: str | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_seconds)) as session:
        for _ in range(MAX_PAGES):
            query = {"metadata": f"trigger.uid={uid}", "limit": str(PAGE_SIZE)}
            if cursor:
                query["cursor"] = cursor
            page = await fetch_json(session, endpoint, "/v1/jobs?" + urllib.parse.urlencode(query))
            recent.extend(page.get("jobs", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return list(recent), False
    return list(recent), True


def _cause(job: dict[str, Any]) -> str:
    """Why the job exists, from the source's metadata: a manual run, a scheduled time, a delivery."""
    meta = job.get("metadata") or {}
    if meta.get("run_now"):
        return f"run-now {meta['run_now']}"
    for key in ("scheduled_time", "webhook.event", "file.event", "amqp.message_id"):
        if meta.get(key):
            return f"{key} {meta[key]}"
    return ""


async def history(
    cluster: Cluster,
    name: str,
    endpoint: QueueEndpoint,
    *,
    limit: int,
    output: str | None,
    request_seconds: float,
    out: TextIO,
    err: TextIO,
) -> int:
    if not 1 <= limit <= 10_000:
        raise PluginError("--limit must be between 1 and 10000")
    obj = await cluster.get_trigger(name)
    jobs, truncated = await trigger_jobs(endpoint, obj["metadata"]["uid"], limit, request_seconds)
    jobs.reverse()
    if output in ("json", "yaml"):
        document(out, {"name": name, "namespace": cluster.namespace, "jobs": jobs}, output)
        return 0
    if truncated:
        err.write(f"more than {MAX_PAGES * PAGE_SIZE} jobs: showing the most recent of the first ones\n")
    if not jobs:
        err.write(f'No jobs found for jobtrigger "{name}" in {endpoint.url}.\n')
        return 0
    now = datetime.now(UTC)
    wide = output == "wide"
    cols = ["JOB ID", "TYPE", "QUEUE", "STATUS", "ATTEMPTS", "CREATED"]
    cols += ["CAUSE", "IDEMPOTENCY KEY", "LAST ERROR"] if wide else ["LAST ERROR"]
    rows = []
    for job in jobs:
        cells = [
            str(job.get("id")),
            str(job.get("job_type")),
            str(job.get("queue_name")),
            str(job.get("status")),
            f"{job.get('attempts', 0)}/{job.get('max_attempts', '?')}",
            age(job.get("created_at"), now),
        ]
        if wide:
            cells += [_cause(job) or "<none>", str(job.get("idempotency_key") or "<none>")]
        error = str(job.get("last_error") or "")
        cells.append((error if wide else shorten(error, ERROR_WIDTH)) or "<none>")
        rows.append(cells)
    table(out, cols, rows)
    return 0
