"""Draws docs/images/dashboard.png: the panels of the chart's Grafana dashboard, with the dashboard's own
PromQL evaluated by a real Prometheus that scrapes a real operator.

It starts a local control plane, the queue service, the operator (leader election on), a few schedule
and webhook triggers and some webhook traffic (including refused requests), runs Prometheus (from
Debian's package, see hack/install-promtool.sh) scraping the operator every 2 seconds, then queries each
panel's expressions over the run with `query_range` and draws them with matplotlib, laid out as the
dashboard lays them out. Everything runs on 127.0.0.1 and is stopped at the end.

    .venv/bin/pip install -e '.[docs]'    # matplotlib
    bash hack/install-promtool.sh
    PORTICO_CONTROL_PLANE_BIN=$(bash hack/build-control-plane.sh) .venv/bin/python hack/plot-dashboard.py
"""

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from portico.testing.control_plane import ControlPlane, find_binaries
from portico.testing.processes import die_with_parent, free_port, operator_command, running_queue_service

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "helm" / "portico-triggers" / "dashboards" / "portico-triggers.json"
PROMETHEUS = ROOT / ".cache" / "bin" / "prometheus"
RATE_INTERVAL = "30s"
"""What Grafana's $__rate_interval becomes here: four 2-second scrapes and then some."""

TRIGGERS = [
    ("reports-every-2s", {"schedule": {"cron": "@every 2s"}}, {"type": "report.build", "queue": "reports"}),
    (
        "cleanup-every-5s",
        {"schedule": {"cron": "*/5 * * * * *"}},
        {"type": "cleanup", "queue": "maintenance"},
    ),
    (
        "github-ci",
        {"webhook": {"mode": "payload", "auth": {"type": "none"}}},
        {"type": "ci.build", "queue": "ci"},
    ),
    (
        "payments",
        {"webhook": {"auth": {"type": "bearer", "secretRef": {"name": "payments-token", "key": "token"}}}},
        {"type": "payment.settle", "queue": "payments"},
    ),
]


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)


def wait_for_text(log: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        time.sleep(0.2)
    raise SystemExit(f"{text!r} not seen in {log}")


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def traffic(base: str, namespace: str, stop: threading.Event) -> None:
    """Webhook senders: mostly good deliveries, bursts of bad bodies and wrong tokens."""
    rng = random.Random(7)
    while not stop.wait(rng.uniform(0.05, 0.25)):
        elapsed = time.monotonic() % 60
        post(f"{base}/hooks/{namespace}/github-ci", b'{"ref": "main"}', {"Content-Type": "application/json"})
        token = "wrong" if 20 < elapsed < 35 and rng.random() < 0.5 else "s3cret"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        body = b'{"job_type": "payment.settle", "payload": {"amount": 5}}'
        post(f"{base}/hooks/{namespace}/payments", body, headers)
        if rng.random() < 0.1:
            post(f"{base}/hooks/{namespace}/github-ci", b"not json", {"Content-Type": "text/plain"})


def query_range(prometheus: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "5"})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{query}", timeout=30) as resp:
        answer = json.loads(resp.read())
    if answer["status"] != "success":
        raise SystemExit(f"query failed: {expr}: {answer}")
    return list(answer["data"]["result"])


def legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text or ",".join(f"{k}={v}" for k, v in labels.items()) or "value"


