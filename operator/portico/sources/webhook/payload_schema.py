"""`payloadSchema`: a JSON Schema the payload of every request must match.

Compiled once, when the spec is validated, so "valid" and "runs" agree and a request never pays for it.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from jsonschema import exceptions as jsonschema_errors
from jsonschema.protocols import Validator
from referencing.jsonschema import DRAFT202012

_NOT_SCHEMAS = frozenset({"const", "enum", "default", "examples"})
"""Keywords whose values are data, not subschemas: a `$ref` key inside them is not a reference."""


def _references(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            elif key not in _NOT_SCHEMAS:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def compile_payload_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for `payloadSchema` (JSON Schema, draft 2020-12 unless `$schema` says otherwise).

    References must stay inside the schema and resolve: remote schemas are never fetched, and a
    dangling reference would otherwise only fail when a request reaches it.
    Raises ValueError naming what is wrong with the schema.
    """
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema_errors.SchemaError as exc:
        raise ValueError(
            f"payloadSchema is not a valid JSON Schema: {exc.message} (at {exc.json_path})"
        ) from None
    resource = referencing.Resource.from_contents(dict(schema), default_specification=DRAFT202012)
    resolver = referencing.Registry().with_resource("", resource).resolver(base_uri="")
    for reference in _references(schema):
        if not reference.startswith("#"):
            raise ValueError(f"payloadSchema may only refer to its own parts (#...), not {reference!r}")
        try:
            resolver.lookup(reference)
        except referencing.exceptions.Unresolvable:
            raise ValueError(f"payloadSchema reference {reference!r} points to nothing") from None
    validator: Validator = cls(schema)
    return validator


class SchemaMismatch(Exception):
    """A payload that does not match; `path` is the JSON path of the failing part."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class TooDeepForSchema(Exception):
    """A payload nested deeper than the validator can recurse."""


def first_mismatch(validator: Validator, payload: object, where: str) -> SchemaMismatch | None:
    """The most relevant way `payload` breaks the schema (None when it matches), its path prefixed
    with `where` (`$` for a whole body, `$.payload` for a job request's payload field).

    Raises TooDeepForSchema where the validator would exhaust the stack (a recursive schema).
    """
    try:
        error = jsonschema_errors.best_match(validator.iter_errors(payload))
    except RecursionError:
        raise TooDeepForSchema from None
    if error is None:
        return None
    return SchemaMismatch(where + error.json_path[1:], error.message)
