"""The chart's CRD template is rendered from crds/ (the single source) and renders back to the same CRD."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.conftest import CRDS_DIR, REPO_ROOT
from tests.helm.conftest import CHART_DIR, QUEUE_URL, Helm, Render, one, set_args

SCRIPT = REPO_ROOT / "hack" / "sync-chart-crds.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_chart_crds", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_crds() -> dict[str, dict[str, Any]]:
    crds = {}
    for path in CRDS_DIR.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds[doc["metadata"]["name"]] = doc
    return crds


def test_chart_templates_match_crds_folder() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, f"{proc.stderr}\nrun `make crds` (hack/sync-chart-crds.py)"


def test_rendered_crds_equal_the_source(render: Render) -> None:
    sources = source_crds()
    assert sources, "crds/ holds no CustomResourceDefinition"
    rendered = {o["metadata"]["name"]: o for o in render() if o["kind"] == "CustomResourceDefinition"}
    assert sorted(rendered) == sorted(sources)
    for name, crd in sources.items():
        assert rendered[name]["spec"] == crd["spec"], name
        assert rendered[name]["apiVersion"] == crd["apiVersion"]
        for key, value in (crd["metadata"].get("labels") or {}).items():
            assert rendered[name]["metadata"]["labels"][key] == value


def test_check_fails_when_the_source_changes(tmp_path: Path) -> None:
    script = load_script()
    crd = next(iter(source_crds().values()))
    changed = copy.deepcopy(crd)
    changed["spec"]["names"]["shortNames"] = ["jtx"]
    assert script.render_template(changed, "crds/x.yaml") != script.render_template(crd, "crds/x.yaml")


def test_template_syntax_in_descriptions_is_printed_literally(helm: Helm, tmp_path: Path) -> None:
    """A description mentioning `{{ .Values }}` must reach the API server as text, not break the chart."""
    script = load_script()
    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart)
    crd = copy.deepcopy(next(iter(source_crds().values())))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["description"] = "Payload templates such as {{ .Values.x }} and }} stay text."
    for old in (chart / "templates").glob("*-crd.yaml"):
        old.unlink()
    (chart / "templates" / "jobtrigger-crd.yaml").write_text(script.render_template(crd, "crds/x.yaml"))
    out = helm("template", "p", str(chart), *set_args({"queueService.url": QUEUE_URL})).stdout
    rendered = one([d for d in yaml.safe_load_all(out) if d], "CustomResourceDefinition")
    assert rendered["spec"] == crd["spec"]
