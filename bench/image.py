"""Image build benchmark: the size of the image built from the Dockerfile, and how long `docker build`
takes with every layer cached, after a change to one source file (the dependency layer stays cached),
and with no cache at all (the Python base stays: it is made once per machine by hack/build-image.sh).
The fresh builds are compared against the cached one in the same run. One JSON line per figure.

    python bench/image.py [--skip-no-cache] [--fresh-base]

`--fresh-base` first times what a fresh machine does once the daemon runs: the base made again with
mmdebstrap and the image built on it (`hack/build-image.sh`, both caches missed).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ("Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml", "README.md")


def emit(metric: str, value: float, **extra: Any) -> None:
    print(json.dumps({"bench": "image", "metric": metric, "value": round(value, 3), **extra}), flush=True)


def script(name: str) -> str:
    proc = subprocess.run(["bash", str(ROOT / "hack" / name)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench/image.py: hack/{name} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip().splitlines()[-1]


def docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=os.environ)
    if proc.returncode != 0:
        sys.exit(f"bench/image.py: docker {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def timed_build(context: Path, base: str, tag: str, *extra: str) -> float:
    started = time.monotonic()
    docker(
        "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}", *extra, "-t", tag, str(context)
    )  # fmt: skip
    return time.monotonic() - started


def copy_context(dest: Path) -> None:
    for name in CONTEXT:
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "operator", dest / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-no-cache", action="store_true", help="skip the build without cache")
    parser.add_argument("--fresh-base", action="store_true", help="also time making the base and the image")
    args = parser.parse_args()
    os.environ["DOCKER_HOST"] = script("docker-daemon.sh")
    os.environ["DOCKER_BUILDKIT"] = "0"
    image = script("build-image.sh")
    if args.fresh_base:
        old_base = json.loads(docker("image", "inspect", image))[0]["Config"]["Labels"]["dev.portico.base"]
        docker("rmi", image, old_base)
        started = time.monotonic()
        image = script("build-image.sh")
        emit("build_fresh_base_and_image_seconds", time.monotonic() - started, image=image)
    info = json.loads(docker("image", "inspect", image))[0]
    base = info["Config"]["Labels"]["dev.portico.base"]
    base_size = json.loads(docker("image", "inspect", base))[0]["Size"]
    emit("image_size_mb", info["Size"] / 1e6, image=image)
    emit("base_size_mb", base_size / 1e6, base=base)

    tag = f"portico/portico-triggers:bench-{uuid.uuid4().hex[:8]}"
    dangling_before = set(docker("images", "--quiet", "--filter", "dangling=true").split())
    with tempfile.TemporaryDirectory(prefix="portico-bench-image-") as tmp:
        context = Path(tmp)
        copy_context(context)
        try:
            cached = timed_build(context, base, tag)
            emit("build_cached_seconds", cached)
            with (context / "operator" / "portico" / "__init__.py").open("a") as f:
                f.write(f"# bench {uuid.uuid4().hex}\n")
            source = timed_build(context, base, tag)
            emit("build_source_change_seconds", source, vs_cached=round(source / cached, 1))
            if not args.skip_no_cache:
                fresh = timed_build(context, base, tag, "--no-cache")
                emit("build_no_cache_seconds", fresh, vs_cached=round(fresh / cached, 1))
        finally:
            subprocess.run(["docker", "rmi", tag], capture_output=True)
            # Only this run's leftovers: older untagged stages are the build cache of the real image.
            dangling = set(docker("images", "--quiet", "--filter", "dangling=true").split())
            for leftover in dangling - dangling_before:
                subprocess.run(["docker", "rmi", leftover], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
