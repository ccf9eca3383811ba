"""The seed's import path for DatabasePollingTrigger; the code lives in `portico.sources.database_poll`."""

from portico.sources.database_poll import *  # noqa: F403
from portico.sources.database_poll import __all__ as __all__
