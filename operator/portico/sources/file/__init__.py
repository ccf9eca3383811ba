"""Files landing in a directory: `FileTrigger` creates one job per settled file."""

from portico.sources.file.settling import file_key
from portico.sources.file.source import FileSource
from portico.sources.file.spec import FileEvent, FileSpec
from portico.sources.file.tree import matches
from portico.sources.file.trigger import FileTrigger

__all__ = ["FileEvent", "FileSource", "FileSpec", "FileTrigger", "file_key", "matches"]
