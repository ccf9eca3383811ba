"""What a webhook trigger adds to its JobTrigger's status."""

from pydantic import Field

from portico.domain.model import SpecModel


class WebhookStatus(SpecModel):
    webhook_path: str | None = Field(default=None, description="Webhook: the URL path this trigger serves.")
    webhook_requests: dict[str, int] | None = Field(
        default=None, description="Webhook: requests this replica answered, by HTTP status code."
    )
