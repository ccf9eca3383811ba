"""The operator side of webhooks: builds a trigger per JobTrigger and owns the one server they share."""

from collections.abc import Sequence

from portico.domain.trigger import SecretRef
from portico.http_guard import ServerLimits
from portico.ports.job_trigger import JobTrigger
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.spec import WebhookSpec
from portico.sources.webhook.status import WebhookStatus
from portico.sources.webhook.trigger import WebhookTrigger


class WebhookSource(TriggerSource[WebhookSpec]):
    """Every operator replica serves every webhook (a Service can spread deliveries over replicas), so
    the source is not single-active."""

    name = "webhook"
    spec_model = WebhookSpec
    status_model = WebhookStatus

    def __init__(
        self, host: str = "0.0.0.0", port: int = 8080, *, limits: ServerLimits | None = None
    ) -> None:
        self.server = WebhookServer(host, port, limits=limits)

    @property
    def single_active(self) -> bool:
        return False

    @property
    def reads_secrets_live(self) -> bool:
        return True

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ready(self) -> bool:
        return self.server.ready

    async def open(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.stop()

    def secret_refs(self, spec: WebhookSpec) -> Sequence[SecretRef]:
        return [spec.auth.secret_ref] if spec.auth.secret_ref is not None else []

    def build(self, spec: WebhookSpec, context: TriggerContext) -> JobTrigger:
        """The spec as validated when the resource was read: nothing is parsed again here."""
        return WebhookTrigger(
            context.job_creator,
            spec,
            ref=context.ref,
            template=context.template,
            events=context.events,
            secrets=context.secrets,
            server=self.server,
        )
