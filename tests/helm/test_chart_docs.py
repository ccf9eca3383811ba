"""values.yaml is documented key by key, the chart README's table is generated from it, and
values.schema.json describes exactly the keys values.yaml has."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from types import ModuleType
from typing import Any

import jsonschema
import yaml

from tests.conftest import REPO_ROOT
from tests.helm.conftest import CHART_DIR

SCRIPT = REPO_ROOT / "hack" / "chart-readme.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_readme", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, sub in schema.get("properties", {}).items():
        out.add(f"{prefix}{key}")
        out |= schema_paths(sub, f"{prefix}{key}.")
    return out


def values_text() -> str:
    return (CHART_DIR / "values.yaml").read_text()


def test_every_value_is_documented_with_an_example() -> None:
    entries = load_script().documented_entries(values_text())
    documented = {e.path for e in entries}
    for leaf in leaves(yaml.safe_load(values_text())):
        parts = leaf.split(".")
        covered = any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1))
        assert covered, f"values.yaml: {leaf} has no `# --` description"
    for entry in entries:
        assert entry.description.endswith("."), f"{entry.path}: describe it in a full sentence"
        assert entry.example, f"{entry.path}: give an example"
        example = yaml.safe_load(entry.example)
        assert isinstance(example, dict) and entry.path.split(".")[-1] in example, entry.path


def test_readme_values_table_is_current() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_schema_accepts_the_defaults_and_knows_every_key() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load(values_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values)
    known = schema_paths(schema)
    for leaf in leaves(values):
        parts = leaf.split(".")
        assert any(".".join(parts[:i]) in known for i in range(len(parts), 0, -1)), leaf
    documented = {e.path for e in load_script().documented_entries(values_text())}
    parents = {".".join(p.split(".")[:i]) for p in documented for i in range(1, p.count(".") + 1)}

    def described(path: str) -> bool:
        parts = path.split(".")
        return path in parents or any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1))

    stray = sorted(p for p in known if p != "global" and not described(p))
    assert not stray, f"schema keys missing from values.yaml: {stray}"
