"""The signed-curl snippet of `describe`, run by bash with `curl` replaced by a recorder: the headers it
would send must pass the operator's own verifiers for every auth scheme."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import time
from typing import Any

import pytest

from portico.kubectl_plugin.webhook_curl import signed_curl
from portico.sources.webhook.auth import build_verifier

SECRET = "s3cr3t 'with' $quotes \\ and spaces"
BODY = '{"event": "push", "n": 1}'
RECORDING_CURL = 'curl() { for a in "$@"; do printf "%s\\0" "$a"; done; }\n'


def sent(snippet: str) -> tuple[dict[str, str], str]:
    """The headers and body the snippet's curl call would send."""
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", RECORDING_CURL + snippet], capture_output=True, timeout=30
    )
    assert out.returncode == 0, out.stderr.decode()
    args = out.stdout.decode().split("\0")[:-1]
    headers = {}
    for flag, value in itertools.pairwise(args):
        if flag == "-H":
            name, _, text = value.partition(": ")
            headers[name] = text
    return headers, args[args.index("--data-binary") + 1]


AUTHS: dict[str, dict[str, Any]] = {
    "github": {"type": "hmac", "preset": "github"},
    "github-sha1": {"type": "hmac", "preset": "github", "algorithm": "sha1"},
    "stripe": {"type": "hmac", "preset": "stripe"},
    "slack": {"type": "hmac", "preset": "slack"},
    "hmac-sha512": {"type": "hmac", "header": "X-Sig", "prefix": "v=", "algorithm": "sha512"},
    "bearer": {"type": "bearer"},
    "bearer-custom": {"type": "bearer", "header": "X-Token", "prefix": ""},
}


@pytest.mark.parametrize("name", list(AUTHS))
def test_the_snippet_passes_the_operators_verifier(name: str) -> None:
    auth = {**AUTHS[name], "secretRef": {"name": "s", "key": "k"}}
    snippet = signed_curl("http://127.0.0.1:1/hooks/a/b", "a", {"auth": auth}, secret=SECRET, body=BODY)
    headers, body = sent(snippet)
    assert body == BODY
    verifier = build_verifier(
        auth["type"],
        preset=auth.get("preset"),
        header=auth.get("header"),
        prefix=auth.get("prefix"),
        algorithm=auth.get("algorithm", "sha256"),
    )
    assert verifier.verify(headers, body.encode(), SECRET, time.time()).ok, headers
    assert not verifier.verify(headers, body.encode(), SECRET + "x", time.time()).ok
    if auth.get("preset") == "github":
        assert headers["X-GitHub-Delivery"]


def test_without_the_secret_the_snippet_reads_it_from_the_secret() -> None:
    auth = {"type": "hmac", "preset": "github", "secretRef": {"name": "gh-hook", "key": "web.hook"}}
    snippet = signed_curl("http://x/hooks/a/b", "team-a", {"auth": auth})
    assert SECRET not in snippet
    line = next(line for line in snippet.splitlines() if line.startswith("SECRET="))
    assert "kubectl -n team-a get secret gh-hook -o jsonpath='{.data.web\\.hook}' | base64 -d" in line


def test_event_header_and_unauthenticated_hooks() -> None:
    hook = {
        "auth": {"type": "none"},
        "jobTypeFromHeader": {"header": "X-Event", "mapping": {"push": "ci.build", "a": "x"}},
    }
    snippet = signed_curl("http://x/hooks/a/b", "a", hook, body="{}")
    headers, _ = sent(snippet)
    assert headers["X-Event"] == "a" and "SECRET" not in snippet
    assert shlex.quote("http://x/hooks/a/b") in snippet


def test_the_example_body_is_what_the_mode_accepts() -> None:
    from portico.kubectl_plugin.webhook_curl import example_body

    assert example_body({"mode": "payload"}, {"type": "ci.build"}) == "{}"
    assert example_body({}, {"type": "report.daily"}) == '{"job_type": "report.daily", "payload": {}}'
    assert example_body({"allowedJobTypes": ["a.b", "c"]}, {"type": "x"}).startswith('{"job_type": "a.b"')
