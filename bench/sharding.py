"""Sharding benchmark: N schedule triggers (far-future cron) on 1, 2 and 4 sharded operator replicas
(`--shards 32`), then a replica crash.

Per replica count, in the same run: seconds from the first create until every trigger is Running, and
the CPU seconds each process (API server, etcd, each replica, this client) spent meanwhile; each
replica's peak RSS, its RSS once the probes have run (settled), its RSS before any trigger existed, and
its RSS once `--warm-up` triggers came and went (the fixed baseline: connection pools and buffers a
replica keeps whatever its share); fire lateness of `--probes` every-second schedules added once all N are
registered, end to end (queue service's creation time minus the scheduled second: p50/p99) and the
triggers' own (due time to job handed to the creator, from the replicas' lateness histograms: the
share within 10 ms and the bucket bound that holds p99). Then, with the most replicas, one replica is
killed (SIGKILL): the seconds until its shards are held again (from the Leases' acquireTime) and until
its triggers run again (the first job the queue service created for each of its probes after the
kill: the catch-up of the missed seconds), and over the probes' scheduled seconds the duplicates (the
same second enqueued twice) and lost runs (a second never enqueued). `--replica-cpus C` caps every
replica at C CPUs in a control group of its own, as if each had a node; the control plane and the
queue service share the rest.

Goals, as ratios of the same run: 2 replicas reach Running in <= 0.75x the time of one; each replica's
RSS <= (single-process RSS - its baseline) / N + its baseline; lateness p99 <= 10 ms; the crash moves
only the dead replica's shards, which run again within the lease duration + 2 s; 0 duplicates, 0 lost
runs. One JSON line per figure.

    python bench/sharding.py [--count 20000] [--replicas 1 2 4] [--replica-cpus 0.25]
"""

import argparse
import asyncio
import contextlib
import json
import math
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from portico.operator.sharding.shard_map import shard_of
from portico.testing.control_plane import ControlPlane, find_binaries
from portico.testing.fleet import (
    create_all,
    created_at,
    delete_all,
    install_crds,
    lateness_ms,
    list_jobs,
    peak_rss_mb,
    percentile,
    rss_mb,
    schedule_manifest,
    scheduled_at,
    wait_all_running,
)
from portico.testing.processes import (
    cpu_limited,
    cpu_seconds,
    die_with_parent,
    free_port,
    operator_command,
    running_queue_service,
)

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 32


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": "sharding", "metric": metric, "value": round(value, 3), **extra}), flush=True)


def probe_manifest(i: int) -> dict[str, Any]:
    body = schedule_manifest(f"probe{i:02d}", "@every 1s", queue="probe")
    body["spec"]["schedule"].update({"catchUp": "All", "startingDeadlineSeconds": 120})
    return body


class Fleet:
    """`replicas` sharded operator processes watching one namespace."""

    def __init__(
        self, cp: ControlPlane, queue_url: str, namespace: str, args: argparse.Namespace, workdir: Path
    ):
        self.cp, self.queue_url, self.namespace, self.args, self.workdir = (
            cp,
            queue_url,
            namespace,
            args,
            workdir,
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}

    def start(self, replicas: int) -> None:
        a = self.args
        for i in range(replicas):
            name = f"replica-{i}"
            self.metrics_ports[name] = free_port()
            self.procs[name] = subprocess.Popen(
                operator_command(
                    kubeconfig=self.cp.kubeconfig,
                    metrics_port=self.metrics_ports[name],
                    queue_url=self.queue_url,
                    namespaces=(self.namespace,),
                    log_level="WARNING",
                    extra=(
                        "--id", name, "--shards", str(SHARDS),
                        "--lease-duration", str(a.lease_duration), "--renew-deadline", str(a.renew_deadline),
                        "--retry-period", str(a.retry_period), "--status-interval", "2",
                    ),
                ),
                stdout=open(self.workdir / f"{self.namespace}-{name}.log", "wb"),
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )  # fmt: skip

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()

    def fire_lateness(self, prefix: str) -> dict[float, float]:
        """The schedule triggers' own fire lateness (due time to job handed to the creator), summed over
        the replicas' `portico_schedule_fire_lateness_seconds` histograms of triggers named `prefix*`:
        cumulative count by bucket bound."""
        buckets: dict[float, float] = {}
        for name, port in self.metrics_ports.items():
            if self.procs[name].poll() is not None:
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
                text = response.read().decode()
            for line in text.splitlines():
                if not line.startswith("portico_schedule_fire_lateness_seconds_bucket{"):
                    continue
                labels, value = line.rsplit(" ", 1)
                if f'trigger="{prefix}' not in labels:
                    continue
                bound = float(labels.split('le="', 1)[1].split('"', 1)[0])
                buckets[bound] = buckets.get(bound, 0.0) + float(value)
        return dict(sorted(buckets.items()))

    def leases(self) -> dict[int, dict[str, Any]]:
        prefix = "portico-operator-shard-"
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        return {
            int(item["metadata"]["name"][len(prefix) :]): item["spec"]
            for item in self.cp.request("GET", path)["items"]
            if item["metadata"]["name"].startswith(prefix)
        }

    def shares(self) -> Counter[str]:
        return Counter(spec.get("holderIdentity") or "" for spec in self.leases().values())

    async def settled(self, timeout: float) -> None:
        even = {SHARDS // len(self.procs), -(-SHARDS // len(self.procs))}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shares = self.shares()
            complete = sum(shares.values()) == SHARDS and set(shares) == set(self.procs)
            if complete and set(shares.values()) <= even:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"shards not settled: {self.shares()}")


