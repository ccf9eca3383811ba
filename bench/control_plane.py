"""Control-plane benchmark, the baseline later benchmarks compare against: seconds from a cold start
(binaries cached) until kube-apiserver's /readyz is ok, then `kubectl create` and `kubectl get` of 100
JobTriggers (one kubectl call each, as a user or a CI job would run them). One JSON line per figure.

    python bench/control_plane.py [--count 100] [--starts 3]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from portico.testing.control_plane import ControlPlane, find_binaries

ROOT = Path(__file__).resolve().parent.parent


def emit(metric: str, value: float, **extra: Any) -> None:
    print(
        json.dumps({"bench": "control_plane", "metric": metric, "value": round(value, 3), **extra}),
        flush=True,
    )


def manifest(i: int) -> str:
    return json.dumps(
        {
            "apiVersion": "triggers.portico.dev/v1alpha1",
            "kind": "JobTrigger",
            "metadata": {"name": f"t{i:03d}"},
            "spec": {"job": {"type": "bench.job"}, "schedule": {"cron": "0 9 * * *"}},
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time (median reported)")
    args = parser.parse_args()
    bin_dir = find_binaries(ROOT)
    starts = []
    for attempt in range(args.starts):
        with tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp:
            cp = ControlPlane(bin_dir=bin_dir, data_dir=Path(tmp) / "cp")
            t0 = time.monotonic()
            cp.start()
            starts.append(time.monotonic() - t0)
            try:
                if attempt == args.starts - 1:
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
                    t0 = time.monotonic()
                    for i in range(args.count):
                        subprocess.run(
                            [*kubectl, "create", "-f", "-"],
                            input=manifest(i),
                            check=True,
                            capture_output=True,
                            text=True,
                        )
                    create = time.monotonic() - t0
                    t0 = time.monotonic()
                    for i in range(args.count):
                        subprocess.run(
                            [*kubectl, "get", "jobtrigger", f"t{i:03d}", "-o", "name"],
                            check=True,
                            capture_output=True,
                        )
                    get = time.monotonic() - t0
            finally:
                cp.stop()
    emit("cold_start_to_readyz_seconds", statistics.median(starts), starts=[round(s, 2) for s in starts])
    emit("kubectl_create_seconds", create, count=args.count, per_call_ms=round(create / args.count * 1000, 1))
    emit("kubectl_get_seconds", get, count=args.count, per_call_ms=round(get / args.count * 1000, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
