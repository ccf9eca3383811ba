"""`make run`: everything on one machine, for trying Portico out.

A real control plane (state under `.local/`, so resources survive a restart), the CRDs, the reference
queue service, the operator, a worker with the example handler, and the examples: jobs go
pending → running → completed. With `KUBECONFIG` pointing at a reachable cluster, that
cluster is used instead of a local control plane. Ctrl-C stops everything.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from portico.testing.control_plane import ControlPlane, find_binaries
from portico.testing.processes import die_with_parent, free_port, worker_command

ROOT = Path(__file__).resolve().parents[3]
LOCAL_EXAMPLES = ("schedule-daily-report.yaml", "webhook-github.yaml")
"""The examples that work on one machine; the file, amqp and databasePoll examples need a directory,
a broker or a database of your own (apply them when you have one, and watch them report what is
missing if you do not)."""
STATE = ROOT / ".local"
RUN_NOW = "triggers.portico.dev/run-now"
WORKER_QUEUES = ("reports", "ci", "default")
"""The queues of the local examples, served by one worker running `portico.worker.examples`."""


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
    )


def _wait_for_line(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text(errors="replace") if log.exists() else "")
        if m:
            return m.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited early; see {log}")
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {pattern!r} in {log}")


def _port_or_free(port: int) -> int:
    """The preferred port if it is free, else any free one."""
    try:
        with socket.create_server(("127.0.0.1", port)):
            return port
    except OSError:
        return free_port()


def _cluster_reachable(kubectl: Path, kubeconfig: str) -> bool:
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "version", "--request-timeout=5s"],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def main() -> int:
    STATE.mkdir(exist_ok=True)
    bin_dir = find_binaries(ROOT)
    kubectl = bin_dir / "kubectl"
    processes: list[subprocess.Popen[bytes]] = []
    control_plane: ControlPlane | None = None
    external = os.environ.get("KUBECONFIG")
    try:
        if external and _cluster_reachable(kubectl, external):
            kubeconfig = Path(external)
            print(f"Using the cluster from KUBECONFIG={external}")
        else:
            print("Starting a local control plane (etcd + kube-apiserver) ...")
            control_plane = ControlPlane(bin_dir=bin_dir, data_dir=STATE / "control-plane")
            control_plane.start()
            kubeconfig = control_plane.kubeconfig

        def k(*args: str) -> None:
            subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", *args], check=True)

        k("apply", "--server-side", "-f", str(ROOT / "crds"))
        k("wait", "--for=condition=Established", "--timeout=60s", "crd/jobtriggers.triggers.portico.dev")

        queue_log = STATE / "queue-service.log"
        queue = _spawn(
            [
                sys.executable,
                "-m",
                "portico",
                "queue-service",
                "--port",
                "0",
                "--db",
                str(STATE / "queue.db"),
            ],
            queue_log,
        )
        processes.append(queue)
        queue_url = _wait_for_line(queue_log, r"queue service listening on (\S+)", queue)

        webhook_port = _port_or_free(int(os.environ.get("PORTICO_WEBHOOK_PORT", "8080")))
        operator_log = STATE / "operator.log"
        operator = _spawn(
            [
                sys.executable,
                "-m",
                "portico",
                "operator",
                f"--kubeconfig={kubeconfig}",
                f"--queue-url={queue_url}",
                "--webhook-host=127.0.0.1",
                f"--webhook-port={webhook_port}",
                "--health-host=127.0.0.1",
                f"--health-port={free_port()}",
                "--metrics-host=127.0.0.1",
                f"--metrics-port={free_port()}",
                "--log-format=text",
                "--no-leader-election",
            ],
            operator_log,
        )
        processes.append(operator)

        worker_log = STATE / "worker.log"
        worker_metrics_port = free_port()
        worker = _spawn(
            worker_command(
                queue_url=queue_url,
                handlers="portico.worker.examples:handlers",
                queues=WORKER_QUEUES,
                concurrency=4,
                metrics_port=worker_metrics_port,
                log_format="text",
            ),
            worker_log,
        )
        processes.append(worker)
        _wait_for_line(worker_log, r"worker metrics listening on (\S+)", worker)
        time.sleep(2)
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited; see {operator_log}")

        for example in LOCAL_EXAMPLES:
            k("apply", "-f", str(ROOT / "examples" / example))
        # One job right away (a manual run of the daily schedule), for the worker to take.
        k("annotate", "jt", "daily-report", f"{RUN_NOW}={int(time.time())}", "--overwrite")

        print(
            f"""
Portico is running.
  kubeconfig:     {kubeconfig}
  queue service:  {queue_url}   (jobs: curl {queue_url}/v1/jobs)
  webhooks:       http://127.0.0.1:{webhook_port}/hooks/<namespace>/<name>
  worker:         portico.worker.examples on queues {", ".join(WORKER_QUEUES)}; jobs go
                  pending -> running -> completed (curl {queue_url}/v1/jobs?queue=reports); one
                  more job: kubectl --kubeconfig {kubeconfig} annotate jt daily-report \\
                             {RUN_NOW}="$(date +%s)" --overwrite
                  metrics: http://127.0.0.1:{worker_metrics_port}/metrics
  examples:       {", ".join(LOCAL_EXAMPLES)} applied; the others in examples/ need a
                  directory, a RabbitMQ or a PostgreSQL of yours (kubectl apply -f examples/...)
  logs:           {operator_log}, {worker_log}, {queue_log}

  kubectl --kubeconfig {kubeconfig} get jobtriggers -A
  kubectl portico --kubeconfig {kubeconfig} get -A     (the plugin: next, run-now, history, doctor, ...)

Press Ctrl-C to stop everything.""",
            flush=True,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1):
            if any(p.poll() is not None for p in processes):
                print("A process exited unexpectedly; see the logs in .local/")
                return 1
        print("\nStopping ...")
        return 0
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if control_plane is not None:
            control_plane.stop()


if __name__ == "__main__":
    sys.exit(main())
