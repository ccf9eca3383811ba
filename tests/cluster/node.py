"""A one-node Kubernetes cluster that runs real Pods, built from the Go modules and Debian's packages.

Everything runs in a network namespace of its own (`portico-node-<pid>`), joined to the host by a veth
pair: etcd and kube-apiserver (the project's ControlPlane), kube-controller-manager, kube-scheduler,
containerd (Debian) with runc and the CNI bridge plugin, kubelet, kube-proxy (iptables mode) and CoreDNS.
Processes join only the network namespace (`nsenter --net`), so kubelet's volume mounts are seen by
containerd. The node's address is the namespace's end of the veth; the test process reaches the API
server there, and Service addresses from inside the namespace (`Node.run`).

`Node.start()` raises NodeError with the reason whenever a part cannot start (not root, a missing
binary, a component exiting, the node never becoming Ready).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portico.testing.control_plane import ControlPlane
from portico.testing.processes import die_with_parent, stop_process_group
from tests.cluster.node_config import (
    NODE_NAME,
    PAUSE_IMAGE,
    SERVICE_CIDR,
    cni_config,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
HTTP_CLIENT = """
import json, sys, urllib.error, urllib.request
r = json.load(sys.stdin)
data = r["body"].encode() or None
req = urllib.request.Request(r["url"], data=data, method=r["method"], headers=r["headers"])
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        status, body = resp.status, resp.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
json.dump({"status": status, "body": body.decode()}, sys.stdout)
"""


class NodeError(RuntimeError):
    """The node could not start; the message says which part and why."""


def build_node_binaries() -> Path:
    """kubelet, kube-proxy, kube-controller-manager, kube-scheduler and coredns (cached build)."""
    env_dir = os.environ.get("PORTICO_NODE_BIN")
    if env_dir:
        return Path(env_dir)
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-node.sh")],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise NodeError(f"building the node components failed: {out.stderr.strip().splitlines()[-1:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def ensure_debian_packages() -> None:
    """containerd, runc and the CNI plugins from Debian, installed when missing (needs root)."""
    missing = [
        pkg
        for pkg, present in (
            ("containerd", shutil.which("containerd")),
            ("runc", shutil.which("runc")),
            ("containernetworking-plugins", any(Path(d, "bridge").exists() for d in CNI_BIN_DIRS)),
        )
        if not present
    ]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise NodeError(f"{', '.join(missing)} missing and there is no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        done = subprocess.run(install, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise NodeError(f"apt-get install {' '.join(missing)} failed: {done.stderr.strip()[-300:]}")


def free_index() -> int:
    """The first veth index (`pn<index>h`) with no link on the host."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    used = {int(m) for m in re.findall(r"\bpn(\d+)h[@:]", links)}
    return next(i for i in range(20, 250) if i not in used)


