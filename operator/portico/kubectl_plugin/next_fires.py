"""`kubectl portico next`: upcoming fire times, computed with the operator's own schedule model and
timetable, so what the plugin predicts is what the operator does."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import ValidationError

from portico.kubectl_plugin.cluster import Cluster, PluginError
from portico.kubectl_plugin.get import source_of
from portico.kubectl_plugin.output import document, human_duration, table
from portico.operator.resource import format_validation_error
from portico.sources.schedule.cron import ScheduleError
from portico.sources.schedule.spec import ScheduleSpec

MAX_COUNT = 1000


def fire_times(
    schedule: Mapping[str, Any], after: datetime, count: int
) -> tuple[ScheduleSpec, list[datetime]]:
    """The `count` fire times strictly after `after` (UTC instants, before jitter). Raises PluginError
    for a schedule the operator would refuse, with the operator's message."""
    try:
        spec = ScheduleSpec.model_validate(dict(schedule))
        timetable = spec.timetable
        times: list[datetime] = []
        moment = after
        for _ in range(count):
            moment = timetable.next_after(moment)
            times.append(moment)
    except ValidationError as exc:
        raise PluginError("; ".join(format_validation_error(exc, "spec.schedule"))) from None
    except ScheduleError as exc:
        raise PluginError(f"spec.schedule: {exc}") from None
    return spec, times


def _fires_json(spec: ScheduleSpec, times: list[datetime]) -> list[dict[str, str]]:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(spec.time_zone)
    return [{"utc": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "local": t.astimezone(tz).isoformat()} for t in times]


def _local(moment: datetime, time_zone: str) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(time_zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


async def next_fires(
    cluster: Cluster,
    name: str | None,
    *,
    count: int,
    after: datetime | None,
    output: str | None,
    all_namespaces: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    if not 1 <= count <= MAX_COUNT:
        raise PluginError(f"--count must be between 1 and {MAX_COUNT}")
    now = datetime.now(UTC)
    start = after or now
    if name is not None:
        obj = await cluster.get_trigger(name)
        if source_of(obj) != "schedule":
            raise PluginError(f'jobtrigger "{name}" has a {source_of(obj)} source, not a schedule')
        spec, times = fire_times(obj["spec"]["schedule"], start, count)
        if output in ("json", "yaml"):
            document(
                out,
                {
                    "name": name,
                    "namespace": cluster.namespace,
                    **_header(spec),
                    "fires": _fires_json(spec, times),
                },
                output,
            )
            return 0
        if obj["spec"].get("suspend"):
            err.write(f'jobtrigger "{name}" is suspended: these times fire only once it is resumed\n')
        if spec.jitter_seconds:
            err.write(f"each run is delayed by up to {spec.jitter_seconds}s of jitter\n")
        rows = [
            [
                str(i),
                _local(t, spec.time_zone),
                _local(t, "UTC"),
                f"in {human_duration((t - now).total_seconds())}",
            ]
            for i, t in enumerate(times, 1)
        ]
        table(out, ["#", f"TIME ({spec.time_zone})", "TIME (UTC)", "IN"], rows)
        return 0

    objs = [
        o for o in await cluster.list_triggers(all_namespaces=all_namespaces) if source_of(o) == "schedule"
    ]
    found: list[tuple[Mapping[str, Any], ScheduleSpec | None, list[datetime], str]] = []
    for obj in objs:
        try:
            spec, times = fire_times(obj["spec"]["schedule"], start, count)
            found.append((obj, spec, times, ""))
        except PluginError as exc:
            found.append((obj, None, [], str(exc)))
    found.sort(key=lambda f: f[2][0] if f[2] else datetime.max.replace(tzinfo=UTC))
    if output in ("json", "yaml"):
        items = [
            {
                "name": o["metadata"]["name"],
                "namespace": o["metadata"]["namespace"],
                "suspended": bool(o["spec"].get("suspend")),
                **(_header(s) if s else {"error": e}),
                "fires": _fires_json(s, t) if s else [],
            }
            for o, s, t, e in found
        ]
        document(out, {"items": items}, output)
        return 0
    if not found:
        where = "any namespace" if all_namespaces else f"{cluster.namespace} namespace"
        err.write(f"No schedule triggers found in {where}.\n")
        return 0
    rows = []
    for item, item_spec, times, error in found:
        cells = [item["metadata"]["namespace"]] if all_namespaces else []
        cells.append(item["metadata"]["name"])
        if item_spec is None:
            rows.append([*cells, "<invalid>", "", "", error])
            continue
        for t in times:
            state = (
                "suspended"
                if item["spec"].get("suspend")
                else f"in {human_duration((t - now).total_seconds())}"
            )
            rows.append([*cells, _local(t, item_spec.time_zone), _local(t, "UTC"), state, item_spec.cron])
    cols = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME",
        "NEXT (LOCAL)",
        "NEXT (UTC)",
        "IN",
        "SCHEDULE",
    ]
    table(out, cols, rows)
    return 0


def _header(spec: ScheduleSpec) -> dict[str, Any]:
    return {"cron": spec.cron, "timeZone": spec.time_zone, "jitterSeconds": spec.jitter_seconds}
