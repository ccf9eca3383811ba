"""Process plumbing of the test and benchmark harness."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from portico.testing.processes import LOWEST_PORT, CpuLimitError, cpu_limited, ephemeral_ports, free_port


def test_a_capped_process_sits_in_a_group_of_its_own_with_its_quota_and_leaves_it_after() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        try:
            with cpu_limited({"busy": child.pid}, 0.25):
                line = next(
                    entry
                    for entry in Path(f"/proc/{child.pid}/cgroup").read_text().splitlines()
                    if entry.split(":")[1] in ("cpu", "cpu,cpuacct", "")
                )
                group = line.split(":", 2)[2]
                assert "portico-bench-" in group and group.endswith("-busy")
                v1 = Path("/sys/fs/cgroup/cpu") / group.lstrip("/")
                v2 = Path("/sys/fs/cgroup") / group.lstrip("/")
                quota = (
                    (v1 / "cpu.cfs_quota_us").read_text().strip()
                    if (v1 / "cpu.cfs_quota_us").exists()
                    else (v2 / "cpu.max").read_text().split()[0]
                )
                assert quota == "25000", "a quarter of each 100 ms period"
        except CpuLimitError as exc:
            pytest.skip(str(exc))
        cgroup = Path(f"/proc/{child.pid}/cgroup").read_text()
        assert "portico-bench-" not in cgroup
    finally:
        child.kill()
        child.wait()


def test_free_ports_lie_outside_the_ephemeral_range_are_bindable_and_never_repeat() -> None:
    low, high = ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    outside = [p for p in ports if not low <= p <= high and p >= LOWEST_PORT]
    assert outside == ports, "an outgoing connection could take a port in the ephemeral range"
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("20000\t40000\n")
    assert ephemeral_ports(str(ranges)) == (20000, 40000)
    assert ephemeral_ports(str(tmp_path / "missing")) == (32768, 60999)