def remove_stale_namespaces() -> None:
    """Node namespaces of runs that were killed before they could clean up (their process is gone).
    Deleting a namespace also removes its veth pair."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for name in names:
        m = re.fullmatch(r"portico-node-(\d+)", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@dataclass
class Node:
    """The node in `data_dir`. `index` picks the addresses (10.201.<index>.0/30) and the veth names;
    by default the first one no other node on the machine uses, so runs can coexist."""

    control_plane_bin: Path
    node_bin: Path
    data_dir: Path
    index: int = field(default_factory=lambda: free_index())
    ready_timeout: float = 180.0

    control_plane: ControlPlane | None = field(default=None, init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)

    @property
    def restrict_oom_score_adj(self) -> bool:
        """Without CAP_SYS_RESOURCE (some sandboxes and VMs), runc cannot give Pods the negative OOM
        scores kubelet asks for; containerd then keeps them no lower than its own."""
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
        cap_sys_resource = 24
        return not caps & (1 << cap_sys_resource)

    @property
    def netns(self) -> str:
        return f"portico-node-{os.getpid()}"

    @property
    def host_address(self) -> str:
        return f"10.201.{self.index}.1"

    @property
    def address(self) -> str:
        return f"10.201.{self.index}.2"

    @property
    def containerd_socket(self) -> Path:
        return self.data_dir / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubeconfig

    @property
    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, images: list[str]) -> None:
        """Start every component and load `images` (references in the project's Docker daemon)."""
        if os.geteuid() != 0:
            raise NodeError("a node needs root (network namespace, containerd, kubelet, iptables)")
        for tool in ("ip", "nsenter", "iptables", "gcc", "docker"):
            if not shutil.which(tool):
                raise NodeError(f"{tool} is not installed")
        ensure_debian_packages()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._network()
            self.control_plane = ControlPlane(
                self.control_plane_bin,
                self.data_dir / "control-plane",
                api_port=6443,
                address=self.address,
                command_prefix=self.nsenter,
                service_account_admission=True,
                extra_apiserver_args=["--kubelet-preferred-address-types=InternalIP"],
            )
            self.control_plane.start()
            self._controllers()
            self._containerd()
            self._load_images(images)
            self._kubelet()
            self._kube_proxy()
            self._coredns()
            self._wait_node_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in ("kubelet", "kube-proxy", "coredns", "kube-scheduler", "kube-controller-manager"):
            self._terminate(name)
        self._remove_containers()
        self._terminate("containerd")
        if self.control_plane is not None:
            self.control_plane.stop()
        self._unmount_all()
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)
        self._remove_pod_cgroups()

    # --- helpers for tests --------------------------------------------------------------------

    def run(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the node's network namespace (which routes Service addresses)."""
        return subprocess.run(
            [*self.nsenter, *args], input=input, capture_output=True, text=True, timeout=timeout
        )

    def http(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """An HTTP request from inside the node's namespace (Service addresses route there); returns the
        status and the decoded JSON body (None when empty)."""
        request = json.dumps({"method": method, "url": url, "body": body.decode(), "headers": headers or {}})
        done = self.run(sys.executable, "-c", HTTP_CLIENT, input=request, timeout=30)
        if done.returncode != 0:
            raise NodeError(f"{method} {url} from the node failed: {done.stderr.strip()[-500:]}")
        answer = json.loads(done.stdout)
        return answer["status"], json.loads(answer["body"]) if answer["body"] else None

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.data_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- parts --------------------------------------------------------------------------------

    def _sh(self, *args: str, what: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(list(args), capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise NodeError(f"{what} failed: {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _network(self) -> None:
        ns, host_if, node_if = self.netns, f"pn{self.index}h", f"pn{self.index}n"
        remove_stale_namespaces()
        self._sh("ip", "netns", "add", ns, what="creating the node's network namespace")
        self._sh(
            "ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if, what="creating a veth pair"
        )
        self._sh("ip", "link", "set", node_if, "netns", ns, what="moving the veth into the namespace")
        self._sh(
            "ip", "addr", "add", f"{self.host_address}/30", "dev", host_if, what="addressing the host side"
        )
        self._sh("ip", "link", "set", host_if, "up", what="raising the host side")
        inside = ["ip", "netns", "exec", ns]
        self._sh(*inside, "ip", "link", "set", "lo", "up", what="raising lo in the namespace")
        self._sh(
            *inside, "ip", "addr", "add", f"{self.address}/30", "dev", node_if, what="addressing the node"
        )
        self._sh(*inside, "ip", "link", "set", node_if, "up", what="raising the node side")
        self._sh(
            *inside, "sysctl", "-qw", "net.ipv4.ip_forward=1", what="enabling forwarding in the namespace"
        )
        # The node's own connections to Service addresses need a route to reach kube-proxy's DNAT rules.
        self._sh(
            *inside, "ip", "route", "add", SERVICE_CIDR, "dev", node_if, what="routing Service addresses"
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.data_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [*self.nsenter, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise NodeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def _wait(self, what: str, probe: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if probe():
                return
            time.sleep(0.25)
        raise NodeError(f"{what} not ready within {timeout:.0f} s")

    def _controllers(self) -> None:
        assert self.control_plane is not None
        pki = self.control_plane.pki_dir
        self._spawn(
            "kube-controller-manager",
            [
                str(self.node_bin / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.node_bin / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def _containerd(self) -> None:
        d = self.data_dir
        cni_bin = next(x for x in CNI_BIN_DIRS if Path(x, "bridge").exists())
        (d / "cni").mkdir(exist_ok=True)
        (d / "cni" / "10-portico.conflist").write_text(json.dumps(cni_config(d)))
        (d / "containerd.toml").write_text(
            containerd_config(d, self.containerd_socket, cni_bin, self.restrict_oom_score_adj)
        )
        self._spawn("containerd", ["containerd", "--config", str(d / "containerd.toml")])
        self._wait(
            "containerd",
            lambda: (
                subprocess.run(
                    ["ctr", "--address", str(self.containerd_socket), "version"], capture_output=True
                ).returncode
                == 0
            ),
        )

    def _pause_image(self, env: dict[str, str]) -> str:
        """A one-file image holding a static pause binary, cached in the Docker daemon by source hash."""
        import hashlib

        source = REPO_ROOT / "hack" / "node" / "pause.c"
        ref = f"{PAUSE_IMAGE}-{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}"
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True, env=env).returncode == 0:
            return ref
        build = self.data_dir / "pause-build"
        build.mkdir(exist_ok=True)
        self._sh("gcc", "-static", "-O2", "-o", str(build / "pause"), str(source), what="compiling pause")
        tar = build / "pause.tar"
        self._sh("tar", "-C", str(build), "-cf", str(tar), "pause", what="packing pause")
        done = subprocess.run(
            ["docker", "import", "--change", 'ENTRYPOINT ["/pause"]', str(tar), ref],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode != 0:
            raise NodeError(f"docker import of the pause image failed: {done.stderr.strip()}")
        return ref

    def _load_images(self, images: list[str]) -> None:
        docker_host = subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / "docker-daemon.sh")], capture_output=True, text=True
        )
        if docker_host.returncode != 0:
            raise NodeError(f"no Docker daemon for the images: {docker_host.stderr.strip()}")
        env = {**os.environ, "DOCKER_HOST": docker_host.stdout.strip()}
        pause = self._pause_image(env)
        self._sh("docker", "tag", pause, PAUSE_IMAGE, what="tagging the pause image", env=env)
        for ref in [PAUSE_IMAGE, *images]:
            save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE, env=env)
            load = subprocess.run(
                ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "images", "import", "-"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
            )
            save.wait()
            if save.returncode != 0 or load.returncode != 0:
                raise NodeError(f"loading {ref} into containerd failed: {load.stderr.strip()}")

    def _kubelet(self) -> None:
        assert self.control_plane is not None
        d = self.data_dir
        (d / "resolv.conf").write_text("")
        config = kubelet_config(self.address, self.containerd_socket, d / "resolv.conf")
        (d / "kubelet.yaml").write_text(json.dumps(config))
        self._spawn(
            "kubelet",
            [
                str(self.node_bin / "kubelet"),
                f"--config={d / 'kubelet.yaml'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={d / 'kubelet'}",
                f"--cert-dir={d / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.address}",
                "--v=1",
            ],
        )

    def _kube_proxy(self) -> None:
        d = self.data_dir
        config = kube_proxy_config(self.kubeconfig)
        (d / "kube-proxy.yaml").write_text(json.dumps(config))
        self._spawn(
            "kube-proxy", [str(self.node_bin / "kube-proxy"), f"--config={d / 'kube-proxy.yaml'}", "--v=1"]
        )

    def _coredns(self) -> None:
        d = self.data_dir
        (d / "Corefile").write_text(corefile(self.address, self.kubeconfig))
        self._spawn("coredns", [str(self.node_bin / "coredns"), "-conf", str(d / "Corefile")])

    def _wait_node_ready(self) -> None:
        assert self.control_plane is not None
        cp = self.control_plane

        def ready() -> bool:
            try:
                node = cp.request("GET", f"/api/v1/nodes/{NODE_NAME}")
            except Exception:
                return False
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node.get("status", {}).get("conditions", [])
            )

        try:
            self._wait("node", ready, timeout=self.ready_timeout)
        except NodeError as exc:
            raise NodeError(f"{exc}; kubelet log:\n{self.log_tail('kubelet')}") from None

    # --- teardown -----------------------------------------------------------------------------

    def _terminate(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            stop_process_group(proc, timeout=15)

    def _remove_containers(self) -> None:
        if "containerd" not in self.processes:
            return
        ctr = ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io"]
        pod_netns = self._pod_network_namespaces(ctr)
        tasks = subprocess.run([*ctr, "tasks", "ls", "-q"], capture_output=True, text=True, timeout=30)
        for task in tasks.stdout.split():
            subprocess.run(
                [*ctr, "tasks", "kill", "-a", "-s", "SIGKILL", task], capture_output=True, timeout=30
            )
        for task in tasks.stdout.split():
            for _ in range(20):
                if (
                    subprocess.run(
                        [*ctr, "tasks", "delete", task], capture_output=True, timeout=30
                    ).returncode
                    == 0
                ):
                    break
                time.sleep(0.25)
        containers = subprocess.run(
            [*ctr, "containers", "ls", "-q"], capture_output=True, text=True, timeout=30
        )
        for container in containers.stdout.split():
            subprocess.run([*ctr, "containers", "delete", container], capture_output=True, timeout=30)
        for name in pod_netns:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)

    @staticmethod
    def _pod_network_namespaces(ctr: list[str]) -> set[str]:
        """The named network namespaces containerd made for the Pods (it removes them only when a Pod's
        sandbox is removed through the CRI, which a stopped kubelet no longer does)."""
        names: set[str] = set()
        listed = subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True, timeout=30)
        for container in listed.stdout.split():
            info = subprocess.run([*ctr, "containers", "info", container], capture_output=True, text=True)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                for ns in json.loads(info.stdout)["Spec"]["linux"]["namespaces"]:
                    path = ns.get("path", "")
                    if ns["type"] == "network" and "/netns/cni-" in path:
                        names.add(Path(path).name)
        return names

    def _unmount_all(self) -> None:
        prefix = str(self.data_dir) + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    def _remove_pod_cgroups(self) -> None:
        root = Path("/sys/fs/cgroup")
        candidates = [root / "kubepods"] + [c / "kubepods" for c in root.iterdir() if c.is_dir()]
        for top in candidates:
            if not top.is_dir():
                continue
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
