"""`portico validate`: offline validation of JobTrigger manifests, for the CI of GitOps repositories.

It runs the same models the operator runs and the CRD is generated from, including the checks the API
server cannot do (cron expressions, time zones, JSON Schemas, regular expressions), so "valid here" and
"runs in the cluster" agree.
"""

import re
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from portico.operator.manifest_reader import InvalidYaml, Source, load_documents, read_sources
from portico.operator.resource import GROUP, KIND, VERSION, SpecError, parse_spec
from portico.sources.catalog import SOURCE_CLASSES

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
MAX_LINE = 1000
"""Longer output lines are cut: an error never echoes a whole hostile value."""
EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def escape(text: str) -> str:
    """`text` with every character that is not printable (controls, format and bidi characters, line
    separators, unassigned code points) written as an escape, so a value from a manifest (a name with a
    newline or an ANSI escape) cannot fake or hide output lines."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    line = "".join(out)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def _documents(docs: list[Any]) -> Iterator[tuple[Any, str]]:
    """Each document, with the items of a `kind: List` unpacked; a List whose items are not a list
    comes back as a problem string instead of a document."""
    for index, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items")
            if items is None:
                continue
            if not isinstance(items, list):
                yield None, f"document {index + 1}: kind List: items must be a list, got {_type(items)}"
                continue
            yield from ((item, "") for item in items)
        elif doc is not None:
            yield doc, ""


def _type(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def validate_document(doc: Any) -> list[str]:
    """Problems with one JobTrigger manifest, as `field.path: message` lines (empty: valid)."""
    if not isinstance(doc, dict):
        return ["the document is not a mapping"]
    errors = []
    if doc.get("apiVersion") != f"{GROUP}/{VERSION}":
        errors.append(f"apiVersion: must be {GROUP}/{VERSION}, got {doc.get('apiVersion')!r}")
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict):
        errors.append(f"metadata: must be a mapping, got {_type(metadata)}")
    elif not isinstance(name, str) or not name:
        errors.append("metadata.name: required")
    elif len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: {name!r} is not a valid name (lowercase letters, digits, '-' and '.')")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        errors.append("spec: required" if spec is None else f"spec: must be a mapping, got {_type(spec)}")
        return errors
    try:
        parse_spec(spec, SOURCE_CLASSES)
    except SpecError as exc:
        errors.extend(exc.errors)
    except (RecursionError, ValueError, TypeError) as exc:
        errors.append(f"spec: cannot be validated: {type(exc).__name__}")
    return errors


def _display_name(doc: dict[str, Any], index: int) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else f"#{index}"


def validate_paths(paths: Sequence[str], out: TextIO) -> int:
    """Validate every JobTrigger in the given files and directories; other kinds are skipped. Exit
    status 2 if an input could not be read, else 1 if any manifest is invalid, else 0."""
    checked = failed = unreadable = 0

    def say(line: str) -> None:
        print(escape(line), file=out)

    for item in read_sources(list(paths)):
        if not isinstance(item, Source):
            name, error = item
            say(f"{name}: cannot be read: {error}")
            unreadable += 1
            continue
        try:
            docs = load_documents(item.text)
        except InvalidYaml as exc:
            say(f"{item.name}: not valid YAML: {exc}")
            failed += 1
            continue
        for index, (doc, problem) in enumerate(_documents(docs)):
            if problem:
                say(f"{item.name}: {problem}")
                failed += 1
                continue
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                continue
            checked += 1
            problems = validate_document(doc)
            for p in problems:
                say(f"{item.name}: {KIND}/{_display_name(doc, index)}: {p}")
            failed += bool(problems)
    summary = f"{checked} JobTrigger(s) checked, {failed} invalid"
    say(summary + (f", {unreadable} input(s) unreadable" if unreadable else ""))
    if unreadable:
        return EXIT_UNREADABLE
    return EXIT_INVALID if failed else EXIT_OK
