"""How a webhook endpoint decides that a request comes from the sender that knows the secret.

Each scheme is a small object with one question, `verify(headers, body, secret, now)`, answered with a
bare bool: the HTTP layer answers 401 without saying which part failed, and only the log (never the
response) learns the reason. Every comparison of attacker-supplied bytes against expected bytes goes
through `hmac.compare_digest`, so timing does not reveal how much of a signature was right.

The presets follow what the senders document:
- GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` (`X-Hub-Signature: sha1=...`).
- Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>[,v1=...]`.
- Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:<ts>:<body>")>` with
  `X-Slack-Request-Timestamp: <ts>`.
Stripe and Slack sign a timestamp, so a captured request replayed outside the tolerance is refused.
"""

import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Algorithm = Literal["sha1", "sha256", "sha512"]
Preset = Literal["github", "stripe", "slack"]

DEFAULT_TOLERANCE_SECONDS = 300
MAX_SIGNATURE_HEADER_LENGTH = 4096

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check. `reason` is for the log only; it never reaches the sender."""

    ok: bool
    reason: str = ""


ACCEPTED = Verdict(True)


def _hex_hmac(secret: str, message: bytes, algorithm: Algorithm) -> bytes:
    return hmac.new(secret.encode(), message, _DIGESTS[algorithm]).hexdigest().encode()


def _same(provided: str, expected: bytes) -> bool:
    """Constant-time comparison of a provided hex signature with the expected one (hex is case-blind)."""
    try:
        provided_bytes = provided.strip().lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(provided_bytes, expected)


class RequestVerifier(ABC):
    """One authentication scheme of a webhook endpoint."""

    needs_body: bool = True
    """False where the check can run before the body is read (a bearer token), so a request without
    credentials is refused without spending a body read on it."""

    needs_secret: bool = True

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, secret: str, now: float) -> Verdict:
        """Whether the request is authentic. `now` is the current Unix time, for replay windows."""


class NoVerification(RequestVerifier):
    """`auth.type: none`: anyone who can reach the path may create jobs."""

    needs_body = False
    needs_secret = False

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str, now: float) -> Verdict:
        return ACCEPTED


@dataclass(frozen=True)
class BearerVerifier(RequestVerifier):
    """A shared token in a header, `Authorization: Bearer <token>` unless configured otherwise."""

    header: str = "Authorization"
    prefix: str = "Bearer "
    needs_body = False

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str, now: float) -> Verdict:
        value = headers.get(self.header)
        if value is None:
            return Verdict(False, f"missing {self.header} header")
        if not value.startswith(self.prefix):
            return Verdict(False, f"{self.header} header lacks the expected prefix")
        try:
            token = value[len(self.prefix) :].encode("utf-8")
        except UnicodeEncodeError:
            return Verdict(False, "token is not valid text")
        if not hmac.compare_digest(token, secret.encode("utf-8")):
            return Verdict(False, "token mismatch")
        return ACCEPTED


@dataclass(frozen=True)
class HmacVerifier(RequestVerifier):
    """`<header>: <prefix><hex HMAC(secret, body)>`: GitHub's scheme and that of many other senders."""

    header: str
    prefix: str = ""
    algorithm: Algorithm = "sha256"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str, now: float) -> Verdict:
        value = headers.get(self.header)
        if value is None:
            return Verdict(False, f"missing {self.header} header")
        if len(value) > MAX_SIGNATURE_HEADER_LENGTH:
            return Verdict(False, f"{self.header} header too long")
        if not value.startswith(self.prefix):
            return Verdict(False, f"{self.header} header lacks the expected prefix")
        if not _same(value[len(self.prefix) :], _hex_hmac(secret, body, self.algorithm)):
            return Verdict(False, "signature mismatch")
        return ACCEPTED


def _timestamp_within(raw: str, now: float, tolerance: float) -> Verdict | None:
    """None when `raw` is an integer Unix time within `tolerance` of `now`, else why not."""
    if not raw.isdigit() or len(raw) > 12:
        return Verdict(False, "timestamp is not a Unix time")
    if abs(now - int(raw)) > tolerance:
        return Verdict(False, "timestamp outside the tolerance (replay or clock skew)")
    return None


