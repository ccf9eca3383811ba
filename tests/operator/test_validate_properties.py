"""Property-based: whatever YAML-shaped (or not) bytes `portico validate` is given, it answers with exit
status 0, 1 or 2 and printable lines only, never an exception, within bounded time and memory."""

import io
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portico.operator.validate import MAX_LINE, validate_paths
from tests.operator.test_validate import GOOD

SETTINGS = settings(
    max_examples=60,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
"""The deadline is a hang guard, not a timing assertion: each example takes milliseconds."""

YAML_PIECES = st.sampled_from(
    [
        "[", "]", "{", "}", ":", ": ", "- ", ",", "&a ", "*a", "&b ", "*b", "!!python/object ", "!!binary ",
        "<<: *a", "? ", "|", ">", "'", '"', "#", "---\n", "...\n", "\n", "\n  ", "\t", "\x00", "\x1b[2K",
        "\u2028", "\ufeff", "%YAML 1.1\n", "%TAG ! x\n", ".inf", ".nan", "9" * 50, "0x1F", "1e400",
        "2026-01-01", "~", "null", "kind: List\n", "items: ", "kind: JobTrigger\n", "metadata: ", "spec: ",
        "apiVersion: triggers.portico.dev/v1alpha1\n", "name: ", "job: ", "schedule: ", "cron: ",
    ]
)  # fmt: skip

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=40,
)


def check(path: Path | str) -> str:
    out = io.StringIO()
    code = validate_paths([str(path)], out=out)
    text = out.getvalue()
    lines = text.splitlines()
    assert code in (0, 1, 2), text
    assert lines and "JobTrigger(s) checked" in lines[-1]
    assert all(line.isprintable() and len(line) <= MAX_LINE for line in lines), lines
    assert text.count("\n") == len(lines), "no line break hidden inside a line"
    return text


@SETTINGS
@given(pieces=st.lists(YAML_PIECES | st.text(max_size=8), max_size=60))
def test_yaml_shaped_noise(tmp_path: Path, pieces: list[str]) -> None:
    path = tmp_path / "noise.yaml"
    path.write_text("".join(pieces), encoding="utf-8", errors="surrogatepass")
    check(path)


@SETTINGS
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bytes.yaml"
    path.write_bytes(data)
    check(path)


@SETTINGS
@given(
    where=st.sampled_from(["metadata", "metadata.name", "spec", "spec.job", "spec.job.payload",
                           "spec.job.priority", "spec.schedule", "spec.schedule.cron", "kind-list-items"]),
    value=JSON_VALUES,
)  # fmt: skip
def test_any_value_anywhere_in_a_trigger(tmp_path: Path, where: str, value: Any) -> None:
    doc: dict[str, Any] = yaml.safe_load(GOOD)
    if where == "kind-list-items":
        doc = {"apiVersion": "v1", "kind": "List", "items": value}
    else:
        *parents, last = where.split(".")
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value
    path = tmp_path / "trigger.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    check(path)


@SETTINGS
@given(depth=st.integers(min_value=0, max_value=5000), opener=st.sampled_from(["[", "{a: ", "- ", "k:\n"]))
def test_any_nesting_depth(tmp_path: Path, depth: int, opener: str) -> None:
    if opener == "[":
        text = "[" * depth + "]" * depth
    elif opener == "{a: ":
        text = "{a: " * depth + "1" + "}" * depth
    elif opener == "- ":
        text = "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "x\n"
    else:
        text = "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    check(path)


@settings(SETTINGS, max_examples=25)
@given(
    levels=st.integers(min_value=1, max_value=30),
    width=st.integers(min_value=1, max_value=30),
    merge=st.booleans(),
)
def test_alias_expansion_stays_within_memory(tmp_path: Path, levels: int, width: int, merge: bool) -> None:
    lines = ["a0: &a0 {x: lol}" if merge else "a0: &a0 [lol, lol]"]
    for i in range(1, levels):
        if merge:
            refs = ", ".join(f"*a{i - 1}" for _ in range(width))
            lines.append(f"a{i}: &a{i} {{<<: [{refs}], k{i}: [{refs}]}}")
        else:
            lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    path = tmp_path / "aliases.yaml"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        check(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024
