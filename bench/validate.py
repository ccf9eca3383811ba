"""`portico validate` on hostile input: how fast a YAML alias bomb is refused and at what peak memory.

Each case runs the real command (`python -m portico validate -f FILE`) in its own process; the figures are
the time `portico validate` takes once its modules are imported (the same for every case) and the peak
resident memory of that process, imports included (ru_maxrss). The baseline in the same run is the same
command on a valid manifest, so the ratios show what refusing the bomb costs beyond validating a manifest.
Goal: an alias bomb refused within 1 s and 100 MB.

    .venv/bin/python bench/validate.py [--repeat 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALID = """apiVersion: triggers.portico.dev/v1alpha1
kind: JobTrigger
metadata: {name: nightly}
spec:
  job: {type: report.nightly}
  schedule: {cron: "0 2 * * *", timeZone: Europe/Berlin}
"""


def alias_bomb(levels: int = 12, width: int = 10) -> str:
    """`levels` anchors, each a list of `width` aliases to the previous: width**levels values expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def run_child(path: Path) -> tuple[float, int, int]:
    """Seconds, exit status and peak RSS (bytes) of one `portico validate` process."""
    code = (
        "import resource, sys, time\n"
        "import portico.operator.validate\n"  # imports are the same for every case: not timed
        "from portico.cli import main\n"
        "started = time.perf_counter()\n"
        f"status = main(['validate', '-f', {str(path)!r}])\n"
        "elapsed = time.perf_counter() - started\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(elapsed, status, rss, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    elapsed, status, rss = proc.stderr.strip().splitlines()[-1].split()
    return float(elapsed), int(status), int(rss)


def measure(name: str, text: str, repeat: int) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        runs = [run_child(path) for _ in range(repeat)]
    best = min(runs)
    return {
        "case": name,
        "bytes": len(text.encode()),
        "seconds": round(best[0], 4),
        "exit": best[1],
        "peak_rss_mb": round(max(r[2] for r in runs) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    started = time.perf_counter()
    baseline = measure("valid-manifest", VALID, args.repeat)
    bomb = measure("alias-bomb-1e12", alias_bomb(), args.repeat)
    for figure in (baseline, bomb):
        print(json.dumps({"bench": "validate", **figure}), flush=True)
    print(
        json.dumps(
            {
                "bench": "validate",
                "figure": "alias bomb refusal vs. a valid manifest",
                "validate_seconds_ratio": round(float(bomb["seconds"]) / float(baseline["seconds"]), 2),
                "peak_rss_ratio": round(float(bomb["peak_rss_mb"]) / float(baseline["peak_rss_mb"]), 2),
                "goal": "refused within 1 s and 100 MB",
                "met": float(bomb["seconds"]) < 1.0
                and float(bomb["peak_rss_mb"]) < 100
                and bomb["exit"] == 1,
                "total_seconds": round(time.perf_counter() - started, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
