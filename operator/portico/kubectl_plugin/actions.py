"""`suspend`, `resume` and `run-now`: the writes the plugin makes, each a merge patch of the field or
annotation the operator watches."""

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from portico.kubectl_plugin.cluster import Cluster, PluginError
from portico.kubectl_plugin.get import source_of
from portico.operator.resource import RUN_NOW_ANNOTATION

POLL_SECONDS = 0.25
FAILURE_REASONS = ("RunNowFailed", "RunNowUnsupported")


async def set_suspended(cluster: Cluster, name: str, suspend: bool, out: TextIO) -> int:
    obj = await cluster.get_trigger(name)
    verb = "suspended" if suspend else "resumed"
    if bool((obj.get("spec") or {}).get("suspend")) == suspend:
        out.write(f"jobtrigger.triggers.portico.dev/{name} already {verb}\n")
        return 0
    await cluster.patch_trigger(name, {"spec": {"suspend": suspend}})
    out.write(f"jobtrigger.triggers.portico.dev/{name} {verb}\n")
    return 0


def new_token() -> str:
    """Unique per call, readable in Events and job metadata: `20261129T090000Z-3f9a1c2b`."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


async def run_now(
    cluster: Cluster, name: str, *, wait_seconds: float, wait: bool, output: str | None, out: TextIO
) -> int:
    obj = await cluster.get_trigger(name)
    if source_of(obj) != "schedule":
        raise PluginError(
            f'jobtrigger "{name}" has a {source_of(obj)} source: run-now works on schedules only'
        )
    phase = (obj.get("status") or {}).get("phase")
    if phase != "Running":
        reason = "suspended" if (obj.get("spec") or {}).get("suspend") else f"in phase {phase or 'Pending'}"
        raise PluginError(f'jobtrigger "{name}" is {reason}: a manual run needs a running trigger')
    token = new_token()
    await cluster.patch_trigger(name, {"metadata": {"annotations": {RUN_NOW_ANNOTATION: token}}})
    if not wait:
        out.write(f"jobtrigger.triggers.portico.dev/{name} run-now requested ({token})\n")
        return 0
    accepted = await wait_for_run(cluster, name, obj["metadata"]["uid"], token, wait_seconds)
    if output in ("json", "yaml"):
        from portico.kubectl_plugin.output import document

        document(out, {"name": name, "namespace": cluster.namespace, **accepted}, output)
    else:
        out.write(f"jobtrigger.triggers.portico.dev/{name} ran now: job {accepted['jobId']} accepted\n")
    return 0


async def wait_for_run(
    cluster: Cluster, name: str, uid: str, token: str, wait_seconds: float
) -> dict[str, Any]:
    """Until `status.lastRunNow` names our token (the queue service accepted the job), or a Warning Event
    about it says why not. Raises PluginError when neither happens within `wait_seconds`."""
    deadline = time.monotonic() + wait_seconds
    while True:
        obj = await cluster.get_trigger(name)
        last = (obj.get("status") or {}).get("lastRunNow") or {}
        if last.get("token") == token and last.get("jobId"):
            return dict(last)
        for event in await cluster.events_for(cluster.namespace, uid):
            if event.reason in FAILURE_REASONS and token in (event.message or ""):
                raise PluginError(f"the manual run failed: {event.message}")
        if time.monotonic() >= deadline:
            raise PluginError(
                f"no job accepted for run-now {token} within {wait_seconds:g}s; the annotation stays set, so "
                f"the operator will still run it: watch `kubectl portico describe {name}`"
            )
        await asyncio.sleep(POLL_SECONDS)
