"""Child processes for tests, benchmarks and `make run`: free loopback ports, children that die with
their parent, stopping a child's whole process group, and the reference queue service as a subprocess."""

import contextlib
import ctypes
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LISTENING = re.compile(r"listening on (http://\S+)")
"""The line a server of ours prints once it is bound (`queue service listening on http://...`)."""


LOWEST_PORT = 10000
_handed_out: set[int] = set()


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux's default if unreadable)."""
    try:
        low, high = (int(part) for part in Path(path).read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port() -> int:
    """A loopback port free now, for a server started next. It lies outside the ephemeral range, so no
    outgoing connection can take it between this check and the server's bind (a port from `bind(0)`
    could, and the server then failed with "address already in use"), and it is never handed out twice
    in one process."""
    low, high = ephemeral_ports()
    ranges = [r for r in (range(LOWEST_PORT, low), range(high + 1, 65536)) if len(r) > 0]
    choose = random.SystemRandom()
    for _ in range(200):
        port = choose.choice(choose.choice(ranges)) if ranges else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            bound: int = s.getsockname()[1]
        _handed_out.add(bound)
        return bound
    raise RuntimeError("no free loopback port outside the ephemeral range")


def die_with_parent() -> None:
    """For `preexec_fn`: SIGKILL the child when the process that started it dies, so an interrupted run
    never leaves a server behind. (The kernel's "parent" here is the thread that forked.)"""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def stop_process_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group `proc` leads, wait, and SIGKILL the group if it does not exit in time.

    The group is killed even after the leader exited, so no grandchild (erl_child_setup, a postgres
    backend, a container shim) outlives it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "pid %d did not exit after %s; killing its group", proc.pid, signal.Signals(sig).name
            )
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def listening_process(command: list[str], *, timeout: float = 60) -> Iterator[str]:
    """Run a server that prints `... listening on URL` on stdout; yield the URL; stop it afterwards."""
    with listening_server(command, timeout=timeout) as (url, _):
        yield url


@contextlib.contextmanager
def listening_server(
    command: list[str], *, timeout: float = 60
) -> Iterator[tuple[str, "subprocess.Popen[str]"]]:
    """`listening_process`, yielding the process too (a benchmark reads its CPU time)."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + timeout
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = LISTENING.search(line)
            url = found.group(1) if found else None
        if url is None:
            raise RuntimeError(f"{' '.join(command[:4])} did not start")
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queue_service_command(db_path: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "portico", "queue-service", "--port", "0", "--db", str(db_path), *args]


@contextlib.contextmanager
def running_queue_service(db_path: Path | str, *args: str) -> Iterator[str]:
    """The reference queue service as a subprocess on a free port; yields its base URL."""
    with listening_process(queue_service_command(db_path, "--log-level", "WARNING", *args)) as url:
        yield url


def operator_command(
    *,
    kubeconfig: Path | str,
    queue_url: str,
    namespaces: tuple[str, ...] = (),
    webhook_port: int = 0,
    health_port: int | None = None,
    metrics_port: int | None = None,
    log_level: str = "INFO",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """`portico operator` on loopback, with readable logs; ports default to free ones."""
    return [
        sys.executable, "-m", "portico", "operator",
        *(arg for namespace in namespaces for arg in ("--namespace", namespace)),
        "--kubeconfig", str(kubeconfig),
        "--queue-url", queue_url,
        "--webhook-host", "127.0.0.1", "--webhook-port", str(webhook_port),
        "--health-host", "127.0.0.1", "--health-port", str(health_port or free_port()),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port or free_port()),
        "--log-format", "text", "--log-level", log_level,
        *extra,
    ]  # fmt: skip


def worker_command(
    *,
    queue_url: str,
    handlers: str,
    queues: tuple[str, ...] = ("default",),
    concurrency: int = 4,
    lease_seconds: float = 30.0,
    metrics_port: int = 0,
    log_format: str = "json",
    log_level: str = "INFO",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """`portico worker` on loopback; it prints `worker metrics listening on URL` once serving."""
    return [
        sys.executable, "-m", "portico", "worker",
        "--queue-url", queue_url,
        "--handlers", handlers,
        *(arg for queue in queues for arg in ("--queue", queue)),
        "--concurrency", str(concurrency),
        "--lease-seconds", str(lease_seconds),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
        "--log-format", log_format, "--log-level", log_level,
        *extra,
    ]  # fmt: skip


class CpuLimitError(RuntimeError):
    """This machine offers no CPU controller this process may use (cgroup v1 `cpu` or v2 `cpu.max`)."""


@contextlib.contextmanager
def cpu_limited(pids: dict[str, int], cores: float) -> Iterator[None]:
    """Cap each process at `cores` CPUs, each in a control group of its own: how a benchmark gives every
    replica an equal, dedicated slice of the machine, as if each ran on a node of its own."""
    root = _cpu_cgroup_root()
    period = 100_000
    made: list[Path] = []
    try:
        for name, pid in pids.items():
            group = root / f"portico-bench-{os.getpid()}-{name}"
            group.mkdir()
            made.append(group)
            if (group / "cpu.max").exists():
                (group / "cpu.max").write_text(f"{int(cores * period)} {period}")
            else:
                (group / "cpu.cfs_period_us").write_text(str(period))
                (group / "cpu.cfs_quota_us").write_text(str(int(cores * period)))
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for group in made:
            with contextlib.suppress(OSError):
                for member in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (root / "cgroup.procs").write_text(member)
                group.rmdir()


def _cpu_cgroup_root() -> Path:
    for root in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")):
        writable = os.access(root, os.W_OK)
        if writable and ((root / "cpu.cfs_quota_us").exists() or "cpu" in _controllers(root)):
            return root
    raise CpuLimitError(
        "no writable cgroup CPU controller (cgroup v1 cpu, or v2 with cpu enabled); run as root"
    )


def _controllers(root: Path) -> list[str]:
    try:
        return (root / "cgroup.subtree_control").read_text().split()
    except OSError:
        return []
