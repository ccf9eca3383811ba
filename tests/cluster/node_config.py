"""The configuration files of the node's components, as pure functions of the node's addresses and
paths (tests/cluster/node.py writes them and starts the processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

NODE_NAME = "portico-node"
POD_CIDR = "10.202.0.0/24"
POD_GATEWAY = "10.202.0.1"
SERVICE_CIDR = "10.0.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "portico.local/pause:1"


def cni_config(d: Path) -> dict[str, Any]:
    """A bridge with host-local addresses; loopback is added by containerd itself."""
    return {
        "cniVersion": "0.4.0",
        "name": "portico",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "portico0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(d / "cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_config(d: Path, socket: Path, cni_bin: str, restrict_oom_score_adj: bool) -> str:
    """containerd with its own root, state and socket, runc with cgroupfs, the node's CNI config."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return f"""version = 2
root = "{d / "containerd-root"}"
state = "{d / "containerd-state"}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  restrict_oom_score_adj = {str(restrict_oom_score_adj).lower()}
{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
{cri[:-1]}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri[:-1]}.containerd.runtimes.runc.options]
  SystemdCgroup = false
{cri[:-1]}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{d / "cni"}"
"""


def kubelet_config(address: str, socket: Path, resolv_conf: Path) -> dict[str, Any]:
    """cgroupfs (PID 1 is not systemd everywhere), swap allowed, the node's CoreDNS as cluster DNS, an
    empty host resolv.conf so Pods never get the host's resolvers, eviction only in earnest."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "clusterDNS": [address],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "failCgroupV1": False,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    """iptables mode; every Service connection masqueraded, so replies between Pods on the bridge go
    back through the node; conntrack sysctls left alone (not writable in a network namespace)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": True},
    }


def corefile(address: str, kubeconfig: Path) -> str:
    """Cluster names from the API server, on the node's address; nothing is forwarded elsewhere."""
    return f""".:53 {{
    bind {address}
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} portico
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
