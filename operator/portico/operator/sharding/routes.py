"""Which watch hands a JobTrigger to which replica: the shard label.

With sharding, the shard's owner writes `triggers.portico.dev/shard` on each trigger together with its
finalizer: the shard's number for a source one replica runs (schedule, file, AMQP, database poll), `all`
for a source every replica serves (webhooks). Each replica then watches, filtered by the API server:

- `all`: the triggers every replica serves;
- one watch per shard it holds;
- the triggers with no valid label yet (new ones, or ones whose label was removed or mistyped), so that
  their owner can label them, or the replica that takes their shard can start them.

A replica so receives the events of what it runs, not of every trigger: its CPU and memory follow its
share. A label is a pure function of the UID and the source, so every replica computes the same one.

Pure functions; the watch and the registry apply them.
"""

from collections.abc import Mapping
from typing import Final

from portico.operator.resource import GROUP

SHARD_LABEL: Final = f"{GROUP}/shard"
EVERYWHERE: Final = "all"
UNROUTED: Final = "unrouted"
"""The route of a trigger without a valid shard label."""

Route = int | str
"""A shard number, `EVERYWHERE` or `UNROUTED`."""


def label_value(shard: int, *, everywhere: bool) -> str:
    """The label a trigger of `shard` should carry: `all` when every replica serves its source."""
    return EVERYWHERE if everywhere else str(shard)


def route_of(labels: Mapping[str, str], shards: int) -> Route:
    """The watch a trigger's labels put it in; a value that is not `all` or a shard number below
    `shards`, written canonically, is unrouted (the owner writes the right one)."""
    value = labels.get(SHARD_LABEL)
    if value == EVERYWHERE:
        return EVERYWHERE
    if value is not None and value.isdigit() and str(int(value)) == value and int(value) < shards:
        return int(value)
    return UNROUTED


def selector(route: Route | frozenset[int], shards: int) -> str:
    """The label selector of a watch: of one route, or of a set of shards (one watch for the shards a
    replica took together). The unrouted one selects what no other route selects, labels without the
    key included (`notin` matches those)."""
    if isinstance(route, frozenset):
        return f"{SHARD_LABEL} in ({','.join(str(s) for s in sorted(route))})"
    if route == UNROUTED:
        values = ",".join([EVERYWHERE, *(str(s) for s in range(shards))])
        return f"{SHARD_LABEL} notin ({values})"
    return f"{SHARD_LABEL}={route}"
