"""`portico validate` finds what the API server cannot (a bad cron, an unknown time zone, a broken JSON
Schema) and says where, in `file: JobTrigger/name: field: message` lines, with a non-zero exit."""

import io
import sys
from pathlib import Path

import pytest

from portico.operator.validate import validate_paths

GOOD = """
apiVersion: triggers.portico.dev/v1alpha1
kind: JobTrigger
metadata: {name: nightly}
spec:
  job: {type: report.nightly}
  schedule: {cron: "0 2 * * *", timeZone: Europe/Berlin}
"""


def run(*paths: Path | str) -> tuple[int, str]:
    out = io.StringIO()
    code = validate_paths([str(p) for p in paths], out=out)
    return code, out.getvalue()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_manifest_passes(tmp_path: Path) -> None:
    code, out = run(write(tmp_path, "ok.yaml", GOOD))
    assert code == 0
    assert out.strip() == "1 JobTrigger(s) checked, 0 invalid"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("0 2 * * *", "0 25 * * *"), "spec.schedule.cron:"),
        (("Europe/Berlin", "Mars/Olympus"), "spec.schedule.timeZone:"),
        (("name: nightly", "name: Nightly_Job"), "metadata.name: 'Nightly_Job' is not a valid name"),
        (("type: report.nightly", "type: ''"), "spec.job.type:"),
        (("schedule: {", "webhook: {auth: {type: none}}\n  schedule: {"), "exactly one source block"),
        (("v1alpha1", "v1"), "apiVersion: must be triggers.portico.dev/v1alpha1"),
        (("timeZone", "timezone"), "spec.schedule.timezone: Extra inputs are not permitted"),
        (("schedule: {", "target: {}\n  schedule: {"), "spec.target: exactly one target block"),
        (("schedule: {", "target: {kafka: {}}\n  schedule: {"), "spec.target.kafka: Extra inputs"),
        (
            ("schedule: {", "target: {queueService: {url: 'ftp://q'}}\n  schedule: {"),
            "spec.target.queueService.url:",
        ),
        (
            ("schedule: {", "target: {queueService: {}, cloudEvents: {url: 'http://s'}}\n  schedule: {"),
            "spec.target: exactly one target block",
        ),
        (
            (
                "schedule: {",
                "target: {kubernetesJob: {jobTemplate: {spec: {template: {spec: {containers: []}}}}}}"
                "\n  schedule: {",
            ),
            "spec.target.kubernetesJob.jobTemplate.spec.template.spec.containers:",
        ),
    ],
)
def test_invalid_manifest_names_file_object_and_field(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    path = write(tmp_path, "bad.yaml", GOOD.replace(*change))
    code, out = run(path)
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith(f"{path}: JobTrigger/")
    assert expected in first
    assert out.splitlines()[-1] == "1 JobTrigger(s) checked, 1 invalid"


def test_directories_multi_document_files_lists_and_other_kinds(tmp_path: Path) -> None:
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n"
    write(tmp_path, "a.yaml", secret + "---\n" + GOOD + "---\n" + GOOD.replace("nightly", "second"))
    write(
        tmp_path,
        "b.yml",
        "apiVersion: v1\nkind: List\nitems:\n"
        + "\n".join(
            "- " + line if i == 0 else "  " + line
            for i, line in enumerate(GOOD.replace("0 2 * * *", "bad cron").strip().splitlines())
        ),
    )
    write(tmp_path, "notes.txt", "not a manifest")
    code, out = run(tmp_path)
    assert code == 1
    assert "b.yml: JobTrigger/nightly: spec.schedule.cron:" in out
    assert out.splitlines()[-1] == "3 JobTrigger(s) checked, 1 invalid"


def test_unparseable_yaml_is_reported(tmp_path: Path) -> None:
    code, out = run(write(tmp_path, "broken.yaml", "spec: [unclosed"))
    assert code == 1
    assert "broken.yaml: not valid YAML" in out


def test_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(GOOD))
    assert run("-") == (0, "1 JobTrigger(s) checked, 0 invalid\n")
