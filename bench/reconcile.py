"""Reconcile benchmark: N JobTriggers (schedule source, far-future cron) applied at once; seconds until
every one reports `isRunning: true`, and the operator's peak RSS.

The floor, in the same run: a bare kubernetes-asyncio loop doing only the minimum API writes per
object (one status patch each) for N objects created the same way. Prints one JSON line per figure.

    python bench/reconcile.py [--count 1000]
"""

import argparse
import asyncio
import json
import os
import re
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
from portico.testing.processes import die_with_parent, operator_command, running_queue_service

ROOT = Path(__file__).resolve().parent.parent


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": "reconcile", "metric": metric, "value": round(value, 3), **extra}), flush=True)


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobTrigger",
        "metadata": {"name": name},
        "spec": {"job": {"type": "bench.job"}, "schedule": {"cron": "0 0 1 1 *"}},
    }


async def create_all(
    custom: client.CustomObjectsApi, namespace: str, count: int, concurrency: int = 32
) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, manifest(f"t{i:05d}")
            )

    await asyncio.gather(*(one(i) for i in range(count)))


async def wait_all_running(
    custom: client.CustomObjectsApi, namespace: str, count: int, timeout: float
) -> None:
    running: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        objs = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        version = objs["metadata"]["resourceVersion"]
        running = {o["metadata"]["name"] for o in objs["items"] if (o.get("status") or {}).get("isRunning")}
        if len(running) >= count:
            return
        async with watch.Watch() as w:
            async for event in w.stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                resource_version=version,
                timeout_seconds=30,
            ):
                obj = event["object"]
                if (obj.get("status") or {}).get("isRunning"):
                    running.add(obj["metadata"]["name"])
                if len(running) >= count:
                    return
    raise TimeoutError(f"only {len(running)}/{count} running after {timeout}s")


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


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


async def measure_operator(
    custom: client.CustomObjectsApi,
    cp: ControlPlane,
    queue_url: str,
    count: int,
    timeout: float,
    workdir: Path,
) -> tuple[float, float]:
    """Seconds from the first create until every trigger is Running, and the operator's peak RSS (MB)."""
    op_log = workdir / "operator.log"
    operator = subprocess.Popen(
        operator_command(
            kubeconfig=cp.kubeconfig,
            queue_url=queue_url,
            namespaces=("bench-operator",),
            log_level="WARNING",
            extra=("--no-leader-election",),
        ),
        stdout=open(op_log, "wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    try:
        await asyncio.sleep(3)
        t0 = time.monotonic()
        await create_all(custom, "bench-operator", count)
        await wait_all_running(custom, "bench-operator", count, timeout)
        elapsed = time.monotonic() - t0
        rss = peak_rss_mb(operator.pid)
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=60)
        except subprocess.TimeoutExpired:
            operator.kill()
    return elapsed, rss


async def run(cp: ControlPlane, count: int, timeout: float, workdir: Path) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)
        for ns in ("bench-floor", "bench-operator"):
            cp.ensure_namespace(ns)

        # Floor: bare loop, one status patch per object.
        controller = asyncio.create_task(floor_controller(custom, "bench-floor", count))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await create_all(custom, "bench-floor", count)
        await wait_all_running(custom, "bench-floor", count, timeout)
        floor = time.monotonic() - t0
        await controller
        emit("floor_seconds_to_all_running", floor, count=count)

        # The operator, with the reference queue service beside it.
        with running_queue_service(workdir / "q.db") as queue_url:
            elapsed, rss = await measure_operator(custom, cp, queue_url, count, timeout, workdir)
        emit("operator_seconds_to_all_running", elapsed, count=count, goal_seconds=20)
        emit("operator_vs_floor_ratio", elapsed / floor, goal=3)
        emit("operator_peak_rss_mb", rss, goal_mb=200)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=int(os.environ.get("BENCH_TRIGGERS", "1000")))
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp,
        ControlPlane(bin_dir=find_binaries(ROOT), data_dir=Path(tmp) / "cp") as cp,
    ):
        subprocess.run(
            [
                str(cp.bin_dir / "kubectl"),
                f"--kubeconfig={cp.kubeconfig}",
                "apply",
                "--server-side",
                "-f",
                str(ROOT / "crds"),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                str(cp.bin_dir / "kubectl"),
                f"--kubeconfig={cp.kubeconfig}",
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
            ],
            check=True,
            capture_output=True,
        )
        asyncio.run(run(cp, args.count, args.timeout, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
