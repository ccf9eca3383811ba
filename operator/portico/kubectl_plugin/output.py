"""Printing as kubectl prints: aligned tables with upper-case headers, human durations, and
`-o json|yaml` documents (a `List` for several objects)."""

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml


def table(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        out.write("   ".join(cells).rstrip() + "\n")


def document(out: TextIO, value: Any, fmt: str) -> None:
    if fmt == "json":
        out.write(json.dumps(value, indent=4, sort_keys=False, default=str) + "\n")
    else:
        out.write(yaml.safe_dump(_plain(value), sort_keys=False, allow_unicode=True))


def as_list(items: Sequence[Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(items)}


def _plain(value: Any) -> Any:
    """JSON-shaped data (datetimes as RFC 3339 text), so the YAML is what `-o json` would say."""
    return json.loads(json.dumps(value, default=str))


def parse_time(text: Any) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's short durations: 45s, 3m20s, 5h2m, 3d4h, 2y1d."""
    s = int(abs(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"


def age(text: Any, now: datetime) -> str:
    """`8s` for a past time; `<none>` when unset."""
    moment = parse_time(text)
    return "<none>" if moment is None else human_duration((now - moment).total_seconds())


def until(text: Any, now: datetime) -> str:
    """`in 3h` for a future time, `5s ago` for a past one; `<none>` when unset."""
    moment = parse_time(text)
    if moment is None:
        return "<none>"
    delta = (moment - now).total_seconds()
    return f"in {human_duration(delta)}" if delta >= 0 else f"{human_duration(delta)} ago"


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
