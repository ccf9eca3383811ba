"""Fail-over benchmark: two operator replicas with leader election, an `@every 1s` schedule, and
repeated kill-and-recover cycles of the leader (SIGKILL: a crash; SIGTERM: a graceful stop).

Reports fail-over seconds (p50 and max, per kind), duplicate jobs (the same scheduled second enqueued
twice: must be 0), runs missed (scheduled seconds with no job), and how many creations the queue
service answered from its idempotency keys (a new leader re-firing what the old one had already
sent: these are the duplicates the keys prevent). One JSON line per figure.

    python bench/failover.py [--cycles 10] [--lease-duration 15 --renew-deadline 10 --retry-period 2]
"""

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from portico.testing.control_plane import ControlPlane, find_binaries
from portico.testing.processes import die_with_parent, operator_command, running_queue_service

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench-failover"


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": "failover", "metric": metric, "value": round(value, 3), **extra}), flush=True)


class Bench:
    def __init__(self, cp: ControlPlane, workdir: Path, args: argparse.Namespace) -> None:
        self.cp = cp
        self.workdir = workdir
        self.args = args
        self.kubectl = [
            str(cp.bin_dir / "kubectl"),
            f"--kubeconfig={cp.kubeconfig}",
            f"--namespace={NAMESPACE}",
        ]
        self.replicas: dict[str, subprocess.Popen[bytes]] = {}
        self.queue_url = ""

    def k(self, *args: str, input: str | None = None) -> str:
        return subprocess.run(
            [*self.kubectl, *args], input=input, capture_output=True, text=True, check=True
        ).stdout

    def holder(self) -> str | None:
        try:
            lease = json.loads(self.k("get", "lease", "portico-operator", "-o", "json"))
        except subprocess.CalledProcessError:
            return None
        holder: str | None = lease["spec"].get("holderIdentity")
        return holder

    def start_replica(self, name: str) -> None:
        a = self.args
        self.replicas[name] = subprocess.Popen(
            operator_command(
                kubeconfig=self.cp.kubeconfig,
                queue_url=self.queue_url,
                namespaces=(NAMESPACE,),
                log_level="WARNING",
                extra=(
                    "--id",
                    name,
                    "--lease-duration",
                    str(a.lease_duration),
                    "--renew-deadline",
                    str(a.renew_deadline),
                    "--retry-period",
                    str(a.retry_period),
                ),
            ),
            stdout=open(self.workdir / f"{name}.log", "ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def wait_holder(self, predicate: Any, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.holder()
            if h and predicate(h):
                return h
            time.sleep(0.05)
        raise TimeoutError("no new leader")

    def jobs(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"queue": "ticks", "limit": "1000", **({"cursor": cursor} if cursor else {})}
            with urllib.request.urlopen(f"{self.queue_url}/v1/jobs?{urllib.parse.urlencode(query)}") as r:
                page = json.loads(r.read())
            out += page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def idempotent_repeats(self) -> float:
        with urllib.request.urlopen(f"{self.queue_url}/metrics") as r:
            text = r.read().decode()
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("portico_queue_idempotent_repeats_total")
        )

    def run(self) -> None:
        self.cp.ensure_namespace(NAMESPACE)
        with running_queue_service(self.workdir / "q.db") as self.queue_url:
            took = self.cycles()
            times = sorted(
                datetime.fromisoformat(j["metadata"]["scheduled_time"]).timestamp() for j in self.jobs()
            )
            repeats = self.idempotent_repeats()
        self.report(took, times, repeats)

    def cycles(self) -> dict[str, list[float]]:
        """Kill (odd: SIGKILL, even: SIGTERM) the leader again and again; seconds until a new one."""
        try:
            for name in ("replica-a", "replica-b"):
                self.start_replica(name)
            self.wait_holder(lambda h: True, 60)
            self.k(
                "apply",
                "-f",
                "-",
                input=json.dumps(
                    {
                        "apiVersion": "triggers.portico.dev/v1alpha1",
                        "kind": "JobTrigger",
                        "metadata": {"name": "ticker"},
                        "spec": {
                            "job": {"type": "bench.tick", "queue": "ticks"},
                            "schedule": {
                                "cron": "@every 1s",
                                "catchUp": "All",
                                "startingDeadlineSeconds": 120,
                            },
                        },
                    }
                ),
            )
            time.sleep(3)
            took: dict[str, list[float]] = {"crash": [], "graceful": []}
            for cycle in range(self.args.cycles):
                kind = "crash" if cycle % 2 == 0 else "graceful"
                leader = self.wait_holder(lambda h: True, 60)
                proc = self.replicas[leader]
                proc.send_signal(signal.SIGKILL if kind == "crash" else signal.SIGTERM)
                t0 = time.monotonic()
                self.wait_holder(lambda h, old=leader: h != old, self.args.lease_duration * 3)
                took[kind].append(time.monotonic() - t0)
                proc.wait(timeout=60)
                self.start_replica(leader)
                time.sleep(2)
            time.sleep(3)
        finally:
            for proc in self.replicas.values():
                proc.send_signal(signal.SIGTERM)
            for proc in self.replicas.values():
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        return took

    def report(self, took: dict[str, list[float]], times: list[float], repeats: float) -> None:
        duplicates = len(times) - len(set(times))
        span = int(times[-1] - times[0]) + 1 if times else 0
        missed = span - len(set(times))
        for kind, values in took.items():
            if values:
                goal = self.args.lease_duration + 2 if kind == "crash" else 3
                emit(f"{kind}_failover_seconds_p50", statistics.median(values), cycles=len(values), goal=goal)
                emit(f"{kind}_failover_seconds_max", max(values), cycles=len(values), goal=goal)
        emit("scheduled_seconds", span)
        emit("duplicate_jobs", duplicates, goal=0)
        present = {int(t) for t in times}
        gaps = [t for t in range(int(times[0]), int(times[-1]) + 1) if t not in present] if times else []
        emit("missed_runs", missed, goal=0, missing_seconds_after_start=[t - int(times[0]) for t in gaps])
        emit("idempotent_repeats_absorbed", repeats)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--lease-duration", type=float, default=15.0)
    parser.add_argument("--renew-deadline", type=float, default=10.0)
    parser.add_argument("--retry-period", type=float, default=2.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp,
        ControlPlane(bin_dir=find_binaries(ROOT), data_dir=Path(tmp) / "cp") as cp,
    ):
        kubectl = [str(cp.bin_dir / "kubectl"), f"--kubeconfig={cp.kubeconfig}"]
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True, capture_output=True
        )
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True, capture_output=True
        )
        Bench(cp, Path(tmp), args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
