"""Sharded replicas (`--shards 32`): real operator processes on the real API server split the triggers
evenly, a crash moves only the dead replica's slice, a new replica takes its share, a graceful stop hands
over at once; every scheduled second is enqueued exactly once and a trigger's status has one writer."""

import contextlib
import itertools
import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from portico.operator.sharding.routes import SHARD_LABEL
from portico.operator.sharding.shard_map import shard_of
from portico.testing.control_plane import ControlPlane
from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import (
    Operator,
    OperatorFactory,
    list_jobs,
    post_json,
    status_of,
    trigger_manifest,
    wait_for,
)

SHARDS = 32
LEASE_SECONDS = 5
SHARDED = (
    "--shards", str(SHARDS),
    "--lease-duration", str(LEASE_SECONDS), "--renew-deadline", "4", "--retry-period", "1",
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
    kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=180,
    )


@dataclass
class ShardLeases:
    """The shard Leases of the test's namespace, read straight from the API server (polled often)."""

    control_plane: ControlPlane
    namespace: str

    def read(self) -> dict[int, dict[str, Any]]:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        prefix = "portico-operator-shard-"
        return {
            int(lease["metadata"]["name"][len(prefix) :]): lease["spec"]
            for lease in self.control_plane.request("GET", path)["items"]
            if lease["metadata"]["name"].startswith(prefix)
        }

    def holders(self) -> dict[int, str | None]:
        return {shard: spec.get("holderIdentity") for shard, spec in self.read().items()}

    def shares(self) -> Counter[str | None]:
        return Counter(self.holders().values())

    def acquired_at(self, shard: int) -> float:
        return datetime.fromisoformat(self.read()[shard]["acquireTime"]).timestamp()

    seen: dict[int, set[str]] = field(default_factory=dict)
    """Every replica seen holding each shard since `start_sampling()`."""
    stop: threading.Event = field(default_factory=threading.Event)

    def start_sampling(self) -> None:
        def sample() -> None:
            while not self.stop.is_set():
                with contextlib.suppress(OSError):
                    for shard, holder in self.holders().items():
                        if holder:
                            self.seen.setdefault(shard, set()).add(holder)
                self.stop.wait(0.1)

        threading.Thread(target=sample, daemon=True).start()


@pytest.fixture
def leases(control_plane: ControlPlane, namespace: str) -> Iterator[ShardLeases]:
    shard_leases = ShardLeases(control_plane, namespace)
    yield shard_leases
    shard_leases.stop.set()


def assert_one_writer_per_owner(kubectl: Kubectl, leases: ShardLeases, within: float = 20) -> None:
    """A trigger's status is written only by replicas that held its shard, and by exactly that one
    where a single replica held the shard all along (waiting for its first write)."""
    deadline = time.monotonic() + within
    while True:
        bad = []
        for obj in triggers(kubectl):
            owners = leases.seen.get(shard_of(obj["metadata"]["uid"], SHARDS), set())
            writers = status_writers(obj)
            if not writers <= owners or (len(owners) == 1 and writers != owners):
                bad.append((obj["metadata"]["name"], sorted(writers), sorted(owners)))
        if not bad:
            return
        assert time.monotonic() < deadline, f"status written by replicas other than the owner: {bad[:5]}"
        time.sleep(0.5)


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


def scrape(op: Operator) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


LOG_LINE = re.compile(r"^(\S+ \S+) INFO\s+portico\.operator\.lifecycle: trigger \S+/(\S+) started", re.M)


def started_at(operators: Iterable[Operator]) -> dict[str, list[float]]:
    """When each trigger was started, by any of these replicas (from their logs' local timestamps)."""
    out: dict[str, list[float]] = {}
    for op in operators:
        for stamp, name in LOG_LINE.findall(op.log()):
            moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.setdefault(name, []).append(moment)
    return out


def watched(op: Operator) -> float:
    return scrape(op)[("portico_jobtriggers_watched", ())]


def each_watches_only_its_own(replicas: dict[str, Operator], kubectl: Kubectl, leases: ShardLeases) -> bool:
    """Every trigger carries its shard's label, and each replica's watch shows exactly the triggers
    of the shards it holds (the API server filters the rest out)."""
    by_shard = leases.holders()
    items = triggers(kubectl)
    labels_right = all(
        (o["metadata"].get("labels") or {}).get(SHARD_LABEL) == str(shard_of(o["metadata"]["uid"], SHARDS))
        for o in items
    )
    owned = Counter(owner_of(o, by_shard) for o in items)
    return labels_right and all(watched(op) == owned[name] for name, op in replicas.items())


