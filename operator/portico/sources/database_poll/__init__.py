"""Rows of a PostgreSQL table: `DatabasePollingTrigger` claims pending rows and creates one job per row."""

from portico.sources.database_poll.source import DatabasePollSource
from portico.sources.database_poll.spec import DatabasePollSpec
from portico.sources.database_poll.sql import ClaimStatements, quote_identifier, quote_table
from portico.sources.database_poll.trigger import DatabasePollingTrigger
from portico.sources.database_poll.values import json_safe

__all__ = [
    "ClaimStatements",
    "DatabasePollSource",
    "DatabasePollSpec",
    "DatabasePollingTrigger",
    "json_safe",
    "quote_identifier",
    "quote_table",
]
