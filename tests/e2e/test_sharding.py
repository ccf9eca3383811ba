"""Sharded replicas (`--shards 32`): real operator processes on the real API server split the triggers
evenly, a crash moves only the dead replica's slice, a new replica takes its share, a graceful stop hands
over at once; every scheduled second is enqueued exactly once and a trigger's status has one writer."""

import itertools
import signal
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from portico.operator.sharding.shard_map import shard_of
from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import Operator, OperatorFactory, list_jobs, wait_for

SHARDS = 32
LEASE_SECONDS = 4
SHARDED = (
    "--shards", str(SHARDS),
    "--lease-duration", str(LEASE_SECONDS), "--renew-deadline", "3", "--retry-period", "1",
    "--status-interval", "2",
)  # fmt: skip
IDLE, TICKERS = 285, 15


def fleet(kubectl: Kubectl) -> None:
    """300 schedule triggers: 285 idle (far-future cron) and 15 firing every second, in one apply."""
    items: list[dict[str, Any]] = []
    for i in range(IDLE + TICKERS):
        ticking = i < TICKERS
        items.append(
            {
                "apiVersion": "triggers.portico.dev/v1alpha1",
                "kind": "JobTrigger",
                "metadata": {"name": f"tick-{i:03d}" if ticking else f"idle-{i:03d}"},
                "spec": {
                    "job": {"type": "e2e.tick", "queue": "ticks" if ticking else "idle"},
                    "schedule": (
                        {"cron": "@every 1s", "catchUp": "All", "startingDeadlineSeconds": 60}
                        if ticking
                        else {"cron": "0 0 1 1 *"}
                    ),
                },
            }
        )
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": items})


def holders(kubectl: Kubectl) -> dict[int, str | None]:
    leases = kubectl.json("get", "leases")["items"]
    prefix = "portico-operator-shard-"
    return {
        int(lease["metadata"]["name"][len(prefix) :]): lease["spec"].get("holderIdentity")
        for lease in leases
        if lease["metadata"]["name"].startswith(prefix)
    }


def shares(kubectl: Kubectl) -> Counter[str | None]:
    return Counter(holders(kubectl).values())


def triggers(kubectl: Kubectl) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", "jobtriggers", "--show-managed-fields")["items"]
    return items


def status_writers(obj: dict[str, Any]) -> set[str]:
    """The replicas whose status writes own fields of this object's status."""
    return {
        entry["manager"].removeprefix("portico-operator/")
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("subresource") == "status" and entry["manager"].startswith("portico-operator/")
    }


def misattributed(
    kubectl: Kubectl, by_shard: dict[int, str | None]
) -> list[tuple[str, set[str], str | None]]:
    """Triggers whose status was written by any replica but their shard's owner."""
    return [
        (o["metadata"]["name"], status_writers(o), owner_of(o, by_shard))
        for o in triggers(kubectl)
        if status_writers(o) != {owner_of(o, by_shard)}
    ]


def all_running(kubectl: Kubectl) -> bool:
    items = triggers(kubectl)
    return len(items) == IDLE + TICKERS and all((o.get("status") or {}).get("isRunning") for o in items)


def owner_of(obj: dict[str, Any], by_shard: dict[int, str | None]) -> str | None:
    return by_shard[shard_of(obj["metadata"]["uid"], SHARDS)]


def ticks_exactly_once(queue_url: str) -> dict[str, list[datetime]]:
    """Per ticker: its scheduled seconds, each enqueued once, none missing between the first and last."""
    by_trigger: dict[str, list[datetime]] = {}
    for job in list_jobs(queue_url, queue="ticks"):
        meta = job["metadata"]
        by_trigger.setdefault(meta["trigger.name"], []).append(datetime.fromisoformat(meta["scheduled_time"]))
    assert len(by_trigger) == TICKERS
    keys = [j["idempotency_key"] for j in list_jobs(queue_url, queue="ticks")]
    assert len(keys) == len(set(keys)), "one job per idempotency key"
    for name, times in by_trigger.items():
        times.sort()
        assert len(times) == len(set(times)), f"{name}: a scheduled second enqueued twice"
        gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a != timedelta(seconds=1)]
        assert gaps == [], f"{name}: scheduled seconds missing between {gaps}"
    return by_trigger


def start_replicas(start_operator: OperatorFactory, names: list[str]) -> dict[str, Operator]:
    return {name: start_operator("--id", name, *SHARDED) for name in names}


