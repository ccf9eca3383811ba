"""HTTP webhooks: `WebhookTrigger` turns an authenticated POST into a job, served by the operator's
shared server, its own, or any ASGI application through `WebhookTrigger.router`."""

from portico.sources.webhook.asgi import WebhookASGI
from portico.sources.webhook.mapping import WebhookJobRequest
from portico.sources.webhook.messages import WebhookRefusal, WebhookRequest, WebhookResponse
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.source import WebhookSource
from portico.sources.webhook.spec import (
    JobTypeFromHeaderSpec,
    RateLimitSpec,
    WebhookAuthSpec,
    WebhookConfig,
    WebhookSpec,
)
from portico.sources.webhook.trigger import WebhookTrigger

__all__ = [
    "JobTypeFromHeaderSpec",
    "RateLimitSpec",
    "WebhookASGI",
    "WebhookAuthSpec",
    "WebhookConfig",
    "WebhookJobRequest",
    "WebhookRefusal",
    "WebhookRequest",
    "WebhookResponse",
    "WebhookServer",
    "WebhookSource",
    "WebhookSpec",
    "WebhookTrigger",
]