def exactly_once(jobs: list[dict[str, Any]], since: float, until: float) -> tuple[int, int, int]:
    """Duplicates, lost runs and expected runs over the probes' scheduled seconds in [since, until]."""
    by_probe: dict[str, list[float]] = {}
    for job in jobs:
        at = scheduled_at(job)
        if since <= at <= until:
            by_probe.setdefault(job["metadata"]["trigger.name"], []).append(at)
    duplicates = lost = expected = 0
    for times in by_probe.values():
        distinct = set(times)
        duplicates += len(times) - len(distinct)
        slots = math.floor(until) - math.ceil(since) + 1
        expected += slots
        lost += slots - len(distinct)
    return duplicates, lost, expected


def cpu_split(cp: ControlPlane, fleet: Fleet) -> dict[str, float]:
    """CPU seconds used so far by the control plane's processes, each replica and this client."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    split = {name: cpu_seconds(proc.pid) for name, proc in cp.processes.items()}
    split |= {name: cpu_seconds(proc.pid) for name, proc in fleet.procs.items()}
    return split | {"client": usage.ru_utime + usage.ru_stime}


async def one_size(
    custom: client.CustomObjectsApi,
    cp: ControlPlane,
    queue_url: str,
    replicas: int,
    args: argparse.Namespace,
    workdir: Path,
    crash: bool,
) -> dict[str, Any]:
    namespace = f"bench-shards-{replicas}"
    cp.ensure_namespace(namespace)
    fleet = Fleet(cp, queue_url, namespace, args, workdir)
    fleet.start(replicas)
    out: dict[str, Any] = {}
    limit = (
        cpu_limited({n: p.pid for n, p in fleet.procs.items()}, args.replica_cpus)
        if args.replica_cpus
        else contextlib.nullcontext()
    )
    try:
        with limit:
            await fleet.settled(120)
            out["baseline_mb"] = {n: rss_mb(p.pid) for n, p in fleet.procs.items()}
            if args.warm_up:
                out["warm_baseline_mb"] = await warm_baseline(custom, namespace, fleet, args)
            cpu0 = cpu_split(cp, fleet)
            t0 = time.monotonic()
            await create_all(custom, namespace, [schedule_manifest(f"t{i:05d}") for i in range(args.count)])
            await wait_all_running(custom, namespace, args.count, args.timeout)
            out["seconds"] = time.monotonic() - t0
            out["cpu"] = {k: v - cpu0[k] for k, v in cpu_split(cp, fleet).items()}
            out["peak_rss_mb"] = {n: peak_rss_mb(p.pid) for n, p in fleet.procs.items()}
            await create_all(custom, namespace, [probe_manifest(i) for i in range(args.probes)])
            await wait_all_running(custom, namespace, args.count + args.probes, args.timeout)
            start = time.time()
            await asyncio.sleep(args.lateness_seconds)
            jobs = [
                j
                for j in list_jobs(queue_url, queue="probe")
                if j["metadata"]["trigger.namespace"] == namespace
            ]
            samples = lateness_ms([j for j in jobs if scheduled_at(j) >= start + 1])
            out["lateness"] = (percentile(samples, 50), percentile(samples, 99), len(samples))
            out["trigger_lateness"] = fleet.fire_lateness("probe")
            out["rss_mb"] = {n: rss_mb(p.pid) for n, p in fleet.procs.items()}
            if crash:
                out["crash"] = await crash_one(fleet, queue_url, namespace, args, start + 1)
    finally:
        fleet.stop()
    return out


async def warm_baseline(
    custom: client.CustomObjectsApi, namespace: str, fleet: Fleet, args: argparse.Namespace
) -> dict[str, float]:
    """Each replica's RSS once it has run `--warm-up` triggers and they are gone: what it keeps whatever
    its share (connection pools filled, buffers grown), unlike its RSS before any trigger existed."""
    await create_all(custom, namespace, [schedule_manifest(f"w{i:04d}") for i in range(args.warm_up)])
    await wait_all_running(custom, namespace, args.warm_up, args.timeout)
    await delete_all(custom, namespace, args.timeout)
    await asyncio.sleep(5)
    return {n: rss_mb(p.pid) for n, p in fleet.procs.items()}


async def crash_one(
    fleet: Fleet, queue_url: str, namespace: str, args: argparse.Namespace, since: float
) -> dict[str, Any]:
    before = {s: spec.get("holderIdentity") for s, spec in fleet.leases().items()}
    dead = sorted(fleet.procs)[-1]
    dead_shards = {s for s, who in before.items() if who == dead}
    fleet.procs[dead].send_signal(signal.SIGKILL)
    killed = time.time()
    deadline = time.monotonic() + args.lease_duration + 60
    while time.monotonic() < deadline:
        leases = fleet.leases()
        if all(leases[s].get("holderIdentity") not in (dead, None) for s in dead_shards):
            break
        await asyncio.sleep(0.2)
    leases = fleet.leases()
    moved_back = (
        max(datetime.fromisoformat(leases[s]["acquireTime"]).timestamp() for s in dead_shards) - killed
    )
    others_moved = sum(
        1 for s, who in before.items() if who != dead and leases[s].get("holderIdentity") != who
    )
    await asyncio.sleep(args.lease_duration + 10)
    until = time.time() - 3
    jobs = [j for j in list_jobs(queue_url, queue="probe") if j["metadata"]["trigger.namespace"] == namespace]
    duplicates, lost, expected = exactly_once(jobs, since, until)
    probes_on_dead = sum(
        1 for j in {j["metadata"]["trigger.uid"] for j in jobs} if shard_of(j, SHARDS) in dead_shards
    )
    resumed: dict[str, float] = {}
    for job in jobs:
        uid, made = job["metadata"]["trigger.uid"], created_at(job)
        if shard_of(uid, SHARDS) in dead_shards and made > killed:
            resumed[uid] = min(made, resumed.get(uid, math.inf))
    return {
        "seconds": moved_back,
        "run_again": max(resumed.values()) - killed if resumed else math.nan,
        "dead_shards": len(dead_shards),
        "others_moved": others_moved,
        "duplicates": duplicates,
        "lost": lost,
        "expected": expected,
        "probes_on_dead": probes_on_dead,
    }


def emit_trigger_lateness(buckets: dict[float, float], **n: Any) -> None:
    """From the replicas' histograms: the share of fires dispatched within 10 ms of their due time, and
    the smallest bucket bound that holds 99 % of them (p99 is at most that)."""
    total = buckets.get(math.inf, 0.0)
    if not total:
        return
    within = buckets.get(0.01, 0.0) / total
    p99_bound = next(b for b, count in buckets.items() if count >= 0.99 * total)
    emit("trigger_fire_lateness_share_within_10ms", within, fires=int(total), **n)
    emit("trigger_fire_lateness_p99_at_most_ms", p99_bound * 1000, goal_ms=10, **n)


async def run(cp: ControlPlane, args: argparse.Namespace, workdir: Path) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    results: dict[int, dict[str, Any]] = {}
    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)
        with running_queue_service(workdir / "q.db") as queue_url:
            for replicas in args.replicas:
                crash = replicas == max(args.replicas) and replicas > 1
                r = results[replicas] = await one_size(custom, cp, queue_url, replicas, args, workdir, crash)
                n = {"replicas": replicas, "count": args.count}
                emit("seconds_to_all_running", r["seconds"], **n)
                for name, used in sorted(r["cpu"].items()):
                    emit("cpu_seconds_until_all_running", used, process=name, **n)
                for name, peak in sorted(r["peak_rss_mb"].items()):
                    base = round(r["baseline_mb"][name], 1)
                    warm = {"warm_baseline_mb": round(w[name], 1)} if (w := r.get("warm_baseline_mb")) else {}
                    emit("replica_peak_rss_mb", peak, replica=name, baseline_mb=base, **warm, **n)
                    emit("replica_settled_rss_mb", r["rss_mb"][name], replica=name, baseline_mb=base, **n)
                p50, p99, samples = r["lateness"]
                emit("fire_lateness_p99_ms", p99, p50_ms=round(p50, 3), samples=samples, goal_ms=10, **n)
                emit_trigger_lateness(r["trigger_lateness"], **n)
                if "crash" in r:
                    c = r["crash"]
                    emit(
                        "crash_seconds_until_shards_run_again", c["seconds"],
                        goal_seconds=args.lease_duration + 2, dead_shards=c["dead_shards"],
                        other_shards_moved=c["others_moved"], **n,
                    )  # fmt: skip
                    emit(
                        "crash_seconds_until_triggers_run_again", c["run_again"],
                        goal_seconds=args.lease_duration + 2, probes_on_dead=c["probes_on_dead"], **n,
                    )  # fmt: skip
                    emit("crash_duplicates", c["duplicates"], goal=0, probes_on_dead=c["probes_on_dead"], **n)
                    emit("crash_lost_runs", c["lost"], goal=0, expected_runs=c["expected"], **n)
    one = results.get(1)
    if one is None:
        return
    single_rss = max(one["peak_rss_mb"].values())
    single_base = max(one["baseline_mb"].values())
    for replicas, r in results.items():
        if replicas == 1:
            continue
        emit(
            "time_ratio_vs_one_replica",
            r["seconds"] / one["seconds"],
            replicas=replicas,
            goal=0.75 if replicas == 2 else None,
        )
        allowed = (single_rss - single_base) / replicas + max(r["baseline_mb"].values())
        emit(
            "worst_replica_rss_vs_allowed_ratio", max(r["peak_rss_mb"].values()) / allowed, replicas=replicas,
            allowed_mb=round(allowed, 1), baseline="before any trigger", goal=1.0,
        )  # fmt: skip
        if "warm_baseline_mb" in r and "warm_baseline_mb" in one:
            single_warm = max(one["warm_baseline_mb"].values())
            allowed = (single_rss - single_warm) / replicas + max(r["warm_baseline_mb"].values())
            emit(
                "worst_replica_rss_vs_allowed_warm_ratio", max(r["peak_rss_mb"].values()) / allowed,
                replicas=replicas, allowed_mb=round(allowed, 1),
                baseline=f"after {args.warm_up} triggers came and went", goal=1.0,
            )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument(
        "--warm-up",
        type=int,
        default=200,
        help="triggers created and deleted before the warm baseline (0: none)",
    )
    parser.add_argument("--lateness-seconds", type=float, default=30)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--lease-duration", type=float, default=15)
    parser.add_argument("--renew-deadline", type=float, default=10)
    parser.add_argument("--retry-period", type=float, default=2)
    parser.add_argument(
        "--replica-cpus",
        type=float,
        default=None,
        help="cap each replica at this many CPUs (a control group each), as if every replica had a node "
        "of its own; the control plane and the queue service share the rest (needs root)",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp,
        ControlPlane(bin_dir=find_binaries(ROOT), data_dir=Path(tmp) / "cp") as cp,
    ):
        install_crds(cp, ROOT / "crds")
        asyncio.run(run(cp, args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