def plot(
    rows: list[dict[str, Any]],
    results: list[tuple[dict[str, Any], list[tuple[str, list[dict[str, Any]]]]]],
    out: Path,
    start: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p, _ in results)
    fig = plt.figure(figsize=(18, height * 0.42))
    fig.suptitle("Portico Triggers (dashboard queries on a live operator, via Prometheus)", fontsize=13)
    grid = fig.add_gridspec(height, 24, hspace=2.2, wspace=1.2, top=0.96, bottom=0.03)
    for row in rows:
        header = fig.add_subplot(grid[row["gridPos"]["y"], :])
        header.axis("off")
        header.text(0, 0, row["title"], fontsize=11, fontweight="bold", transform=header.transAxes)
    for panel, series in results:
        g = panel["gridPos"]
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        if panel["type"] in ("stat", "table"):
            rows = [(legend(t, s["metric"]), s["values"][-1][1]) for t, ss in series for s in ss]
            ax.axis("off")
            text = "\n".join(f"{name}: {float(v):g}" for name, v in rows) or "(none)"
            ax.text(0.02, 0.9, text, va="top", fontsize=9, family="monospace", transform=ax.transAxes)
            continue
        for template, found in series:
            for s in found:
                xs = [(float(t) - start) / 60 for t, _ in s["values"]]
                ys = [float(v) for _, v in s["values"]]
                ax.plot(xs, ys, linewidth=1.2, label=legend(template, s["metric"]))
        ax.set_xlabel("minutes", fontsize=7)
        ax.set_ylabel(unit, fontsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=4.0, help="how long to run the traffic")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard.png")
    args = parser.parse_args()
    if not PROMETHEUS.exists():
        raise SystemExit("prometheus is missing: bash hack/install-promtool.sh")
    board = json.loads(DASHBOARD.read_text())
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="portico-plot-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        cp = ControlPlane(bin_dir=find_binaries(ROOT), data_dir=tmp / "control-plane")
        cp.start()
        stop = threading.Event()
        try:
            kubectl = [str(find_binaries(ROOT) / "kubectl"), f"--kubeconfig={cp.kubeconfig}"]
            subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True)
            subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd", "--all"], check=True)
            queue_url = stack.enter_context(running_queue_service(tmp / "q.db"))
            webhook_port, metrics_port = free_port(), free_port()
            processes.append(spawn(operator_command(
                kubeconfig=cp.kubeconfig, queue_url=queue_url, namespaces=("default",),
                webhook_port=webhook_port, metrics_port=metrics_port,
            ), tmp / "operator.log"))  # fmt: skip
            subprocess.run(
                [*kubectl, "create", "secret", "generic", "payments-token", "--from-literal=token=s3cret"],
                check=True,
            )
            for name, source, job in TRIGGERS:
                manifest = {"apiVersion": "triggers.portico.dev/v1alpha1", "kind": "JobTrigger",
                            "metadata": {"name": name}, "spec": {"job": job, **source}}  # fmt: skip
                subprocess.run(
                    [*kubectl, "apply", "-f", "-"], input=json.dumps(manifest).encode(), check=True
                )
            config = tmp / "prometheus.yml"
            target = {"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"pod": "operator-0"}}
            config.write_text(json.dumps({
                "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
                "scrape_configs": [{"job_name": "portico", "honor_labels": True, "static_configs": [target]}],
            }))  # fmt: skip
            prom_port = free_port()
            prometheus_args = [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ]
            processes.append(spawn(prometheus_args, tmp / "prometheus.log"))
            wait_for_text(tmp / "prometheus.log", "Server is ready to receive web requests")
            start = time.time()
            sender = threading.Thread(
                target=traffic, args=(f"http://127.0.0.1:{webhook_port}", "default", stop)
            )
            time.sleep(5)
            sender.start()
            time.sleep(args.minutes * 60)
            stop.set()
            sender.join()
            time.sleep(4)
            end = time.time()
            prometheus = f"http://127.0.0.1:{prom_port}"
            results = []
            for panel in board["panels"]:
                if panel["type"] == "row":
                    continue
                series = []
                for target in panel["targets"]:
                    expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                    expr = expr.replace("$namespace", ".*").replace("$trigger", ".*")
                    series.append((target.get("legendFormat", ""), query_range(prometheus, expr, start, end)))
                results.append((panel, series))
            plot([p for p in board["panels"] if p["type"] == "row"], results, args.out, start)
            print(f"wrote {args.out}")
        finally:
            stop.set()
            for proc in reversed(processes):
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
