"""Files landing in a directory: `FileTrigger` creates one job per settled file."""

from portico.sources.file.trigger import FileSource, FileSpec, FileTrigger

__all__ = ["FileSource", "FileSpec", "FileTrigger"]
