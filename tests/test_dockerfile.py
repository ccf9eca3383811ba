"""Invariants of the container image that can be checked without Docker: a multi-stage build on a
base pinned by version, dependencies from the lock only, a numeric non-root user that matches the
chart, and nothing from the build stage in the final one but the virtualenv. (tests/image/ builds the
image and runs it as the chart does.)"""

from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
LOCK = REPO_ROOT / "requirements.lock"
BUILD_TOOLS = re.compile(r"\b(apt-get|apk|gcc|g\+\+|make|build-essential|pip install)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def load_lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lock_requirements", REPO_ROOT / "hack" / "lock-requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[name.strip().lower()] = version.strip()
    return pins


def test_multi_stage_on_a_base_pinned_by_version() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue
        image, _, tag = stage.base.partition(":")
        assert image == "python", stage.base
        assert re.fullmatch(r"3\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", tag), (
            f"{stage.base}: pin the full Python version, not a floating tag"
        )
    assert len({s.base for s in stages if s.name is None or s is stages[0]}) == 1, (
        "build and final stage must share the base, or the virtualenv's interpreter path breaks"
    )


def test_final_stage_runs_portico_as_a_numeric_non_root_user() -> None:
    _, stages = parse()
    final = stages[-1]
    users = final.values("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric UID (runAsNonRoot can only verify those)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert final.values("ENTRYPOINT") == ['["portico"]']
    env = " ".join(final.values("ENV"))
    assert "PORTICO_LOG_FORMAT=json" in env
    chart = yaml.safe_load((REPO_ROOT / "helm" / "portico-triggers" / "values.yaml").read_text())
    assert chart["podSecurityContext"]["runAsUser"] == int(uid)


def test_final_stage_has_no_build_tools() -> None:
    _, stages = parse()
    final = stages[-1]
    for keyword, args in final.instructions:
        assert keyword != "RUN" or not BUILD_TOOLS.search(args), f"final stage runs build tooling: {args}"
        if keyword == "COPY":
            words = shlex.split(args)
            assert any(w.startswith("--from=") for w in words), f"final stage copies from the context: {args}"


def test_dependencies_come_from_the_lock_without_resolution() -> None:
    _, stages = parse()
    installs = [args for s in stages for args in s.values("RUN") if "pip install" in args]
    assert any("-r requirements.lock" in a and "--no-deps" in a for a in installs), installs
    for command in installs:
        assert "--no-deps" in command, (
            f"every install must be --no-deps, or pip resolves new versions: {command}"
        )


def test_lock_pins_every_runtime_dependency() -> None:
    pins = locked()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"requirements.lock lacks {name}: run hack/lock-requirements.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement.specifier}"
        )


def test_lock_holds_the_whole_dependency_closure() -> None:
    script = load_lock_script()
    missing = sorted(set(script.closure()) - set(locked()))
    assert not missing, f"requirements.lock lacks {missing}: run hack/lock-requirements.py"
    test_only = {"pytest", "hypothesis", "mypy", "ruff", "schemathesis"}
    assert not test_only & set(locked()), "test tools do not belong in the image"


@pytest.mark.parametrize("needed", ["requirements.lock", "pyproject.toml", "README.md", "operator/"])
def test_dockerignore_admits_only_what_the_build_needs(needed: str) -> None:
    lines = [ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "start from nothing, so .venv, .git and local databases never reach the daemon"
    assert f"!{needed}" in rules
