"""Many JobTriggers and the operator processes that run them, for the scale benchmarks: create triggers in
bulk, wait until all report Running, and read a process's RSS and CPU time and the fire lateness the
queue service saw."""

import asyncio
import json
import os
import re
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch

from portico.operator.resource import GROUP, PLURAL, VERSION
from portico.testing.control_plane import ControlPlane

FAR_FUTURE_CRON = "0 0 1 1 *"


def schedule_manifest(name: str, cron: str = FAR_FUTURE_CRON, *, queue: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobTrigger",
        "metadata": {"name": name},
        "spec": {"job": {"type": "bench.job", "queue": queue}, "schedule": {"cron": cron}},
    }


async def create_all(
    custom: client.CustomObjectsApi,
    namespace: str,
    manifests: list[dict[str, Any]],
    concurrency: int = 32,
) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    await asyncio.gather(*(one(m) for m in manifests))


async def running_names(custom: client.CustomObjectsApi, namespace: str) -> tuple[set[str], str]:
    objs = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    names = {o["metadata"]["name"] for o in objs["items"] if (o.get("status") or {}).get("isRunning")}
    return names, objs["metadata"]["resourceVersion"]


async def wait_all_running(
    custom: client.CustomObjectsApi, namespace: str, count: int, within: float
) -> None:
    """Until `count` objects of the namespace say `isRunning: true` (a list, then a watch)."""
    running: set[str] = set()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        running, version = await running_names(custom, namespace)
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
                name = obj["metadata"]["name"]
                if (obj.get("status") or {}).get("isRunning"):
                    running.add(name)
                else:
                    running.discard(name)
                if len(running) >= count:
                    return
    raise TimeoutError(f"only {len(running)}/{count} running after {within}s")


async def delete_all(custom: client.CustomObjectsApi, namespace: str, within: float) -> None:
    """Delete every JobTrigger of the namespace and wait until the last is gone (its finalizer released)."""
    await custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        objs = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1)
        if not objs["items"]:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"JobTriggers of {namespace} still there after {within}s")


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_percent(pid: int, seconds: float) -> float:
    """Percent of one core the process used over the next `seconds`."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def list_jobs(queue_url: str, **filters: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**filters, "limit": "500", **({"cursor": cursor} if cursor else {})}
        with urllib.request.urlopen(f"{queue_url}/v1/jobs?{urllib.parse.urlencode(query)}", timeout=30) as r:
            page = json.loads(r.read())
        out.extend(page["jobs"])
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def scheduled_at(job: dict[str, Any]) -> float:
    return _epoch(job["metadata"]["scheduled_time"])


def created_at(job: dict[str, Any]) -> float:
    """When the queue service created the job (epoch seconds)."""
    return _epoch(job["created_at"])


def lateness_ms(jobs: list[dict[str, Any]]) -> list[float]:
    """Per job: the queue service's creation time minus the scheduled second (end to end: the fire, the
    HTTP request and the queue's write)."""
    return [(_epoch(j["created_at"]) - _epoch(j["metadata"]["scheduled_time"])) * 1000 for j in jobs]


def percentile(samples: list[float], q: float) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q) - 1]


def install_crds(cp: ControlPlane, crds_dir: Path, timeout: float = 60) -> None:
    """Apply the CRDs and wait until they are Established (`kubectl wait` fails at once while a new CRD
    has no conditions yet, so it is retried)."""
    kubectl = [str(cp.bin_dir / "kubectl"), f"--kubeconfig={cp.kubeconfig}"]
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(crds_dir)], check=True, capture_output=True)
    deadline = time.monotonic() + timeout
    while subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "crd", "--all", "--timeout=10s"],
        capture_output=True,
    ).returncode:
        if time.monotonic() > deadline:
            raise TimeoutError("the CRDs were not Established in time")
        time.sleep(0.5)
