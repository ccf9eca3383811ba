"""Generates the JobTrigger CRD from the pydantic models, so the schema the API server enforces and the
models the operator validates with cannot drift (kubebuilder's controller-gen, for pydantic).

pydantic emits JSON Schema 2020-12; a CRD wants a *structural* OpenAPI v3 schema: no `$ref`, no `anyOf`
for optionals, `exclusiveMinimum` as a flag, free-form objects marked
`x-kubernetes-preserve-unknown-fields`. Every property must carry a description, so `kubectl explain`
always has something to say: a model field without one fails the generation.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from portico.operator.resource import GROUP, KIND, PLURAL, VERSION, exactly_one_source_rule, spec_model
from portico.operator.resource_status import status_model
from portico.ports.trigger_source import TriggerSource

RESOURCE_DESCRIPTION = (
    "A JobTrigger enqueues a background job in the job-queue service whenever its event source fires: "
    "a schedule, a webhook call, a file, a RabbitMQ message or a database row."
)
_DROP = {"title", "additionalProperties", "$defs", "propertyNames"}
_SCALAR_DEFAULTS = (str, int, float, bool)


class SchemaError(ValueError):
    pass


def structural(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    return _convert(raw, raw.get("$defs", {}), path=model.__name__)


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        ref = node.pop("$ref").split("/")[-1]
        node = {**defs[ref], **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"{path}: unions other than `X | None` cannot be expressed structurally")
        outer = {k: v for k, v in node.items() if k not in _DROP and k != "default"}
        return {**_convert(options[0], defs, path), **outer}
    out: dict[str, Any] = {}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out["properties"] = {name: _convert(prop, defs, f"{path}.{name}") for name, prop in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs, f"{path}[]")
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "default":
            if isinstance(value, _SCALAR_DEFAULTS):
                out["default"] = value
        else:
            out[key] = value
    additional = node.get("additionalProperties")
    if out.get("type") == "object" and "properties" not in out:
        if isinstance(additional, Mapping) and additional:
            out["additionalProperties"] = _convert(additional, defs, f"{path}{{}}")
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("format") == "uri" and out.get("type") == "string":
        out.pop("format")
    return out


def _check_descriptions(node: Mapping[str, Any], path: str) -> list[str]:
    missing = []
    for name, prop in node.get("properties", {}).items():
        if not prop.get("description"):
            missing.append(f"{path}.{name}")
        missing += _check_descriptions(prop, f"{path}.{name}")
    if "items" in node:
        missing += _check_descriptions(node["items"], f"{path}[]")
    return missing


def build_crd(sources: Sequence[type[TriggerSource[Any]]]) -> dict[str, Any]:
    spec = structural(spec_model(tuple(sources)))
    spec["x-kubernetes-validations"] = [
        exactly_one_source_rule([s.name for s in sources]),
        *spec.get("x-kubernetes-validations", []),
    ]
    status = structural(status_model(tuple(sources)))
    status["properties"]["conditions"].update(
        {
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        }
    )
    missing = _check_descriptions(spec, "spec") + _check_descriptions(status, "status")
    if missing:
        raise SchemaError("fields without a description: " + ", ".join(missing))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "portico-triggers", "app.kubernetes.io/part-of": "portico"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["jt"],
                "categories": ["portico"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Source",
                            "type": "string",
                            "jsonPath": ".status.source",
                            "description": "Which event source the trigger uses.",
                        },
                        {
                            "name": "Running",
                            "type": "boolean",
                            "jsonPath": ".status.isRunning",
                            "description": "Whether the trigger can create jobs now.",
                        },
                        {
                            "name": "Jobs",
                            "type": "integer",
                            "jsonPath": ".status.jobsCreated",
                            "description": "Jobs created.",
                        },
                        {
                            "name": "Last Job",
                            "type": "date",
                            "jsonPath": ".status.lastJobTime",
                            "description": "When the last job was created.",
                        },
                        {
                            "name": "Phase",
                            "type": "string",
                            "jsonPath": ".status.phase",
                            "description": "Pending, Running, Suspended or Failed.",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {
                            "name": "Next",
                            "type": "date",
                            "jsonPath": ".status.nextScheduleTime",
                            "description": "Schedule: when the schedule fires next (shown with -o wide).",
                            "priority": 1,
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": RESOURCE_DESCRIPTION,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "API version of this object.",
                                },
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


CRD_HEADER = (
    "# Generated by hack/gen-crd.py from the operator's pydantic models. Do not edit: change the models\n"
    "# (operator/portico/...) and run `make crds`. A test fails when this file and the models differ.\n"
)


def render_crd(crd: Mapping[str, Any]) -> str:
    import yaml

    return CRD_HEADER + yaml.safe_dump(dict(crd), sort_keys=False, width=100, allow_unicode=True)
