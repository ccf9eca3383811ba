"""The PostgreSQL polling source on the operator side: `spec.databasePoll` → a `DatabasePollingTrigger`,
the DSN read from the referenced Secret."""

from collections.abc import Sequence
from typing import ClassVar

from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef
from portico.ports.job_trigger import JobTrigger
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.common.secret_ref import require
from portico.sources.database_poll.spec import DatabasePollSpec
from portico.sources.database_poll.status import DatabasePollStatus
from portico.sources.database_poll.trigger import SOURCE, DatabasePollingTrigger


class DatabasePollSource(TriggerSource[DatabasePollSpec]):
    name: ClassVar[str] = SOURCE
    spec_model: ClassVar[type[SpecModel]] = DatabasePollSpec
    status_model: ClassVar[type[SpecModel]] = DatabasePollStatus

    def secret_refs(self, spec: DatabasePollSpec) -> Sequence[SecretRef]:
        return () if spec.dsn_secret_ref is None else (spec.dsn_secret_ref,)

    def build(self, spec: DatabasePollSpec, context: TriggerContext) -> JobTrigger:
        ref = require(
            spec.dsn_secret_ref, "databasePoll.dsnSecretRef", "the Secret key holding the connection string"
        )
        return DatabasePollingTrigger(
            context.job_creator,
            context.secrets.get(ref),
            spec=spec,
            template=context.template,
            ref=context.ref,
            events=context.events,
        )
