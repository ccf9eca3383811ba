"""The file source's spec (`spec.file`): the one model the CRD, `portico validate` and the library read."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator

from portico.domain.model import SpecModel
from portico.sources.file.tree import matches

FileEvent = Literal["created", "modified", "movedIn"]
ALL_EVENTS: tuple[FileEvent, ...] = ("created", "modified", "movedIn")


class FileSpec(SpecModel):
    """Watch a directory and create one job per complete file.

    Files matching `patterns` that are created, moved in or modified (as chosen in `events`) become a job
    once their size and modification time have not changed for `settleSeconds`. Files already present
    when the trigger starts are triggered too; the idempotency key (path, size, modification time) keeps
    restarts from creating duplicates. The payload carries file_path, size and mtime."""

    path: str = Field(
        min_length=2,
        max_length=4096,
        pattern=r"^/",
        description="Absolute path of the directory to watch, as the operator sees it (a mounted volume).",
    )
    patterns: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=64,
        description="Glob patterns a file must match, against its path relative to `path` and matched "
        "from the right (`*.csv` matches any CSV file, `exports/*.csv` only those in an exports folder).",
    )
    ignore_patterns: list[str] = Field(
        default_factory=lambda: [".*", "*.tmp", "*.part"],
        max_length=64,
        description="Glob patterns of files and directories to skip, matched like `patterns`; by default "
        "hidden files and the usual temporary names of uploads in progress.",
    )
    recursive: bool = Field(default=False, description="Watch subdirectories too (new ones included).")
    events: list[FileEvent] = Field(
        default_factory=lambda: list(ALL_EVENTS),
        min_length=1,
        max_length=3,
        description="Which changes create jobs: `created` (a file written in the directory), `movedIn` "
        "(renamed or moved into it), `modified` (an existing file's content or modification time changed).",
    )
    settle_seconds: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="A file is complete once its size and modification time have not changed for this "
        "long; only then is its job created.",
    )
    trigger_existing: bool = Field(
        default=True, description="Create jobs for matching files already present when the trigger starts."
    )

    @field_validator("patterns", "ignore_patterns")
    @classmethod
    def _valid_globs(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not pattern or "\x00" in pattern:
                raise ValueError("a pattern must be a non-empty glob")
            if pattern.startswith("/"):
                raise ValueError(f"{pattern!r}: patterns are relative to `path`, not absolute")
            try:
                matches(PurePosixPath("probe"), [pattern])
            except ValueError as exc:
                raise ValueError(f"{pattern!r} is not a valid glob: {exc}") from None
        return patterns

    @field_validator("events")
    @classmethod
    def _distinct(cls, events: list[FileEvent]) -> list[FileEvent]:
        if len(set(events)) != len(events):
            raise ValueError("events must not repeat")
        return events
