"""Reconcile benchmark and the one-process ceiling: N JobTriggers (schedule source, far-future cron)
applied at once to one operator process, for each N of `--count`.

Per N: seconds until every one reports `isRunning: true`; the operator's peak RSS; the CPU it uses while
all N wait (percent of one core over `--idle-seconds`); and the fire lateness p99 (queue service's
creation time minus the scheduled second) of `--probes` every-second schedules added once all N are
registered, over `--lateness-seconds`.

The floor, in the same run: a bare kubernetes-asyncio loop doing only the minimum API writes per
object (one status patch each) for N objects created the same way. Prints one JSON line per figure.

    python bench/reconcile.py [--count 1000 5000 10000 20000]
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from portico.operator.resource import GROUP, PLURAL, VERSION
from portico.testing.control_plane import ControlPlane, find_binaries
from portico.testing.fleet import (
    cpu_percent,
    create_all,
    install_crds,
    lateness_ms,
    list_jobs,
    peak_rss_mb,
    percentile,
    schedule_manifest,
    scheduled_at,
    wait_all_running,
)
from portico.testing.processes import die_with_parent, operator_command, running_queue_service

ROOT = Path(__file__).resolve().parent.parent


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": "reconcile", "metric": metric, "value": round(value, 3), **extra}), flush=True)


async def floor_controller(custom: client.CustomObjectsApi, namespace: str, count: int) -> None:
    """The minimum: watch the objects and patch each one's status once."""
    patched: set[str] = set()
    sem = asyncio.Semaphore(16)
    tasks: list[asyncio.Task[None]] = []

    async def patch(name: str) -> None:
        async with sem:
            await custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": {"isRunning": True, "phase": "Running"}},
                _content_type="application/merge-patch+json",
            )

    def seen(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in patched:
            patched.add(name)
            tasks.append(asyncio.create_task(patch(name)))

    while len(patched) < count:
        try:
            listing = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            for obj in listing["items"]:
                seen(obj)
            async with watch.Watch() as w:
                async for event in w.stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                ):
                    if event["type"] == "ADDED":
                        seen(event["object"])
                    if len(patched) >= count:
                        break
        except ApiException as exc:
            if exc.status not in (410, 429, 500, 503):
                raise
            await asyncio.sleep(0.2)
    await asyncio.gather(*tasks)


def triggers(count: int) -> list[dict[str, Any]]:
    return [schedule_manifest(f"t{i:05d}") for i in range(count)]


def probes(count: int) -> list[dict[str, Any]]:
    return [schedule_manifest(f"probe{i:02d}", "@every 1s", queue="probe") for i in range(count)]


async def measure_operator(
    custom: client.CustomObjectsApi,
    cp: ControlPlane,
    queue_url: str,
    count: int,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, float]:
    namespace = f"bench-operator-{count}"
    cp.ensure_namespace(namespace)
    operator = subprocess.Popen(
        operator_command(
            kubeconfig=cp.kubeconfig,
            queue_url=queue_url,
            namespaces=(namespace,),
            log_level="WARNING",
            extra=("--no-leader-election",),
        ),
        stdout=open(workdir / f"operator-{count}.log", "wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    try:
        await asyncio.sleep(3)
        t0 = time.monotonic()
        await create_all(custom, namespace, triggers(count))
        await wait_all_running(custom, namespace, count, args.timeout)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(args.settle_seconds)  # the last status writes drain
        idle_cpu = await cpu_percent(operator.pid, args.idle_seconds)
        await create_all(custom, namespace, probes(args.probes))
        await wait_all_running(custom, namespace, count + args.probes, args.timeout)
        start = time.time()
        await asyncio.sleep(args.lateness_seconds)
        rss = peak_rss_mb(operator.pid)
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=120)
        except subprocess.TimeoutExpired:
            operator.kill()
    jobs = [
        j
        for j in list_jobs(queue_url, queue="probe")
        if j["metadata"].get("trigger.namespace") == namespace
        and scheduled_at(j) >= start + 1  # not a run due at start
    ]
    samples = lateness_ms(jobs)
    return {
        "seconds": elapsed,
        "rss_mb": rss,
        "idle_cpu_percent": idle_cpu,
        "lateness_p50_ms": percentile(samples, 50),
        "lateness_p99_ms": percentile(samples, 99),
        "samples": len(samples),
    }


async def measure_floor(
    custom: client.CustomObjectsApi, cp: ControlPlane, count: int, timeout: float
) -> float:
    namespace = f"bench-floor-{count}"
    cp.ensure_namespace(namespace)
    controller = asyncio.create_task(floor_controller(custom, namespace, count))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    await create_all(custom, namespace, triggers(count))
    await wait_all_running(custom, namespace, count, timeout)
    floor = time.monotonic() - t0
    await controller
    return floor


async def run(cp: ControlPlane, args: argparse.Namespace, workdir: Path) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)
        with running_queue_service(workdir / "q.db") as queue_url:
            for count in args.count:
                floor = None
                if count <= args.floor_max:
                    floor = await measure_floor(custom, cp, count, args.timeout)
                    emit("floor_seconds_to_all_running", floor, count=count)
                m = await measure_operator(custom, cp, queue_url, count, args, workdir)
                emit("operator_seconds_to_all_running", m["seconds"], count=count)
                if floor is not None:
                    emit("operator_vs_floor_ratio", m["seconds"] / floor, count=count, goal=3)
                emit("operator_ms_per_trigger", 1000 * m["seconds"] / count, count=count)
                emit("operator_peak_rss_mb", m["rss_mb"], count=count)
                emit(
                    "operator_idle_cpu_percent", m["idle_cpu_percent"], count=count, seconds=args.idle_seconds
                )
                emit(
                    "fire_lateness_p99_ms",
                    m["lateness_p99_ms"],
                    count=count,
                    p50_ms=round(m["lateness_p50_ms"], 3),
                    samples=m["samples"],
                    goal_ms=10,
                )


def main() -> int:
    parser = argparse.ArgumentParser()
    default = [int(n) for n in os.environ.get("BENCH_TRIGGERS", "1000").split(",")]
    parser.add_argument("--count", type=int, nargs="+", default=default, help="one run per count")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--floor-max", type=int, default=5000, help="measure the bare-client floor only up to this count"
    )
    parser.add_argument("--settle-seconds", type=float, default=5)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--lateness-seconds", type=float, default=30)
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