def start_replicas(start_operator: OperatorFactory, names: list[str]) -> dict[str, Operator]:
    return {name: start_operator("--id", name, *SHARDED) for name in names}


def test_three_replicas_split_evenly_a_crash_moves_its_slice_a_join_takes_a_share_a_stop_hands_over(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    leases: ShardLeases,
) -> None:
    replicas = start_replicas(start_operator, ["replica-a", "replica-b", "replica-c"])
    wait_for(
        lambda: sorted(leases.shares().values()) == [10, 11, 11] and None not in leases.shares(),
        timeout=30,
        message="11/11/10 shards",
    )
    leases.start_sampling()
    fleet(kubectl)
    wait_for(lambda: all_running(kubectl), timeout=90, interval=1, message="300 triggers Running")

    by_shard = leases.holders()
    items = triggers(kubectl)
    per_replica = Counter(owner_of(o, by_shard) for o in items)
    assert set(per_replica) == set(replicas)
    assert all(70 <= n <= 130 for n in per_replica.values()), per_replica
    assert_one_writer_per_owner(kubectl, leases)
    for name, op in replicas.items():
        metrics = scrape(op)
        held = sum(1 for who in by_shard.values() if who == name)
        assert metrics[("portico_shards_held", ())] == held and metrics[("portico_leader", ())] == 1
        assert metrics[("portico_shard_members", ())] == 3
        running = sum(v for (metric, _), v in metrics.items() if metric == "portico_trigger_running")
        assert running == per_replica[name], "each replica counts the metrics of its own triggers"
    wait_for(lambda: each_watches_only_its_own(replicas, kubectl, leases), timeout=20, message="own watches")

    wait_for(lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= 3 * TICKERS, timeout=30)
    dead = "replica-c"
    dead_shards = {s for s, who in by_shard.items() if who == dead}
    moved = {o["metadata"]["name"] for o in items if shard_of(o["metadata"]["uid"], SHARDS) in dead_shards}
    replicas[dead].process.stop(signal.SIGKILL)
    killed = time.time()
    wait_for(
        lambda: all(leases.holders()[s] not in (dead, None) for s in dead_shards),
        timeout=LEASE_SECONDS + 5,
        interval=0.1,
        message="the dead replica's shards taken over",
    )
    took = max(leases.acquired_at(s) for s in dead_shards) - killed
    assert took <= LEASE_SECONDS + 2, f"taken over {took:.1f}s after the crash"
    after = leases.holders()
    assert all(after[s] == who for s, who in by_shard.items() if who != dead), "only its shards moved"

    time.sleep(4)
    ticks = ticks_exactly_once(queue_service_process.url)
    starts = started_at(replicas.values())
    for name in [n for n in moved if n.startswith("tick-")]:
        restarted = min((t for t in starts.get(name, []) if t > killed), default=float("inf"))
        assert restarted - killed <= LEASE_SECONDS + 2, (
            f"{name} Running again {restarted - killed:.1f}s after"
        )
        assert ticks[name][-1] >= datetime.fromtimestamp(killed + 2).astimezone(), f"{name} fires again"

    assert_one_writer_per_owner(kubectl, leases)

    # A new replica takes only its share; then a graceful stop hands over at once.
    before = leases.holders()

    replicas["replica-d"] = start_operator("--id", "replica-d", *SHARDED)
    joined = time.monotonic()
    wait_for(
        lambda: sorted(leases.shares().values()) == [10, 11, 11] and None not in leases.shares(),
        timeout=30,
        interval=0.2,
        message="rebalanced to 11/11/10",
    )
    assert time.monotonic() - joined <= 30
    rebalanced = leases.holders()
    taken = {s for s in rebalanced if rebalanced[s] != before[s]}
    assert len(taken) == 10 and all(rebalanced[s] == "replica-d" for s in taken), "only the new share moved"
    time.sleep(4)
    ticks_exactly_once(queue_service_process.url)
    alive = {name: op for name, op in replicas.items() if name != dead}
    wait_for(lambda: each_watches_only_its_own(alive, kubectl, leases), timeout=20, message="own watches")

    leaving = "replica-a"
    leaving_shards = {s for s, who in rebalanced.items() if who == leaving}
    stopped = time.time()
    replicas[leaving].process.stop(signal.SIGTERM)
    wait_for(
        lambda: all(leases.holders()[s] not in (leaving, None) for s in leaving_shards),
        timeout=10,
        interval=0.05,
        message="graceful hand-over",
    )
    took = max(leases.acquired_at(s) for s in leaving_shards) - stopped
    assert took < 3, f"handed over {took:.1f}s after SIGTERM"
    assert sorted(leases.shares().values()) == [16, 16]
    time.sleep(4)
    ticks_exactly_once(queue_service_process.url)
    assert_one_writer_per_owner(kubectl, leases)
    alive = {name: op for name, op in alive.items() if name != leaving}
    wait_for(lambda: each_watches_only_its_own(alive, kubectl, leases), timeout=20, message="own watches")


