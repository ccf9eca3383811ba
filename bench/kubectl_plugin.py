"""`kubectl portico get` against plain `kubectl get jt` on the same 100 JobTriggers, in the same run: the
wall time of one command as a user runs it (process start, kubeconfig, one list call, printing).
Statuses are written as the operator writes them, so the plugin computes every column it shows.
One JSON line per figure; the ratio is plugin / kubectl.

    python bench/kubectl_plugin.py [--count 100] [--runs 15]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from portico.testing.control_plane import ControlPlane, find_binaries

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = Path(sys.executable).parent / "kubectl-portico"


def emit(metric: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "kubectl_plugin", "metric": metric, "value": round(value, 4), **extra}),
        flush=True,
    )


def trigger(i: int) -> dict[str, Any]:
    source = (
        {"schedule": {"cron": f"{i % 60} 9 * * *", "timeZone": "Europe/Berlin"}}
        if i % 2
        else {"webhook": {"auth": {"type": "none"}}}
    )
    return {
        "apiVersion": "triggers.portico.dev/v1alpha1",
        "kind": "JobTrigger",
        "metadata": {"name": f"t{i:03d}", "namespace": "bench"},
        "spec": {"job": {"type": "bench.job", "queue": "bench"}, **source},
    }


def status(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    out: dict[str, Any] = {
        "phase": "Running",
        "isRunning": True,
        "source": "schedule" if i % 2 else "webhook",
        "jobsCreated": i * 7,
        "errors": i % 3,
        "lastJobId": f"job-{i}",
        "lastJobTime": (now - timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastError": "job creation failed: queue service answered 503" if i % 3 else None,
    }
    if i % 2:
        out["nextScheduleTime"] = (now + timedelta(hours=i % 24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def timed(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, check=True, capture_output=True)  # warm the page cache
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0 or proc.stdout.count("\n") < 2:
            raise SystemExit(f"{cmd[0]} failed: {proc.stderr}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bin_dir = find_binaries(ROOT)
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp:
        cp = ControlPlane(bin_dir=bin_dir, data_dir=Path(tmp) / "cp")
        cp.start()
        try:
            kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cp.kubeconfig}"]
            subprocess.run(
                [*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [*kubectl, "wait", "--for=condition=Established", "crd", "--all"],
                check=True,
                capture_output=True,
            )
            cp.ensure_namespace("bench")
            items = {"apiVersion": "v1", "kind": "List", "items": [trigger(i) for i in range(args.count)]}
            subprocess.run(
                [*kubectl, "apply", "-f", "-"],
                input=json.dumps(items),
                text=True,
                check=True,
                capture_output=True,
            )
            for i in range(args.count):
                patch = json.dumps({"status": status(i)})
                subprocess.run(
                    [*kubectl, "-n", "bench", "patch", "jt", f"t{i:03d}", "--subresource=status",
                     "--type=merge", "-p", patch],
                    check=True, capture_output=True,
                )  # fmt: skip
            plain = timed([*kubectl, "-n", "bench", "get", "jt"], args.runs)
            plain_wide = timed([*kubectl, "-n", "bench", "get", "jt", "-o", "wide"], args.runs)
            plugin = timed([str(PLUGIN), "get", "-n", "bench", f"--kubeconfig={cp.kubeconfig}"], args.runs)
            plugin_wide = timed(
                [str(PLUGIN), "get", "-n", "bench", "-o", "wide", f"--kubeconfig={cp.kubeconfig}"], args.runs
            )
        finally:
            cp.stop()
    figures = {"count": args.count, "runs": args.runs}
    kubectl_ms = statistics.median(plain) * 1000
    emit(
        "kubectl_get_jt_ms", kubectl_ms, p90=round(sorted(plain)[int(0.9 * len(plain))] * 1000, 1), **figures
    )
    emit("kubectl_get_jt_wide_ms", statistics.median(plain_wide) * 1000, **figures)
    plugin_ms = statistics.median(plugin) * 1000
    emit("plugin_get_ms", plugin_ms, p90=round(sorted(plugin)[int(0.9 * len(plugin))] * 1000, 1), **figures)
    emit("plugin_get_wide_ms", statistics.median(plugin_wide) * 1000, **figures)
    emit("plugin_over_kubectl_ratio", plugin_ms / kubectl_ms, **figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
