"""`kubectl portico describe`: one trigger in full, as `kubectl describe` would show it, plus the
webhook's URL and a signed `curl` to call it."""

import os
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from portico.kubectl_plugin.cluster import Cluster
from portico.kubectl_plugin.get import origin_of, phase_of, source_of, target_of
from portico.kubectl_plugin.output import age, table, until
from portico.kubectl_plugin.webhook_curl import example_body, signed_curl


async def webhook_base(
    cluster: Cluster, explicit: str | None, operator_namespace: str | None
) -> tuple[str, str]:
    """The webhook server's base URL and a note on where it came from: `--webhook-url`, the
    environment, the chart's Ingress, else its Service (reachable in the cluster only)."""
    if explicit:
        return explicit.rstrip("/"), ""
    if os.environ.get("PORTICO_WEBHOOK_URL"):
        return os.environ["PORTICO_WEBHOOK_URL"].rstrip("/"), ""
    try:
        deployments = await cluster.operator_deployments(operator_namespace)
    except Exception:
        deployments = []
    for deployment in deployments:
        name, namespace = f"{deployment.metadata.name}-webhook", deployment.metadata.namespace
        networking: Any = client.NetworkingV1Api(cluster.api)
        try:
            ingress = await networking.read_namespaced_ingress(
                name, namespace, _request_timeout=cluster.timeout
            )
            rule = (ingress.spec.rules or [None])[0]
            if rule is not None and rule.host:
                scheme = "https" if ingress.spec.tls else "http"
                return f"{scheme}://{rule.host}", ""
        except ApiException:
            pass
        try:
            service = await cluster.core.read_namespaced_service(
                name, namespace, _request_timeout=cluster.timeout
            )
        except ApiException:
            continue
        port = service.spec.ports[0].port if service.spec.ports else 8080
        return (
            f"http://{name}.{namespace}.svc:{port}",
            f"cluster-internal; from your machine: "
            f"kubectl -n {namespace} port-forward svc/{name} 8080:{port}",
        )
    return "<webhook base URL>", "no operator Deployment found: pass --webhook-url"


LABEL_WIDTH = 24
SOURCE_FIELDS = {
    "webhookRequests": "Webhook Requests",
    "watchedPath": "Watched Path",
    "watching": "Watching",
    "pendingFiles": "Pending Files",
    "amqpQueue": "AMQP Queue",
    "connected": "Connected",
    "messagesRejected": "Messages Rejected",
    "messagesRequeued": "Messages Requeued",
    "lastPollTime": "Last Poll",
    "lastPollRows": "Last Poll Rows",
}


def _field(out: TextIO, label: str, value: Any, indent: int = 0) -> None:
    shown = value if value not in (None, "", {}) else "<none>"
    out.write(f"{' ' * indent}{label + ':':<{LABEL_WIDTH - indent}}{shown}\n")


