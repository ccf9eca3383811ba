"""What a database polling trigger adds to its JobTrigger's status."""

from datetime import datetime

from pydantic import Field

from portico.domain.model import SpecModel


class DatabasePollStatus(SpecModel):
    last_poll_time: datetime | None = Field(
        default=None, description="databasePoll: when the table was last polled."
    )
    last_poll_rows: int | None = Field(
        default=None, description="databasePoll: rows claimed by the last poll."
    )
    connected: bool | None = Field(
        default=None, description="databasePoll: whether the database connection is up."
    )
