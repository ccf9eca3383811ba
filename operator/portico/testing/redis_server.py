"""A Redis server from the distribution's `redis-server`, on a free loopback port with a password and
its own data directory, for the Celery target's tests and benchmarks (as `portico.testing.services`
starts RabbitMQ and PostgreSQL)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from portico.testing.processes import free_port, stop_process_group
from portico.testing.services import ServiceUnavailableError, _spawn, _tail


def find_redis_server() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceUnavailableError(
            "redis-server not found: run `make services` (Debian: apt-get install redis-server)"
        )
    return Path(found)


@dataclass
class RedisServer:
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    ready_timeout: float = 30.0
    port: int = field(default=0, init=False)
    data_dir: Path | None = field(default=None, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        binary = find_redis_server()
        self.data_dir = Path(tempfile.mkdtemp(prefix="portico-redis-"))
        self.port = free_port()
        config = self.data_dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"requirepass {self.password}",
                    f"dir {self.data_dir}",
                    "save ''",
                    "appendonly no",
                    "daemonize no",
                    "protected-mode yes",
                    f"logfile {self.data_dir / 'redis.log'}",
                    "",
                ]
            )
        )
        self._log = open(self.data_dir / "redis.out", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = _spawn(
            [str(binary), str(config)], stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.ready_timeout
        while not self._ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = _tail(self.data_dir / "redis.log") + _tail(self.data_dir / "redis.out")
                self.stop()
                raise ServiceUnavailableError(f"redis-server did not start:\n{log}")
            time.sleep(0.02)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                data = b""
                while b"PONG" not in data:
                    chunk = s.recv(1024)
                    if not chunk:
                        return False
                    data += chunk
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc, timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
