"""The seed's import path for WebhookTrigger; the code lives in `portico.sources.webhook`."""

from portico.sources.webhook import *  # noqa: F403
from portico.sources.webhook import __all__ as __all__
