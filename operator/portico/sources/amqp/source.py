"""The RabbitMQ source on the operator side: `spec.amqp` → a `RabbitMQTrigger`, the broker URL read from
the referenced Secret."""

from collections.abc import Sequence
from typing import ClassVar

from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef
from portico.ports.job_trigger import JobTrigger
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.amqp.mapping import SOURCE
from portico.sources.amqp.spec import AmqpSpec
from portico.sources.amqp.status import AmqpStatus
from portico.sources.amqp.trigger import RabbitMQTrigger
from portico.sources.common.secret_ref import require


class AmqpSource(TriggerSource[AmqpSpec]):
    name: ClassVar[str] = SOURCE
    spec_model: ClassVar[type[SpecModel]] = AmqpSpec
    status_model: ClassVar[type[SpecModel]] = AmqpStatus

    def secret_refs(self, spec: AmqpSpec) -> Sequence[SecretRef]:
        return () if spec.url_secret_ref is None else (spec.url_secret_ref,)

    def build(self, spec: AmqpSpec, context: TriggerContext) -> JobTrigger:
        ref = require(spec.url_secret_ref, "amqp.urlSecretRef", "the Secret key holding the broker URL")
        return RabbitMQTrigger(
            context.job_creator,
            context.secrets.get(ref),
            spec=spec,
            template=context.template,
            ref=context.ref,
            events=context.events,
        )