async def describe(
    cluster: Cluster,
    name: str,
    *,
    webhook_url: str | None,
    operator_namespace: str | None,
    show_secret: bool,
    body: str | None,
    out: TextIO,
) -> int:
    obj = await cluster.get_trigger(name)
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    now = datetime.now(UTC)
    source = source_of(obj)
    job = spec.get("job") or {}
    _field(out, "Name", meta["name"])
    _field(out, "Namespace", meta.get("namespace"))
    _field(out, "UID", meta.get("uid"))
    _field(out, "Created", f"{meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'), now)} ago)")
    _field(out, "Source", f"{source}: {origin_of(obj)}")
    _field(out, "Target", f"{target_of(obj)} (priority {job.get('priority', 0)})")
    _field(out, "Suspend", str(bool(spec.get("suspend"))).lower())
    out.write("Status:\n")
    _field(out, "Phase", phase_of(obj), 2)
    _field(out, "Running", str(bool(status.get("isRunning"))).lower(), 2)
    _field(
        out, "Observed Generation", f"{status.get('observedGeneration')} (spec: {meta.get('generation')})", 2
    )
    _field(out, "Jobs Created", status.get("jobsCreated", 0), 2)
    _field(out, "Errors", status.get("errors", 0), 2)
    if status.get("lastJobId"):
        _field(out, "Last Job", f"{status['lastJobId']} ({age(status.get('lastJobTime'), now)} ago)", 2)
    _field(out, "Last Error", status.get("lastError"), 2)
    if source == "schedule":
        _field(
            out,
            "Next Schedule",
            f"{status.get('nextScheduleTime')} ({until(status.get('nextScheduleTime'), now)})",
            2,
        )
        _field(out, "Last Schedule", status.get("lastScheduleTime"), 2)
        _field(out, "Missed / Skipped", f"{status.get('missedRuns', 0)} / {status.get('skippedRuns', 0)}", 2)
        last_run = status.get("lastRunNow")
        if last_run:
            _field(out, "Last Run-Now", f"{last_run.get('token')} -> job {last_run.get('jobId')}", 2)
    for key, label in SOURCE_FIELDS.items():
        if key in status:
            value = status[key]
            if isinstance(value, dict):
                value = " ".join(f"{k}={v}" for k, v in sorted(value.items()))
            _field(out, label, value, 2)
    out.write("Conditions:\n")
    conditions = status.get("conditions") or []
    if conditions:
        rows = [
            [
                c.get("type", ""),
                c.get("status", ""),
                c.get("reason", ""),
                age(c.get("lastTransitionTime"), now),
                c.get("message", ""),
            ]
            for c in conditions
        ]
        _indented_table(out, ["Type", "Status", "Reason", "Age", "Message"], rows)
    else:
        out.write("  <none>\n")
    if source == "webhook":
        await _webhook_section(cluster, obj, webhook_url, operator_namespace, show_secret, body, out)
    out.write("Events:")
    events = await cluster.events_for(meta.get("namespace", cluster.namespace), meta["uid"])
    if not events:
        out.write("  <none>\n")
        return 0
    out.write("\n")
    rows = []
    for e in events[-20:]:
        when = e.last_timestamp or e.event_time or e.first_timestamp
        source_name = (e.source.component if e.source else None) or e.reporting_component or ""
        count = f" (x{e.count})" if e.count and e.count > 1 else ""
        rows.append(
            [
                e.type or "",
                e.reason or "",
                age(when.isoformat() if when else None, now) + count,
                source_name,
                e.message or "",
            ]
        )
    _indented_table(out, ["Type", "Reason", "Age", "From", "Message"], rows)
    return 0


async def _webhook_section(
    cluster: Cluster,
    obj: Mapping[str, Any],
    explicit_url: str | None,
    operator_namespace: str | None,
    show_secret: bool,
    body: str | None,
    out: TextIO,
) -> None:
    webhook = obj["spec"]["webhook"]
    namespace = obj["metadata"]["namespace"]
    base, note = await webhook_base(cluster, explicit_url, operator_namespace)
    url = base + (obj.get("status", {}).get("webhookPath") or webhook.get("path", ""))
    auth = webhook.get("auth") or {}
    out.write("Webhook:\n")
    _field(out, "URL", url + (f"  ({note})" if note else ""), 2)
    described = auth.get("type", "none") + (f" ({auth['preset']})" if auth.get("preset") else "")
    ref = auth.get("secretRef")
    if ref:
        described += f", secret {ref['name']} key {ref['key']}"
    _field(out, "Auth", described, 2)
    secret = None
    if show_secret and ref:
        secret = await cluster.secret_value(namespace, ref["name"], ref["key"])
    if body is None:
        body = example_body(webhook, obj["spec"].get("job") or {})
    out.write("  Call it:\n")
    out.write(textwrap.indent(signed_curl(url, namespace, webhook, secret=secret, body=body), "    ") + "\n")


def _indented_table(out: TextIO, headers: list[str], rows: list[list[str]]) -> None:
    import io

    buffer = io.StringIO()
    table(buffer, headers, rows)
    out.write(textwrap.indent(buffer.getvalue(), "  "))