def label_of(kubectl: Kubectl, name: str) -> str | None:
    labels = kubectl.json("get", "jobtrigger", name)["metadata"].get("labels") or {}
    return labels.get(SHARD_LABEL)


def test_the_shard_label_follows_the_source_and_is_written_back_when_changed_by_hand(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    leases: ShardLeases,
) -> None:
    """A webhook is served by every replica (label `all`); turned into a schedule it moves to its
    shard's watch and runs on the owner alone; a label removed or mistyped by hand is written back."""
    replicas = start_replicas(start_operator, ["replica-a", "replica-b"])
    wait_for(lambda: sorted(leases.shares().values()) == [16, 16], timeout=30, message="16/16 shards")
    kubectl.apply(trigger_manifest("hook", {"webhook": {"auth": {"type": "none"}}}, job={"type": "e2e.hook"}))
    path = wait_for(lambda: status_of(kubectl, "hook").get("webhookPath"), message="webhook path")
    for op in replicas.values():
        wait_for(
            lambda op=op: post_json(op.webhook_url + path, {"job_type": "e2e.hook", "payload": {}}) == 202,
            message="served",
        )
    uid = kubectl.json("get", "jobtrigger", "hook")["metadata"]["uid"]
    shard = str(shard_of(uid, SHARDS))
    owner = leases.holders()[int(shard)]
    other = next(name for name in replicas if name != owner)
    assert label_of(kubectl, "hook") == "all"
    wait_for(lambda: all(watched(op) == 1 for op in replicas.values()), timeout=10, message="both watch it")

    schedule = {"cron": "@every 1s", "catchUp": "All", "startingDeadlineSeconds": 60}
    kubectl(
        "patch", "jobtrigger", "hook", "--type=merge",
        "-p", json.dumps({"spec": {"webhook": None, "schedule": schedule, "job": {"queue": "ticks"}}}),
    )  # fmt: skip
    wait_for(lambda: label_of(kubectl, "hook") == shard, timeout=10, message="its shard's label")
    wait_for(lambda: post_json(replicas[other].webhook_url + path, {}) == 404, timeout=10, message="404")
    wait_for(
        lambda: watched(replicas[owner]) == 1 and watched(replicas[other]) == 0,
        timeout=10,
        message="only the owner watches it",
    )
    wait_for(lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= 2, timeout=10)

    wrong = next(s for s in range(SHARDS) if leases.holders()[s] == other)
    for change in (f"{SHARD_LABEL}-", f"{SHARD_LABEL}=not-a-shard", f"{SHARD_LABEL}={wrong}"):
        kubectl("label", "--overwrite", "jobtrigger", "hook", change)
        wait_for(
            lambda: label_of(kubectl, "hook") == shard,
            timeout=10,
            message=f"label written back after {change}",
        )
    wait_for(
        lambda: watched(replicas[owner]) == 1 and watched(replicas[other]) == 0,
        timeout=10,
        message="only the owner watches it again",
    )
    time.sleep(3)
    seconds = sorted(
        datetime.fromisoformat(j["metadata"]["scheduled_time"])
        for j in list_jobs(queue_service_process.url, queue="ticks")
    )
    assert len(seconds) == len(set(seconds)), "no second enqueued twice"
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(seconds)), "none missing"
    assert seconds[-1] >= datetime.now().astimezone() - timedelta(seconds=3), "still firing"

    kubectl("delete", "jobtrigger", "hook", "--wait=true", timeout=30)
    wait_for(lambda: all(watched(op) == 0 for op in replicas.values()), timeout=10, message="gone everywhere")
