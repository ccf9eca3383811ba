"""Signatures computed the way GitHub, Stripe and Slack document them, sent through real HTTP; replays
outside the tolerance refused; the senders' handshakes (GitHub ping, Slack url_verification)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.trigger_source import StaticSecrets
from portico.sources.webhook.auth import (
    BearerVerifier,
    HmacVerifier,
    SlackVerifier,
    StripeVerifier,
    build_verifier,
    github_verifier,
)
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.trigger import WebhookAuthSpec, WebhookConfig, WebhookTrigger

GITHUB_SECRET = "It's a Secret to Everybody"
STRIPE_SECRET = "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
REF = SecretRef(name="hook", key="secret")


def test_github_documented_example() -> None:
    """GitHub's docs: secret "It's a Secret to Everybody", payload "Hello, World!"."""
    headers = {
        "X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    }
    assert github_verifier().verify(headers, b"Hello, World!", GITHUB_SECRET, now=0).ok
    assert not github_verifier().verify(headers, b"Hello, World?", GITHUB_SECRET, now=0).ok


def test_slack_documented_example() -> None:
    """Slack's docs: the slash-command body signed at 1531420618."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    assert SlackVerifier().verify(headers, body, SLACK_SECRET, now=1531420618 + 10).ok
    assert not SlackVerifier().verify(headers, body, SLACK_SECRET, now=1531420618 + 301).ok
    assert not SlackVerifier().verify(headers, body + b"x", SLACK_SECRET, now=1531420618).ok


def test_verdict_reasons_distinguish_failures_for_the_log() -> None:
    stripe = StripeVerifier()
    assert stripe.verify({}, b"", "s", now=0).reason.startswith("missing")
    assert "timestamp" in stripe.verify({"Stripe-Signature": "t=abc,v1=00"}, b"", "s", now=0).reason
    assert "replay" in stripe.verify({"Stripe-Signature": "t=100,v1=00"}, b"", "s", now=1000).reason
    assert (
        stripe.verify({"Stripe-Signature": "t=100,v1=00"}, b"", "s", now=100).reason == "signature mismatch"
    )
    assert BearerVerifier().verify({"Authorization": "Bearer ü"}, b"", "s", now=0).reason == "token mismatch"
    assert not HmacVerifier(header="X-Sig").verify({"X-Sig": "é" * 64}, b"", "s", now=0).ok


def test_build_verifier_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="sha256"):
        build_verifier("hmac", preset="stripe", algorithm="sha1")
    with pytest.raises(ValueError, match="sha256"):
        build_verifier("hmac", preset="github", algorithm="sha512")
    with pytest.raises(ValueError, match="header"):
        build_verifier("hmac")
    assert github_verifier("sha1").header == "X-Hub-Signature"


@pytest.fixture
async def server() -> AsyncIterator[WebhookServer]:
    webhook_server = WebhookServer("127.0.0.1", 0)
    await webhook_server.start()
    yield webhook_server
    await webhook_server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def jobs() -> InMemoryJobCreator:
    return InMemoryJobCreator()


async def sender_endpoint(
    server: WebhookServer, jobs: InMemoryJobCreator, secret: str, **auth: Any
) -> tuple[WebhookTrigger, StaticSecrets]:
    secrets = StaticSecrets({(REF.name, REF.key): secret})
    trigger = WebhookTrigger(
        jobs,
        WebhookConfig(
            prefix="/hooks/ci/events",
            mode="payload",
            auth=WebhookAuthSpec(type="hmac", secret_ref=REF, **auth),
        ),
        ref=TriggerRef(name="events", namespace="ci", uid="u-1"),
        template=JobTemplate(type="event.received"),
        secrets=secrets,
        server=server,
    )
    await trigger.start()
    return trigger, secrets


async def send(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as response:
        return response.status, await response.json()


async def test_github_push(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger, _ = await sender_endpoint(server, jobs, GITHUB_SECRET, preset="github")
    body = json.dumps({"ref": "refs/heads/main", "after": "abc123"}).encode()
    signature = (
        "sha256=" + hmac.new(GITHUB_SECRET.encode("utf-8"), msg=body, digestmod=hashlib.sha256).hexdigest()
    )
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
    status, answer = await send(http, trigger.url, body, headers)
    assert status == 202
    job = jobs.jobs[answer["job_id"]]
    assert job.payload == {"ref": "refs/heads/main", "after": "abc123"}
    assert job.metadata["webhook.event"] == "push"
    assert job.idempotency_key == "u-1:d-1"
    assert (
        await send(
            http, trigger.url, body, {**headers, "X-Hub-Signature-256": "sha256=" + signature[7:].upper()}
        )
    )[0] == 202
    tampered = body.replace(b"main", b"evil")
    assert await send(http, trigger.url, tampered, headers) == (401, {"error": "unauthorized"})
    assert len(jobs.jobs) == 1


async def test_github_legacy_sha1(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger, _ = await sender_endpoint(server, jobs, GITHUB_SECRET, preset="github", algorithm="sha1")
    body = b'{"zen": "Keep it logically awesome."}'
    signature = "sha1=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert (await send(http, trigger.url, body, {"X-Hub-Signature": signature}))[0] == 202
    sha256 = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert (await send(http, trigger.url, body, {"X-Hub-Signature-256": sha256}))[0] == 401


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    signed_payload = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed_payload, hashlib.sha256).hexdigest()}"


async def test_stripe_event(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger, _ = await sender_endpoint(server, jobs, STRIPE_SECRET, preset="stripe")
    event = {"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "type": "payment_intent.succeeded"}
    body = json.dumps(event).encode()
    now = int(time.time())
    status, answer = await send(
        http, trigger.url, body, {"Stripe-Signature": stripe_signature(body, STRIPE_SECRET, now)}
    )
    assert status == 202
    job = jobs.jobs[answer["job_id"]]
    assert job.idempotency_key == "u-1:evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert job.metadata["webhook.event"] == "payment_intent.succeeded"

    resent = await send(
        http, trigger.url, body, {"Stripe-Signature": stripe_signature(body, STRIPE_SECRET, now + 60)}
    )
    assert resent == (202, answer)

    rolled = (
        stripe_signature(body, "whsec_old", now) + ",v1=" + stripe_signature(body, STRIPE_SECRET, now)[-64:]
    )
    assert (await send(http, trigger.url, body, {"Stripe-Signature": rolled + ",v0=deadbeef"}))[0] == 202


async def test_stripe_replay_outside_tolerance_is_refused(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger, _ = await sender_endpoint(server, jobs, STRIPE_SECRET, preset="stripe", tolerance_seconds=60)
    body = json.dumps({"id": "evt_2", "type": "charge.refunded"}).encode()
    now = int(time.time())
    for timestamp in (now - 120, now + 120):
        headers = {"Stripe-Signature": stripe_signature(body, STRIPE_SECRET, timestamp)}
        assert await send(http, trigger.url, body, headers) == (401, {"error": "unauthorized"})
    headers = {"Stripe-Signature": stripe_signature(body, STRIPE_SECRET, now - 30)}
    assert (await send(http, trigger.url, body, headers))[0] == 202


def slack_headers(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    basestring = f"v0:{timestamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), basestring, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


async def test_slack_events_api(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger, _ = await sender_endpoint(server, jobs, SLACK_SECRET, preset="slack")
    now = int(time.time())

    challenge = json.dumps(
        {
            "token": "t",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    status, answer = await send(http, trigger.url, challenge, slack_headers(challenge, SLACK_SECRET, now))
    assert (status, answer) == (200, {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    assert not jobs.jobs

    callback = {
        "type": "event_callback",
        "event_id": "Ev08MFMKH6",
        "event": {"type": "app_mention", "text": "<@U0LAN0Z89> deploy", "channel": "C123"},
    }
    body = json.dumps(callback).encode()
    status, answer = await send(http, trigger.url, body, slack_headers(body, SLACK_SECRET, now))
    assert status == 202
    job = jobs.jobs[answer["job_id"]]
    assert job.metadata["webhook.event"] == "app_mention"
    assert job.idempotency_key == "u-1:Ev08MFMKH6"

    retry = {**slack_headers(body, SLACK_SECRET, now + 5), "X-Slack-Retry-Num": "1"}
    assert await send(http, trigger.url, body, retry) == (202, answer)
    assert len(jobs.jobs) == 1

    replayed = slack_headers(body, SLACK_SECRET, now - 301)
    assert await send(http, trigger.url, body, replayed) == (401, {"error": "unauthorized"})
    unsigned_challenge = slack_headers(challenge, "wrong", now)
    assert (await send(http, trigger.url, challenge, unsigned_challenge))[0] == 401


async def test_generic_hmac_with_prefix_and_sha512(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger, _ = await sender_endpoint(
        server, jobs, "k", header="X-Signature", prefix="hmac-sha512=", algorithm="sha512"
    )
    body = b'{"n": 1}'
    digest = hmac.new(b"k", body, hashlib.sha512).hexdigest()
    assert (await send(http, trigger.url, body, {"X-Signature": "hmac-sha512=" + digest}))[0] == 202
    assert (await send(http, trigger.url, body, {"X-Signature": digest}))[0] == 401
    assert (await send(http, trigger.url, body, {"X-Signature": "hmac-sha512=" + digest[:-2]}))[0] == 401
