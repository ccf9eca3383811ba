"""The one policy every input obeys before it can become a job, wherever it enters.

Webhook bodies, queue-service requests, the queue service's replies as `HttpJobCreator` reads them, AMQP
messages, database rows, file events and the job template of a manifest all pass through here, so a
value one part accepts is a value every other part can store, encode and read back:

- JSON nesting is at most `MAX_DEPTH` levels (a deeper document overflows recursive encoders later);
- numbers are finite (no NaN, Infinity or `1e400`, which strict parsers reject);
- numbers lie within the 64-bit integer range (what SQLite, Go and Java hold without loss; a larger
  integer literal is refused before it is even converted);
- text is valid Unicode (no lone surrogates, which cannot be written as UTF-8);
- identifiers (job type, queue name, idempotency key, header values) hold no control characters (NUL,
  line breaks, escapes), so they cannot truncate a C string or forge a log line.

A violation is a `PolicyViolation` naming the rule and the JSON path of the offending value.
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

MAX_DEPTH: Final = 64
"""Levels of arrays and objects in a job's payload (the payload object itself is the first)."""
ENVELOPE_DEPTH: Final = MAX_DEPTH + 1
"""The same bound for a document that carries a payload one level down (a queue-service request or
reply, a request-mode webhook body), so that every payload the policy accepts fits in its envelope."""
MIN_INTEGER: Final = -(2**63)
MAX_INTEGER: Final = 2**63 - 1

RULE_SYNTAX: Final = "json-syntax"
RULE_DEPTH: Final = "json-depth"
RULE_FINITE: Final = "finite-number"
RULE_RANGE: Final = "number-range"
RULE_UNICODE: Final = "unicode"
RULE_CONTROL: Final = "identifier-characters"
RULE_TYPE: Final = "json-type"
RULES: Final = (RULE_SYNTAX, RULE_DEPTH, RULE_FINITE, RULE_RANGE, RULE_UNICODE, RULE_CONTROL, RULE_TYPE)


class PolicyViolation(ValueError):
    """An input outside the policy: `rule` is one of `RULES`, `path` a JSON path (`$.payload.a[3]`) or a
    field name for identifiers."""

    def __init__(self, rule: str, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail} (rule {rule})")
        self.rule = rule
        self.path = path
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Stands in for a value that could not be decoded (`decode_lenient`); the check reports it where it
    sits instead of the decoder failing a whole batch."""

    rule: str
    detail: str


def _refuse_constant(name: str) -> object:
    return Unreadable(RULE_FINITE, f"{name} is not a finite number")


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)


def _decode(text: str, max_depth: int = MAX_DEPTH) -> Any:
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise PolicyViolation(RULE_DEPTH, "$", f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise PolicyViolation(RULE_RANGE, "$", "an integer of thousands of digits") from None
        raise PolicyViolation(RULE_SYNTAX, "$", f"not valid JSON: {exc}") from None


def parse_json(data: bytes | str, *, where: str = "$", max_depth: int = MAX_DEPTH) -> Any:
    """Decode JSON (UTF-8 when bytes) and check it against the policy. Raises `PolicyViolation`."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyViolation(RULE_UNICODE, where, f"not UTF-8 at byte {exc.start}") from None
    else:
        text = data
    value = _decode(text, max_depth)
    check_json(value, where, max_depth=max_depth)
    return value


def decode_lenient(text: str) -> Any:
    """JSON as a driver decodes a column: never raises; what cannot be decoded becomes `Unreadable`, which
    `check_json` then refuses for that one row only."""
    try:
        return _decode(text)
    except PolicyViolation as exc:
        return Unreadable(exc.rule, exc.detail)


def _valid_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_PATH_LENGTH: Final = 200


def _step(key: str | int) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f".{key}"
    return "[" + json.dumps(key[:64]) + "]"


def _path(trail: tuple[Any, ...] | None, where: str) -> str:
    """The JSON path of a value, with odd keys quoted (a path is shown to senders and logged) and bounded."""
    parts: list[str] = []
    while trail is not None:
        trail, key = trail
        parts.append(_step(key))
    path = where + "".join(reversed(parts))
    return path if len(path) <= MAX_PATH_LENGTH else path[: MAX_PATH_LENGTH - 1] + "…"


