"""`kubectl portico get`: the `kubectl get jt` table plus what on-call wants at a glance: the next
fire, where jobs go, and the last error."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from portico.kubectl_plugin.cluster import Cluster
from portico.kubectl_plugin.output import age, as_list, document, shorten, table, until

SOURCES = ("schedule", "webhook", "file", "amqp", "databasePoll")
ERROR_WIDTH = 60


def source_of(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    if status.get("source"):
        return str(status["source"])
    spec = obj.get("spec") or {}
    return next((name for name in SOURCES if spec.get(name) is not None), "<unknown>")


def target_of(obj: Mapping[str, Any]) -> str:
    """Where this trigger's jobs go: `queue/job type` for the queue service (the default target),
    `<target>:<job type>` for the others (`kubernetesJob:release.deploy`)."""
    spec = obj.get("spec") or {}
    job = spec.get("job") or {}
    target = next(iter(spec.get("target") or {}), "queueService")
    if target == "queueService":
        return f"{job.get('queue', 'default')}/{job.get('type', '?')}"
    return f"{target}:{job.get('type', '?')}"


def origin_of(obj: Mapping[str, Any]) -> str:
    """What the source listens to: the cron, the webhook path, the directory, the queue, the table."""
    spec = obj.get("spec") or {}
    source = source_of(obj)
    block = spec.get(source) or {}
    if source == "schedule":
        return f"{block.get('cron', '?')} ({block.get('timeZone', 'UTC')})"
    if source in ("webhook", "file"):
        return str(block.get("path", "?"))
    if source == "amqp":
        return str(block.get("queue", "?"))
    if source == "databasePoll":
        return str(block.get("table", "?"))
    return "<none>"


def phase_of(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    return str(status.get("phase") or "Pending")


def next_of(obj: Mapping[str, Any], now: datetime) -> str:
    if source_of(obj) != "schedule":
        return "<none>"
    if (obj.get("spec") or {}).get("suspend"):
        return "<suspended>"
    return until((obj.get("status") or {}).get("nextScheduleTime"), now)


def _count(value: Any) -> str:
    return "0" if value is None else str(value)


def row(obj: Mapping[str, Any], now: datetime, *, wide: bool, all_namespaces: bool) -> list[str]:
    meta, status = obj["metadata"], obj.get("status") or {}
    error = str(status.get("lastError") or "")
    cells = [meta.get("namespace", "")] if all_namespaces else []
    cells += [
        meta["name"],
        source_of(obj),
        phase_of(obj),
        _count(status.get("jobsCreated")),
        age(status.get("lastJobTime"), now),
        next_of(obj, now),
        target_of(obj),
    ]
    if wide:
        cells += [
            str(bool(status.get("isRunning"))).lower(),
            _count(status.get("errors")),
            origin_of(obj),
            str(status.get("lastJobId") or "<none>"),
        ]
    cells += [
        shorten(error, 10_000 if wide else ERROR_WIDTH) or "<none>",
        age(meta.get("creationTimestamp"), now),
    ]
    return cells


def headers(*, wide: bool, all_namespaces: bool) -> list[str]:
    cols = ["NAMESPACE"] if all_namespaces else []
    cols += ["NAME", "SOURCE", "PHASE", "JOBS", "LAST JOB", "NEXT", "TARGET"]
    if wide:
        cols += ["RUNNING", "ERRORS", "LISTENS TO", "LAST JOB ID"]
    return [*cols, "LAST ERROR", "AGE"]


async def get(
    cluster: Cluster,
    names: Sequence[str],
    *,
    output: str | None,
    all_namespaces: bool,
    selector: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    if names:
        objs = [await cluster.get_trigger(name) for name in names]
    else:
        objs = await cluster.list_triggers(all_namespaces=all_namespaces, selector=selector)
    if output in ("json", "yaml"):
        document(out, objs[0] if len(names) == 1 else as_list(objs), output)
        return 0
    if output == "name":
        for obj in objs:
            out.write(f"jobtrigger.triggers.portico.dev/{obj['metadata']['name']}\n")
        return 0
    if not objs:
        where = "any namespace" if all_namespaces else f"{cluster.namespace} namespace"
        err.write(f"No resources found in {where}.\n")
        return 0
    now = datetime.now(UTC)
    wide = output == "wide"
    table(
        out,
        headers(wide=wide, all_namespaces=all_namespaces),
        (row(o, now, wide=wide, all_namespaces=all_namespaces) for o in objs),
    )
    return 0
