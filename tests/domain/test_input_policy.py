"""The input policy as a pure function: each rule, its JSON path, and bounded cost on hostile shapes."""

import contextlib
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portico.domain.input_policy import (
    MAX_DEPTH,
    MAX_INTEGER,
    MIN_INTEGER,
    RULES,
    PolicyViolation,
    Unreadable,
    check_identifier,
    check_job,
    check_json,
    decode_lenient,
    parse_json,
)


def violation(data: bytes | str) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as caught:
        parse_json(data)
    assert caught.value.rule in RULES
    return caught.value


@pytest.mark.parametrize(
    ("body", "rule", "path"),
    [
        (b'{"a": 1e400}', "finite-number", "$.a"),
        (b'{"a": -1e400}', "finite-number", "$.a"),
        (b'{"a": [NaN]}', "finite-number", "$.a[0]"),
        (b'{"a": Infinity}', "finite-number", "$.a"),
        (b'{"a": 9223372036854775808}', "number-range", "$.a"),
        (b'{"a": -9223372036854775809}', "number-range", "$.a"),
        (b'{"a": 1e19}', "number-range", "$.a"),
        (b'{"a": ' + b"9" * 100_000 + b"}", "number-range", "$"),
        (b'{"a": "\\ud800"}', "unicode", "$.a"),
        (b'{"\\udfff": 1}', "unicode", "$"),
        (b'{"x y": {"\\n": "\\udbff"}}', "unicode", '$["x y"]["\\n"]'),
        (b"\xff{}", "unicode", "$"),
        (b"{", "json-syntax", "$"),
        (b"", "json-syntax", "$"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "json-depth", "$" + "[0]" * MAX_DEPTH),
        (b"[" * 100_000, "json-depth", "$"),
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "json-depth", "$"),
    ],
)
def test_each_rule_names_itself_and_the_path(body: bytes, rule: str, path: str) -> None:
    refused = violation(body)
    assert (refused.rule, refused.path) == (rule, path)
    assert f"(rule {rule})" in str(refused)


def test_what_the_policy_accepts_comes_back_unchanged() -> None:
    document = {
        "deep": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)),
        "numbers": [MIN_INTEGER, MAX_INTEGER, 1.5e300 / 1e290, -0.0],
        "text": "é ✓ 𝄞 \u0000 inside a payload is fine",
    }
    assert parse_json(json.dumps(document)) == document


def test_identifiers_refuse_control_characters_and_lone_surrogates() -> None:
    assert check_identifier("report.daily", "job_type") == "report.daily"
    for bad in ("a\x00", "abc\n", "a\rb", "\x1b[31m", "x\x7f", "\ud800"):
        with pytest.raises(PolicyViolation) as caught:
            check_identifier(bad, "job_type")
        assert caught.value.path == "job_type"


def test_check_json_refuses_what_is_not_json() -> None:
    import datetime

    for value, rule in (
        ({"when": datetime.date(2024, 1, 1)}, "json-type"),
        ({1: "x"}, "json-type"),
        ({"a": float("nan")}, "finite-number"),
        ({"a": 2**70}, "number-range"),
        ({"a": Unreadable("json-depth", "too deep")}, "json-depth"),
    ):
        with pytest.raises(PolicyViolation) as caught:
            check_json(value)
        assert caught.value.rule == rule


def test_check_job_names_the_part_at_fault() -> None:
    with pytest.raises(PolicyViolation) as caught:
        check_job(job_type="t", queue_name="q\n", payload={}, metadata={})
    assert caught.value.path == "queue_name"
    with pytest.raises(PolicyViolation) as caught:
        check_job(job_type="t", queue_name="q", payload={"a": [float("inf")]}, metadata={})
    assert caught.value.path == "$.payload.a[0]"


def test_lenient_decoding_marks_instead_of_raising() -> None:
    assert decode_lenient('{"a": 1}') == {"a": 1}
    marked = decode_lenient("[" * 100_000)
    assert isinstance(marked, Unreadable) and marked.rule == "json-depth"
    with pytest.raises(PolicyViolation):
        check_json({"row": marked})


def test_hostile_shapes_cost_little() -> None:
    """A megabyte of the worst shapes is judged in well under a second each (no quadratic paths)."""
    shapes = [
        b"[" * 1_000_000,
        b'{"a": ' + b"9" * 1_000_000 + b"}",
        b'["' + b"\\ud800" * 150_000 + b'"]',
        b"[" + b"1," * 500_000 + b"1]",
    ]
    for shape in shapes:
        started = time.perf_counter()
        with contextlib.suppress(PolicyViolation):
            parse_json(shape)
        assert time.perf_counter() - started < 5, shape[:20]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_accepted_values_encode_strictly_and_decode_the_same(value: object) -> None:
    """Whatever the policy accepts, a strict encoder writes and the policy reads back identically."""
    try:
        check_json(value)
    except PolicyViolation:
        return
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert parse_json(text.encode("utf-8")) == value
