"""`portico validate` on hostile input, through the real command: one clear line per problem, never a
traceback, never a hang, bounded memory; exit 1 for an invalid manifest, 2 for input it cannot read."""

import os
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from portico.domain.input_policy import MAX_DEPTH as PAYLOAD_MAX_DEPTH
from portico.operator.manifest_reader import MAX_DEPTH, MAX_FILE_BYTES
from portico.operator.validate import escape
from tests.operator.test_validate import GOOD, run, write

HANG_GUARD = 60
"""Seconds after which a run counts as hung (not a timing assertion: every case answers in about one)."""


def cli(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "portico", "validate", *args],
        input=stdin,
        capture_output=True,
        timeout=HANG_GUARD,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


HOSTILE_FILES = {
    "alias-bomb.yaml": (alias_bomb(), 1, "aliases expand to more than"),
    "recursive-alias.yaml": ("a: &a [*a]\n", 1, "refers to the value that contains it"),
    "deep.yaml": ("[" * 1000 + "]" * 1000 + "\n", 1, f"nested deeper than {MAX_DEPTH} levels"),
    "deep-block.yaml": (
        "".join("  " * i + f"k{i}:\n" for i in range(1000)) + "  " * 1000 + "v\n",
        1,
        "nested deeper than",
    ),
    "metadata-scalar.yaml": (
        GOOD.replace("metadata: {name: nightly}", "metadata: x"),
        1,
        "JobTrigger/#0: metadata: must be a mapping, got a string",
    ),
    "list-items-scalar.yaml": ("apiVersion: v1\nkind: List\nitems: 5\n", 1, "items must be a list, got int"),
    "big-integer.yaml": (
        GOOD.replace("report.nightly", "report.nightly, priority: " + "9" * 5000),
        1,
        "5000 digits",
    ),
    "infinite.yaml": (
        GOOD.replace("report.nightly", "report.nightly, payload: {x: .inf}"),
        1,
        "JSON can hold",
    ),
    "unhashable-key.yaml": ("? [a]\n: b\n", 1, "not valid YAML: line 1"),
    "syntax.yaml": ("a: [\n", 1, "not valid YAML: line 2"),
    "spec-scalar.yaml": (GOOD.replace("spec:\n", "spec: 5\nx:\n"), 1, "spec: must be a mapping, got int"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_manifest_gets_one_clear_line_and_exit_1(tmp_path: Path, name: str) -> None:
    text, code, expected = HOSTILE_FILES[name]
    status, out = run(write(tmp_path, name, text))
    assert status == code, out
    assert expected in out
    assert out.splitlines()[-1].endswith("JobTrigger(s) checked, 1 invalid")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.yaml", "missing.yaml: cannot be read: no such file or directory"),
        (
            lambda d: (d / "binary.yaml", (d / "binary.yaml").write_bytes(b"\x7fELF\x00\x01"))[0],
            "binary file",
        ),
        (
            lambda d: (d / "utf16.yaml", (d / "utf16.yaml").write_bytes(GOOD.encode("utf-16")))[0],
            "UTF-16",
        ),
        (lambda d: (d / "latin1.yaml", (d / "latin1.yaml").write_bytes(b"name: caf\xe9\n"))[0], "not UTF-8"),
        (
            lambda d: (d / "huge.yaml", (d / "huge.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1)))[0],
            f"larger than {MAX_FILE_BYTES} bytes",
        ),
        (lambda d: (d / "fifo.yaml", os.mkfifo(d / "fifo.yaml"))[0], "not a regular file"),
        (lambda d: Path("/dev/zero"), "/dev/zero: cannot be read: not a regular file"),
    ],
    ids=["missing", "binary", "utf16", "latin1", "too-large", "fifo", "dev-zero"],
)
def test_unreadable_input_gets_one_clear_line_and_exit_2(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    status, out = run(make(tmp_path))
    assert status == 2, out
    assert expected in out
    assert out.splitlines()[-1] == "0 JobTrigger(s) checked, 0 invalid, 1 input(s) unreadable"


def test_the_command_answers_every_hostile_input_with_lines_never_a_traceback(tmp_path: Path) -> None:
    """All of them in one run of the real command: an exit status, no traceback, nothing on stderr."""
    paths = [str(write(tmp_path, name, text)) for name, (text, _, _) in sorted(HOSTILE_FILES.items())]
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "utf16.yaml").write_bytes(GOOD.encode("utf-16"))
    extra = [str(tmp_path / "pipe.yaml"), "/dev/zero", str(tmp_path / "utf16.yaml"), str(tmp_path / "nope")]
    status, out, err = cli(*(arg for p in paths + extra for arg in ("-f", p)))
    assert (status, err) == (2, "")
    assert "Traceback" not in out
    for _, _, expected in HOSTILE_FILES.values():
        assert expected in out
    assert out.splitlines()[-1] == "2 JobTrigger(s) checked, 11 invalid, 4 input(s) unreadable"


def test_an_unreadable_input_does_not_hide_the_others(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", GOOD)
    bad = write(tmp_path, "bad.yaml", GOOD.replace("0 2 * * *", "0 25 * * *"))
    status, out, _ = cli("-f", str(good), "-f", str(tmp_path / "nope.yaml"), "-f", str(bad))
    assert status == 2
    assert "bad.yaml: JobTrigger/nightly: spec.schedule.cron:" in out
    assert out.splitlines()[-1] == "2 JobTrigger(s) checked, 1 invalid, 1 input(s) unreadable"


def test_directories_skip_fifos_and_symlink_loops(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", GOOD)
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "loop").symlink_to(tmp_path)
    status, out, _ = cli("-f", str(tmp_path))
    assert status == 2 and "pipe.yaml: cannot be read: not a regular file" in out
    assert out.splitlines()[-1] == "1 JobTrigger(s) checked, 0 invalid, 1 input(s) unreadable"


def test_stdin_is_read_bounded() -> None:
    status, out, _ = cli("-f", "-", stdin=b"a: " + b"x" * (MAX_FILE_BYTES + 10))
    assert status == 2 and "<stdin>: cannot be read: larger than" in out


def test_names_and_values_are_escaped_so_they_cannot_fake_lines(tmp_path: Path) -> None:
    fake = "x\\n1 JobTrigger(s) checked, 0 invalid\\n\\x1b[2K\\u2028forged\\u202e"
    text = GOOD.replace("metadata: {name: nightly}", f'metadata: {{name: "{fake}"}}')
    path = write(tmp_path, "evil\x1b[31m.yaml", text)
    status, out, _ = cli("-f", str(path))
    assert status == 1
    lines = out.splitlines()
    assert lines[-1] == "1 JobTrigger(s) checked, 1 invalid"
    assert all(line.isprintable() for line in lines), lines
    assert "\\x0a1 JobTrigger(s) checked" in out and "\\x1b[2K" in out and "\\u2028forged\\u202e" in out
    assert "evil\\x1b[31m.yaml" in out


def test_escape_keeps_printable_text_and_cuts_long_lines() -> None:
    assert escape("spec.job.type: 'café' ✓") == "spec.job.type: 'café' ✓"
    assert escape("a\\b") == "a\\\\b"
    assert escape("\u202egnp.exe") == "\\u202egnp.exe"
    assert len(escape("x" * 10_000)) == 1000


def test_the_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.yaml", alias_bomb(levels=12, width=10))
    tracemalloc.start()
    try:
        code, out = run(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 1 and "aliases expand to more than" in out
    assert peak < 100 * 1024 * 1024


def test_a_fifo_never_blocks_even_with_a_writer_that_never_writes(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:
        with open(fifo, "wb"):
            opened.set()
            opened.wait(5)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    code, out = run(fifo)
    assert code == 2 and "not a regular file" in out
    if not opened.is_set():  # release the writer, which is still waiting for a reader
        with open(fifo, "rb"):
            pass
    thread.join(5)


def nested_payload(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth


def test_a_payload_at_the_input_policy_depth_is_valid(tmp_path: Path) -> None:
    payload = nested_payload(PAYLOAD_MAX_DEPTH - 1)
    path = write(tmp_path, "n.yaml", GOOD.replace("report.nightly", f"report.nightly, payload: {payload}"))
    code, out = run(path)
    assert (code, out) == (0, "1 JobTrigger(s) checked, 0 invalid\n")


def test_a_payload_the_reader_takes_but_the_input_policy_refuses_is_one_line(tmp_path: Path) -> None:
    """Nested just below the reader's limit: read without a traceback, then refused by the same input
    policy every entry point applies to payloads, in one line naming the rule."""
    payload = nested_payload(MAX_DEPTH - 5)
    path = write(tmp_path, "n.yaml", GOOD.replace("report.nightly", f"report.nightly, payload: {payload}"))
    code, out = run(path)
    assert code == 1
    problems = out.splitlines()[:-1]
    assert len(problems) == 1 and "payload" in problems[0] and "deeper" in problems[0], out
    assert "Traceback" not in out
