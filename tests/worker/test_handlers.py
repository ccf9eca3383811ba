"""Finding handlers: job type → handler, the `"*"` fallback, and import paths with clear errors."""

import subprocess
import sys
from typing import Any

import pytest

from portico.ports.job_creator import Job
from portico.ports.job_handler import FunctionHandler, JobHandler, handler
from portico.worker.handlers import HandlerError, HandlerTable, load_handlers


@handler("a", "b")
async def ab(job: Job) -> None:
    return None


@handler("*")
async def anything(job: Job) -> None:
    return None


class Reports(JobHandler):
    job_types = ("report.daily",)

    async def handle(self, job: Job) -> Any:
        return None


async def plain(job: Job) -> str:
    return "done"


def factory() -> list[JobHandler]:
    return [ab]


def test_lookup_by_type_with_a_fallback() -> None:
    table = HandlerTable([ab, anything])
    assert table.find("a") is ab and table.find("b") is ab
    assert table.find("zzz") is anything
    assert HandlerTable([ab]).find("zzz") is None


async def test_a_mapping_of_functions_becomes_handlers() -> None:
    table = HandlerTable({"x.y": plain, "report.daily": Reports()})
    found = table.find("x.y")
    assert isinstance(found, FunctionHandler)
    assert await found.handle(Job(id="1", job_type="x.y")) == "done"
    assert table.job_types == ["report.daily", "x.y"]


@pytest.mark.parametrize(
    ("handlers", "message"),
    [
        ([ab, FunctionHandler(["b"], plain)], "job type 'b' has two handlers"),
        ([], "no handlers were given"),
        (["not a handler"], "is not a JobHandler"),
        ("tests.worker.test_handlers:ab", "not a string"),
        ({"x": 42}, "neither a JobHandler nor a function"),
        ({"other": Reports()}, "does not name it"),
    ],
)
def test_unusable_handlers_are_refused_with_the_reason(handlers: Any, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        HandlerTable(handlers)


def test_import_paths() -> None:
    assert load_handlers("tests.worker.test_handlers:ab") is ab
    assert load_handlers("tests.worker.test_handlers:factory") == [ab]
    assert isinstance(load_handlers("tests.worker.test_handlers:Reports"), Reports)
    assert load_handlers("portico.worker.examples:handlers")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon", "must look like package.module:attribute"),
        ("no.such.module:handlers", "cannot import 'no.such.module'"),
        ("tests.worker.test_handlers:missing", "has no attribute 'missing'"),
    ],
)
def test_bad_import_paths_are_explained(path: str, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        load_handlers(path)


def test_portico_worker_refuses_bad_handlers_before_claiming() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "portico",
            "worker",
            "--queue-url",
            "http://127.0.0.1:9",
            "--handlers",
            "nope:x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no usable handlers: cannot import 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
