"""How one queue service instance is configured, from the command line or directly in tests."""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from portico.http_guard import ServerLimits

Clock = Callable[[], float]
"""Seconds since the epoch. Leases and retries read time only through it, so tests can move it."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

MEMORY = ":memory:"


@dataclass(frozen=True, kw_only=True)
class QueueServiceSettings:
    db_path: str = MEMORY
    token: str | None = None
    max_body_bytes: int = 1024 * 1024
    """Largest request body, counted after decoding a gzip or deflate Content-Encoding."""
    body_timeout: float = 10.0
    """Seconds a client has to send a request body once its headers arrived (then 408)."""
    limits: ServerLimits = field(default_factory=ServerLimits)
    """Header and keep-alive timeouts and the connection cap."""
    default_max_attempts: int = 3
    default_lease_seconds: float = 30.0
    reap_interval: float = 1.0
    """Seconds between sweeps that return expired leases to the queue."""
    max_batch: int = 2048
    """Most write operations committed in one transaction."""
    max_pending_writes: int = 20_000
    """Writes waiting for a commit beyond which requests get 503 (back-pressure, not unbounded memory)."""
    synchronous: Synchronous = "NORMAL"
    """SQLite `synchronous` in WAL mode: NORMAL survives a killed process, FULL also a power cut."""
    clock: Clock = time.time

    @property
    def in_memory(self) -> bool:
        return self.db_path == MEMORY


def read_token(token_file: str | None) -> str | None:
    """The bearer token from a file (surrounding whitespace ignored) or `PORTICO_QUEUE_TOKEN`; None means
    the service accepts unauthenticated requests."""
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    else:
        token = os.environ.get("PORTICO_QUEUE_TOKEN", "").strip()
    return token or None
