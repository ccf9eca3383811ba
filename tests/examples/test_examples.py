"""The shipped examples: one per source, valid for `portico validate`, accepted by the real API server
without any field pruned, and self-contained (every referenced Secret key is defined beside it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from portico.operator.resource import parse_spec
from portico.operator.targets import TARGET_CLASSES
from portico.sources.catalog import SOURCE_CLASSES
from tests.conftest import EXAMPLES_DIR, Kubectl

EXAMPLE_FILES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def triggers() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in EXAMPLE_FILES for d in documents(p) if d["kind"] == "JobTrigger"]


def secret_refs(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k.endswith("ecretRef") and isinstance(v, dict)]
        return found + [ref for v in node.values() for ref in secret_refs(v)]
    if isinstance(node, list):
        return [ref for v in node for ref in secret_refs(v)]
    return []


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portico", "validate", *[a for p in paths for a in ("-f", str(p))]],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_there_is_one_example_per_source() -> None:
    sources = {parse_spec(doc["spec"], SOURCE_CLASSES).source for _, doc in triggers()}
    assert sources == {source.name for source in SOURCE_CLASSES}


def test_there_is_one_example_per_target() -> None:
    targets = {parse_spec(doc["spec"], SOURCE_CLASSES).target for _, doc in triggers()}
    assert targets == {target.name for target in TARGET_CLASSES}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_commented_and_names_its_objects(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#"), f"{path.name} should open with a comment saying what it shows"
    for doc in documents(path):
        assert doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"], "examples apply to the namespace the user chooses"


def test_portico_validate_accepts_every_example() -> None:
    proc = validate(EXAMPLES_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(triggers())} JobTrigger(s) checked, 0 invalid" in proc.stdout


def test_portico_validate_rejects_a_broken_example(tmp_path: Path) -> None:
    path, doc = next((p, d) for p, d in triggers() if "schedule" in d["spec"])
    doc = json.loads(json.dumps(doc))
    doc["spec"]["schedule"]["cron"] = "61 * * * *"
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(doc))
    proc = validate(broken)
    assert proc.returncode == 1
    assert f"{broken}: JobTrigger/{doc['metadata']['name']}: spec.schedule.cron" in proc.stdout


@pytest.mark.parametrize(("path", "doc"), triggers(), ids=lambda x: x.name if isinstance(x, Path) else "")
def test_referenced_secrets_are_defined_beside_the_trigger(path: Path, doc: dict[str, Any]) -> None:
    secrets = {d["metadata"]["name"]: d for d in documents(path) if d["kind"] == "Secret"}
    for ref in secret_refs(doc["spec"]):
        assert ref["name"] in secrets, f"{path.name}: Secret {ref['name']} is referenced but not defined"
        secret = secrets[ref["name"]]
        assert ref["key"] in {**secret.get("stringData", {}), **secret.get("data", {})}


@pytest.mark.e2e
def test_server_side_dry_run_accepts_every_example_without_pruning(kubectl: Kubectl) -> None:
    """The API server validates against the CRD schema (types, enums, CEL rules) and silently drops
    fields it does not know; the dry-run's answer must hold every field the example sets."""
    proc = kubectl("apply", "--server-side", "--dry-run=server", "-f", str(EXAMPLES_DIR), "-o", "json")
    answer = json.loads(proc.stdout)
    returned = {(o["kind"], o["metadata"]["name"]): o for o in answer.get("items", [answer])}
    for path in EXAMPLE_FILES:
        for doc in documents(path):
            obj = returned[(doc["kind"], doc["metadata"]["name"])]
            if doc["kind"] == "JobTrigger":
                assert_contains(obj["spec"], doc["spec"], f"{path.name}: spec")
    assert kubectl("get", "jobtriggers", "-o", "name").stdout.strip() == "", "dry-run must not create"


def assert_contains(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} was pruned by the API server"
            assert_contains(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_contains(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
