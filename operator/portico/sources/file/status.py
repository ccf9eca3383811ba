"""What a file trigger adds to its JobTrigger's status."""

from pydantic import Field

from portico.domain.model import SpecModel


class FileStatus(SpecModel):
    watched_path: str | None = Field(default=None, description="File: the directory being watched.")
    watching: bool | None = Field(
        default=None, description="File: whether the directory is being watched now."
    )
    pending_files: int | None = Field(
        default=None,
        description="File: files seen but not yet stable for settleSeconds, or waiting to be sent.",
    )
