"""Process plumbing of the test and benchmark harness."""

import subprocess
import sys
from pathlib import Path

import pytest

from portico.testing.processes import CpuLimitError, cpu_limited


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
