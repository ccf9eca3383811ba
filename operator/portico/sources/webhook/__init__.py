"""HTTP webhooks: `WebhookTrigger` turns an authenticated POST into a job."""

from portico.sources.webhook.trigger import WebhookConfig, WebhookSource, WebhookSpec, WebhookTrigger

__all__ = ["WebhookConfig", "WebhookSource", "WebhookSpec", "WebhookTrigger"]
