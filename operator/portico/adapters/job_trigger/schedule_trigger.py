"""The seed's import path for ScheduleTrigger; the code lives in `portico.sources.schedule`."""

from portico.sources.schedule import *  # noqa: F403
from portico.sources.schedule import __all__ as __all__
