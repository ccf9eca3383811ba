"""New rows in a PostgreSQL table: `DatabasePollingTrigger` claims them and creates a job per row."""

from portico.sources.database_poll.trigger import DatabasePollingTrigger, DatabasePollSource, DatabasePollSpec

__all__ = ["DatabasePollSource", "DatabasePollSpec", "DatabasePollingTrigger"]