def test_three_replicas_split_evenly_and_a_crash_moves_only_its_slice(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    replicas = start_replicas(start_operator, ["replica-a", "replica-b", "replica-c"])
    wait_for(
        lambda: sorted(shares(kubectl).values()) == [10, 11, 11] and None not in shares(kubectl),
        timeout=30,
        message="11/11/10 shards",
    )
    t0 = time.monotonic()
    fleet(kubectl)
    print(f"applied in {time.monotonic() - t0:.1f}s")
    wait_for(lambda: all_running(kubectl), timeout=90, interval=1, message="300 triggers Running")
    print(f"running in {time.monotonic() - t0:.1f}s")

    by_shard = holders(kubectl)
    items = triggers(kubectl)
    per_replica = Counter(owner_of(o, by_shard) for o in items)
    assert set(per_replica) == set(replicas)
    assert all(70 <= n <= 130 for n in per_replica.values()), per_replica
    deadline = time.monotonic() + 20
    while bad := misattributed(kubectl, by_shard):
        assert time.monotonic() < deadline, f"status not written by the owner alone: {bad[:5]}"
        time.sleep(0.5)

    wait_for(lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= 3 * TICKERS, timeout=30)
    dead = "replica-c"
    dead_shards = {s for s, who in by_shard.items() if who == dead}
    moved = {o["metadata"]["name"] for o in items if shard_of(o["metadata"]["uid"], SHARDS) in dead_shards}
    replicas[dead].process.stop(signal.SIGKILL)
    killed = time.time()
    wait_for(
        lambda: all(holders(kubectl)[s] not in (dead, None) for s in dead_shards),
        timeout=LEASE_SECONDS + 5,
        interval=0.1,
        message="the dead replica's shards taken over",
    )
    assert time.time() - killed <= LEASE_SECONDS + 2
    after = holders(kubectl)
    assert all(after[s] == who for s, who in by_shard.items() if who != dead), "only its shards moved"

    time.sleep(4)
    ticks = ticks_exactly_once(queue_service_process.url)
    created_after_kill: dict[str, list[float]] = {}
    for job in list_jobs(queue_service_process.url, queue="ticks"):
        created = datetime.fromisoformat(job["created_at"]).timestamp()
        if created > killed:
            created_after_kill.setdefault(job["metadata"]["trigger.name"], []).append(created)
    moved_tickers = [n for n in moved if n.startswith("tick-")]
    for name in moved_tickers:
        resumed = min(created_after_kill[name])
        assert resumed - killed <= LEASE_SECONDS + 2, f"{name} ran again after {resumed - killed:.1f}s"
        assert ticks[name][-1] >= datetime.fromtimestamp(killed + 2).astimezone()

    by_shard = holders(kubectl)
    for obj in triggers(kubectl):
        writers = status_writers(obj)
        if obj["metadata"]["name"] in moved:
            assert writers <= {dead, owner_of(obj, by_shard)}, (obj["metadata"]["name"], writers)
        else:
            assert writers == {owner_of(obj, by_shard)}, (obj["metadata"]["name"], writers)


def test_a_new_replica_takes_its_share_and_a_graceful_stop_hands_over_at_once(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    replicas = start_replicas(start_operator, ["replica-a", "replica-b"])
    wait_for(lambda: shares(kubectl) == {"replica-a": 16, "replica-b": 16}, timeout=30, message="16/16")
    fleet(kubectl)
    wait_for(lambda: all_running(kubectl), timeout=90, interval=1, message="300 triggers Running")
    wait_for(lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= 3 * TICKERS, timeout=30)
    before = holders(kubectl)

    replicas["replica-c"] = start_operator("--id", "replica-c", *SHARDED)
    joined = time.monotonic()
    wait_for(
        lambda: sorted(shares(kubectl).values()) == [10, 11, 11] and None not in shares(kubectl),
        timeout=30,
        interval=0.2,
        message="rebalanced to 11/11/10",
    )
    assert time.monotonic() - joined <= 30
    rebalanced = holders(kubectl)
    moved = {s for s in rebalanced if rebalanced[s] != before[s]}
    assert len(moved) == 10 and all(rebalanced[s] == "replica-c" for s in moved), "only the new share moved"
    time.sleep(4)
    ticks_exactly_once(queue_service_process.url)

    leaving = "replica-a"
    leaving_shards = {s for s, who in rebalanced.items() if who == leaving}
    replicas[leaving].process.stop(signal.SIGTERM)  # returns once the process exited
    stopped = time.monotonic()
    wait_for(
        lambda: all(holders(kubectl)[s] not in (leaving, None) for s in leaving_shards),
        timeout=10,
        interval=0.05,
        message="graceful hand-over",
    )
    assert time.monotonic() - stopped < 3
    assert sorted(shares(kubectl).values()) == [16, 16]
    time.sleep(4)
    ticks_exactly_once(queue_service_process.url)
    final = holders(kubectl)
    for obj in triggers(kubectl):
        shard = shard_of(obj["metadata"]["uid"], SHARDS)
        owners = {before[shard], rebalanced[shard], final[shard]}
        assert status_writers(obj) <= owners, (obj["metadata"]["name"], status_writers(obj), owners)
