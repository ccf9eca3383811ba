"""The file source on the operator side: `spec.file` → a `FileTrigger`."""

from typing import ClassVar

from portico.domain.model import SpecModel
from portico.ports.job_trigger import JobTrigger
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.file.settling import SOURCE
from portico.sources.file.spec import FileSpec
from portico.sources.file.status import FileStatus
from portico.sources.file.trigger import FileTrigger


class FileSource(TriggerSource[FileSpec]):
    name: ClassVar[str] = SOURCE
    spec_model: ClassVar[type[SpecModel]] = FileSpec
    status_model: ClassVar[type[SpecModel]] = FileStatus

    def build(self, spec: FileSpec, context: TriggerContext) -> JobTrigger:
        return FileTrigger(
            context.job_creator,
            spec=spec,
            template=context.template,
            ref=context.ref,
            events=context.events,
        )