@dataclass(frozen=True)
class StripeVerifier(RequestVerifier):
    """Stripe's `Stripe-Signature` header. Several `v1` entries appear while a secret is being rolled;
    any one matching is enough, as Stripe's own libraries do."""

    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS
    header: str = "Stripe-Signature"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str, now: float) -> Verdict:
        value = headers.get(self.header)
        if value is None:
            return Verdict(False, f"missing {self.header} header")
        if len(value) > MAX_SIGNATURE_HEADER_LENGTH:
            return Verdict(False, f"{self.header} header too long")
        timestamp: str | None = None
        signatures: list[str] = []
        for item in value.split(","):
            key, sep, part = item.strip().partition("=")
            if not sep:
                continue
            if key == "t":
                timestamp = part
            elif key == "v1":
                signatures.append(part)
        if timestamp is None or not signatures:
            return Verdict(False, f"{self.header} header lacks t= or v1=")
        too_old = _timestamp_within(timestamp, now, self.tolerance_seconds)
        if too_old is not None:
            return too_old
        expected = _hex_hmac(secret, timestamp.encode() + b"." + body, "sha256")
        matched = False
        for signature in signatures:
            matched |= _same(signature, expected)
        return ACCEPTED if matched else Verdict(False, "signature mismatch")


@dataclass(frozen=True)
class SlackVerifier(RequestVerifier):
    """Slack's signing secret scheme (version `v0`)."""

    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS
    header: str = "X-Slack-Signature"
    timestamp_header: str = "X-Slack-Request-Timestamp"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str, now: float) -> Verdict:
        value = headers.get(self.header)
        timestamp = headers.get(self.timestamp_header)
        if value is None or timestamp is None:
            return Verdict(False, f"missing {self.header} or {self.timestamp_header} header")
        if len(value) > MAX_SIGNATURE_HEADER_LENGTH:
            return Verdict(False, f"{self.header} header too long")
        too_old = _timestamp_within(timestamp, now, self.tolerance_seconds)
        if too_old is not None:
            return too_old
        if not value.startswith("v0="):
            return Verdict(False, f"{self.header} header lacks the v0= prefix")
        expected = _hex_hmac(secret, b"v0:" + timestamp.encode() + b":" + body, "sha256")
        return ACCEPTED if _same(value[3:], expected) else Verdict(False, "signature mismatch")


def github_verifier(algorithm: Algorithm = "sha256") -> HmacVerifier:
    """GitHub signs with SHA-256 in `X-Hub-Signature-256`; the legacy SHA-1 header is `X-Hub-Signature`."""
    if algorithm == "sha1":
        return HmacVerifier(header="X-Hub-Signature", prefix="sha1=", algorithm="sha1")
    return HmacVerifier(header="X-Hub-Signature-256", prefix="sha256=", algorithm="sha256")


def build_verifier(
    type: Literal["none", "bearer", "hmac"],
    *,
    preset: Preset | None = None,
    header: str | None = None,
    prefix: str | None = None,
    algorithm: Algorithm = "sha256",
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> RequestVerifier:
    """The verifier for an `auth` block. Raises ValueError for combinations that cannot work."""
    if type == "none":
        return NoVerification()
    if type == "bearer":
        return BearerVerifier(
            header=header or "Authorization", prefix="Bearer " if prefix is None else prefix
        )
    if preset == "github":
        if algorithm not in ("sha1", "sha256"):
            raise ValueError("GitHub signs with sha256 (or the legacy sha1), not " + algorithm)
        return github_verifier(algorithm)
    if preset in ("stripe", "slack"):
        if algorithm != "sha256":
            raise ValueError(f"{preset.capitalize()} signs with sha256 only")
        if preset == "stripe":
            return StripeVerifier(tolerance_seconds=tolerance_seconds)
        return SlackVerifier(tolerance_seconds=tolerance_seconds)
    if not header:
        raise ValueError("hmac authentication without a preset needs the signature header")
    return HmacVerifier(header=header, prefix=prefix or "", algorithm=algorithm)
