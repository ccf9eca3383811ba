"""The seed's import path for FileTrigger; the code lives in `portico.sources.file`."""

from portico.sources.file import *  # noqa: F403
from portico.sources.file import __all__ as __all__
