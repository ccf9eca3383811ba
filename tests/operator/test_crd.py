"""The CRD and the models are one shape: the committed CRD is exactly what the models generate, every
model field is in the schema (the API server would prune it silently otherwise), and every field
the schema requires is in the model."""

from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel

from portico.operator.crd import build_crd, render_crd
from portico.operator.resource import JobTriggerStatus, spec_model
from portico.sources.catalog import SOURCE_CLASSES

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "jobtrigger.yaml"


def committed_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_committed_crd_is_generated_from_the_models() -> None:
    assert CRD_FILE.read_text() == render_crd(build_crd(SOURCE_CLASSES)), "run `make crds`"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _walk(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    problems = []
    props = schema.get("properties", {})
    aliases = set()
    for name, info in model.model_fields.items():
        alias = info.alias or name
        aliases.add(alias)
        if alias not in props:
            problems.append(f"{path}.{alias}: in the model, missing from the CRD (would be pruned)")
            continue
        if not props[alias].get("description"):
            problems.append(f"{path}.{alias}: no description")
        nested = _nested_model(info.annotation)
        prop = props[alias]
        if get_origin(info.annotation) is list or prop.get("type") == "array":
            prop = prop.get("items", {})
        if nested is not None:
            problems += _walk(nested, prop, f"{path}.{alias}")
    for required in schema.get("required", []):
        if required not in aliases:
            problems.append(f"{path}.{required}: required by the CRD, missing from the model")
    for prop in props:
        if prop not in aliases:
            problems.append(f"{path}.{prop}: in the CRD, missing from the model")
    return problems


def test_every_model_field_is_in_the_schema_and_back() -> None:
    schema = committed_schema()
    problems = _walk(spec_model(SOURCE_CLASSES), schema["properties"]["spec"], "spec")
    problems += _walk(JobTriggerStatus, schema["properties"]["status"], "status")
    assert problems == []


def test_only_free_json_fields_preserve_unknown_fields() -> None:
    found: list[str] = []

    def visit(node: dict[str, Any], path: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            found.append(path)
        for name, prop in node.get("properties", {}).items():
            visit(prop, f"{path}.{name}")
        if "items" in node:
            visit(node["items"], f"{path}[]")

    schema = committed_schema()
    visit(schema["properties"]["spec"], "spec")
    visit(schema["properties"]["status"], "status")
    kubernetes_job = "spec.target.kubernetesJob.jobTemplate.spec"
    assert sorted(found) == [
        "spec.job.payload",
        kubernetes_job,
        f"{kubernetes_job}.template",
        f"{kubernetes_job}.template.spec",
        f"{kubernetes_job}.template.spec.containers[]",
        "spec.webhook.payloadSchema",
    ], "free JSON, and the Kubernetes objects of a Job template (the API server validates those)"


def test_exactly_one_source_rule_names_every_source() -> None:
    rules = committed_schema()["properties"]["spec"]["x-kubernetes-validations"]
    for source in SOURCE_CLASSES:
        assert f"has(self.{source.name})" in rules[0]["rule"]
