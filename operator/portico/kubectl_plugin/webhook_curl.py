"""A copy-pasteable shell snippet that calls a webhook trigger the way its sender would: the body signed
for the configured auth (HMAC presets github, stripe and slack, generic HMAC, bearer, none).

The signature is computed by `openssl` when the snippet runs, not here, so a timestamped scheme (Stripe,
Slack) never prints a signature that expires in five minutes. The secret is fetched by the snippet
itself with `kubectl get secret` unless the user asked to see it, so it never lands on the terminal
(or in a scroll-back, a ticket, a screen share) by accident.
"""

import json
import shlex
from collections.abc import Mapping
from typing import Any

DEFAULT_BODY = "{}"
_GITHUB = {"sha256": ("X-Hub-Signature-256", "sha256="), "sha1": ("X-Hub-Signature", "sha1=")}


def example_body(webhook: Mapping[str, Any], job: Mapping[str, Any]) -> str:
    """A body the endpoint accepts: in request mode a job request for an allowed type, in payload mode
    an empty object (the sender's event goes there)."""
    if webhook.get("mode") == "payload":
        return DEFAULT_BODY
    allowed = webhook.get("allowedJobTypes") or [job.get("type", "example.job")]
    return json.dumps({"job_type": allowed[0], "payload": {}})


def secret_expression(namespace: str, ref: Mapping[str, Any]) -> str:
    """Shell that prints the secret's value, for `SECRET="$(...)"`."""
    jsonpath = "{.data." + str(ref["key"]).replace(".", "\\.") + "}"
    return (
        f"kubectl -n {shlex.quote(namespace)} get secret {shlex.quote(str(ref['name']))} "
        f"-o jsonpath={shlex.quote(jsonpath)} | base64 -d"
    )


def _hmac(message: str, algorithm: str) -> str:
    return (
        f"SIG=\"$(printf '%s' {message} | openssl dgst -{algorithm} -hmac \"$SECRET\" -r | cut -d' ' -f1)\""
    )


def signed_curl(
    url: str,
    namespace: str,
    webhook: Mapping[str, Any],
    *,
    secret: str | None = None,
    body: str = DEFAULT_BODY,
) -> str:
    """The snippet for `webhook` (the spec.webhook block). With `secret`, it is inlined; otherwise the
    snippet reads it from the referenced Secret."""
    auth = webhook.get("auth") or {"type": "none"}
    kind, preset = auth.get("type", "none"), auth.get("preset")
    lines = [f"BODY={shlex.quote(body)}"]
    headers = ["Content-Type: application/json"]
    dynamic: list[str] = []
    if kind != "none":
        ref = auth.get("secretRef")
        if secret is not None:
            lines.append(f"SECRET={shlex.quote(secret)}")
        elif ref:
            lines.append(f'SECRET="$({secret_expression(namespace, ref)})"')
        else:
            lines.append("SECRET='<the shared secret>'")
    if kind == "bearer":
        header = auth.get("header") or "Authorization"
        prefix = "Bearer " if auth.get("prefix") is None else auth["prefix"]
        dynamic.append(f"{header}: {prefix}$SECRET")
    elif kind == "hmac" and preset == "stripe":
        lines += ["TS=$(date +%s)", _hmac('"$TS.$BODY"', "sha256")]
        dynamic.append("Stripe-Signature: t=$TS,v1=$SIG")
    elif kind == "hmac" and preset == "slack":
        lines += ["TS=$(date +%s)", _hmac('"v0:$TS:$BODY"', "sha256")]
        dynamic += ["X-Slack-Request-Timestamp: $TS", "X-Slack-Signature: v0=$SIG"]
    elif kind == "hmac":
        algorithm = auth.get("algorithm") or "sha256"
        if preset == "github":
            header, prefix = _GITHUB.get(algorithm, _GITHUB["sha256"])
            headers.append("X-GitHub-Delivery: $(uuidgen 2>/dev/null || date +%s%N)")
        else:
            header, prefix = auth.get("header") or "X-Signature", auth.get("prefix") or ""
        lines.append(_hmac('"$BODY"', algorithm))
        dynamic.append(f"{header}: {prefix}$SIG")
    by_header = webhook.get("jobTypeFromHeader")
    if by_header and by_header.get("mapping"):
        event = sorted(by_header["mapping"])[0]
        headers.append(f"{by_header['header']}: {event}")
    args = [f"curl -sS --fail-with-body -X POST {shlex.quote(url)}"]
    args += [f"-H {_header_arg(h)}" for h in headers]
    args += [f'-H "{h}"' for h in dynamic]
    args.append('--data-binary "$BODY"')
    lines.append(" \\\n  ".join(args))
    return "\n".join(lines)


def _header_arg(header: str) -> str:
    """Single-quoted unless it runs a command (the GitHub delivery id)."""
    return f'"{header}"' if "$(" in header else shlex.quote(header)
