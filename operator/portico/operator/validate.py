"""`portico validate`: offline validation of JobTrigger manifests, for the CI of GitOps repositories.

It runs the same models the operator runs and the CRD is generated from, including the checks the API
server cannot do (cron expressions, time zones, JSON Schemas, regular expressions), so "valid here" and
"runs in the cluster" agree.
"""

import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from portico.operator.resource import GROUP, KIND, VERSION, SpecError, parse_spec
from portico.operator.sources import SOURCE_CLASSES

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _files(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    for p in paths:
        if p == "-":
            yield "<stdin>", sys.stdin.read()
            continue
        path = Path(p)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix in MANIFEST_SUFFIXES:
                    yield str(f), f.read_text()
        else:
            yield str(path), path.read_text()


def _documents(text: str) -> Iterator[Any]:
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "List":
            yield from doc.get("items") or []
        elif doc is not None:
            yield doc


def validate_document(doc: Any) -> list[str]:
    """Problems with one JobTrigger manifest, as `field.path: message` lines (empty: valid)."""
    if not isinstance(doc, dict):
        return ["the document is not a mapping"]
    errors = []
    if doc.get("apiVersion") != f"{GROUP}/{VERSION}":
        errors.append(f"apiVersion: must be {GROUP}/{VERSION}, got {doc.get('apiVersion')!r}")
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: required")
    elif len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: {name!r} is not a valid name (lowercase letters, digits, '-' and '.')")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        errors.append("spec: required")
        return errors
    try:
        parse_spec(spec, SOURCE_CLASSES)
    except SpecError as exc:
        errors.extend(exc.errors)
    return errors


def validate_paths(paths: Sequence[str], out: TextIO) -> int:
    """Validate every JobTrigger in the given files and directories; other kinds are skipped.
    Exit status 1 if any is invalid or a file cannot be read, 0 otherwise."""
    checked = failed = 0
    for filename, text in _files(paths):
        try:
            docs = list(_documents(text))
        except yaml.YAMLError as exc:
            print(f"{filename}: not valid YAML: {exc}", file=out)
            failed += 1
            continue
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                continue
            checked += 1
            name = (doc.get("metadata") or {}).get("name", f"#{index}")
            problems = validate_document(doc)
            for problem in problems:
                print(f"{filename}: {KIND}/{name}: {problem}", file=out)
            failed += bool(problems)
    print(f"{checked} JobTrigger(s) checked, {failed} invalid", file=out)
    return 1 if failed else 0