def _leaf_ok(item: Any) -> bool:
    kind = type(item)
    if kind is str:
        return bool(item.isascii()) or _valid_text(item)
    if kind is int or kind is float:
        return bool(MIN_INTEGER <= item <= MAX_INTEGER)  # False for NaN and the infinities too
    return item is None or kind is bool


def _clean(value: Any, max_depth: int) -> bool:
    """The common case, fast: no path is tracked while nothing is wrong."""
    if type(value) is not dict and type(value) is not list:
        return _leaf_ok(value)
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= max_depth:
            return False
        if type(item) is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or _valid_text(key)):
                    return False
            inner_values: Any = item.values()
        else:
            inner_values = item
        for inner in inner_values:
            kind = type(inner)
            if kind is dict or kind is list:
                stack.append((inner, depth + 1))
            elif not _leaf_ok(inner):
                return False
    return True


def check_json(value: Any, where: str = "$", *, max_depth: int = MAX_DEPTH) -> None:
    """Check an already decoded value (a dict from YAML, a driver, a caller). Iterative, so a hostile
    depth cannot overflow the check itself. Raises `PolicyViolation` at the first offending value."""
    if _clean(value, max_depth):
        return
    _locate_fault(value, where, max_depth)


def _locate_fault(value: Any, where: str, max_depth: int) -> None:
    """The slow walk that knows where it is: only run once something is known to be wrong."""
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(value, 0, None)]
    while stack:
        item, depth, trail = stack.pop()
        kind = type(item)
        if kind is str:
            if not _valid_text(item):
                raise PolicyViolation(RULE_UNICODE, _path(trail, where), "text with a lone surrogate")
        elif kind is dict:
            if depth >= max_depth:
                raise PolicyViolation(
                    RULE_DEPTH, _path(trail, where), f"nested deeper than {max_depth} levels"
                )
            for key, inner in item.items():
                if type(key) is not str:
                    raise PolicyViolation(RULE_TYPE, _path(trail, where), "an object key that is not text")
                if not _valid_text(key):
                    raise PolicyViolation(RULE_UNICODE, _path(trail, where), "a key with a lone surrogate")
                stack.append((inner, depth + 1, (trail, key)))
        elif kind is list:
            if depth >= max_depth:
                raise PolicyViolation(
                    RULE_DEPTH, _path(trail, where), f"nested deeper than {max_depth} levels"
                )
            stack.extend((inner, depth + 1, (trail, index)) for index, inner in enumerate(item))
        elif kind is int:
            if not MIN_INTEGER <= item <= MAX_INTEGER:
                raise PolicyViolation(RULE_RANGE, _path(trail, where), "a number outside the 64-bit range")
        elif kind is float:
            if not math.isfinite(item):
                raise PolicyViolation(RULE_FINITE, _path(trail, where), "a number that is not finite")
            if not MIN_INTEGER <= item <= MAX_INTEGER:
                raise PolicyViolation(RULE_RANGE, _path(trail, where), "a number outside the 64-bit range")
        elif kind is Unreadable:
            raise PolicyViolation(item.rule, _path(trail, where), item.detail)
        elif item is not None and kind is not bool:
            raise PolicyViolation(RULE_TYPE, _path(trail, where), f"a {kind.__name__}, which is not JSON")
    raise AssertionError("the fast check found a fault the slow one did not")  # pragma: no cover


_CONTROL = frozenset(chr(code) for code in (*range(0x20), 0x7F))


def check_identifier(value: str, field: str) -> str:
    """A text that names something (job type, queue, idempotency key, a header value kept as metadata):
    valid Unicode without control characters. Returns the value; raises `PolicyViolation`."""
    if not _valid_text(value):
        raise PolicyViolation(RULE_UNICODE, field, "text with a lone surrogate")
    if not _CONTROL.isdisjoint(value):
        raise PolicyViolation(RULE_CONTROL, field, "a control character (NUL, line break, escape...)")
    return value


def check_job(
    *,
    job_type: str,
    queue_name: str,
    payload: Any,
    metadata: dict[str, str],
) -> None:
    """Everything a job is made of, as one entry point hands it on. Raises `PolicyViolation`. (Idempotency
    keys are not checked here: `HttpJobCreator` sends any key that is not header-safe hashed, and the queue
    service accepts visible ASCII only.)"""
    check_identifier(job_type, "job_type")
    check_identifier(queue_name, "queue_name")
    check_json(payload, "$.payload")
    check_json(metadata, "$.metadata")
