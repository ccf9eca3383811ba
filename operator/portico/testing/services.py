"""Real RabbitMQ and PostgreSQL instances on 127.0.0.1, for the integration tests and the benchmarks.

Each instance is started from the distribution's packages (`hack/install-services.sh` installs them)
on free loopback ports with all its state in a temporary directory, as a child of this process in its
own process group, so that it can be stopped (or restarted, to test reconnects) and leaves nothing
behind: not the broker, not its epmd, not the postmaster's workers. The system-wide services of the
packages are never used.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from portico.testing.processes import die_with_parent, free_port, stop_process_group

logger = logging.getLogger(__name__)

RABBITMQ_SCRIPT_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server",)
INSTALL_HINT = "run `make services` (hack/install-services.sh) to install it"


class ServiceUnavailableError(RuntimeError):
    """The service's binaries are not installed, or it did not come up."""


_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="portico-services")
"""The one thread that starts service processes. The kernel's "parent" of a death signal is the thread
that forked, so a service started from a short-lived thread (`asyncio.to_thread(server.restart)`) would be
killed when that thread ends; this thread lives as long as the process."""


def _spawn(args: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a service process in its own process group, dying with this process."""

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, start_new_session=True, preexec_fn=die_with_parent, **options)

    return _SPAWNER.submit(popen).result()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- RabbitMQ -----------------------------------------------------------------------------------------


def find_rabbitmq_server() -> Path:
    """The broker's start script. Debian's `/usr/sbin/rabbitmq-server` switches to the `rabbitmq` user
    and writes to /var/lib/rabbitmq, so the script it wraps is preferred."""
    for candidate in RABBITMQ_SCRIPT_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("rabbitmq-server")
    if found:
        return Path(found)
    raise ServiceUnavailableError(f"rabbitmq-server is not installed; {INSTALL_HINT}")


def find_epmd() -> Path:
    found = shutil.which("epmd") or next(iter(sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))), None)
    if not found:
        raise ServiceUnavailableError(f"epmd (Erlang) is not installed; {INSTALL_HINT}")
    return Path(found)


@dataclass
class RabbitMQServer:
    """A single-node RabbitMQ broker with its own epmd, node name, ports and data directory.

    `restart()` keeps the data directory, the ports and the credentials, so durable queues and
    persistent messages survive it, as they do a real broker restart."""

    data_dir: Path | None = None
    user: str = "portico"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    ready_timeout: float = 90.0

    port: int = field(default=0, init=False)
    dist_port: int = field(default=0, init=False)
    epmd_port: int = field(default=0, init=False)
    node_name: str = field(default="", init=False)
    _broker: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _epmd: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _own_data_dir: bool = field(default=False, init=False, repr=False)

    def __enter__(self) -> RabbitMQServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"amqp://{quote(self.user, safe='')}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self._broker, self._epmd) if p is not None and p.poll() is None]

    @property
    def running(self) -> bool:
        return self._broker is not None and self._broker.poll() is None

    def start(self) -> None:
        script = find_rabbitmq_server()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="portico-rabbitmq-"))
            self._own_data_dir = True
        if not self.node_name:
            self.node_name = f"portico-{secrets.token_hex(4)}@localhost"
            self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self._write_config()
        try:
            if self._epmd is None or self._epmd.poll() is not None:
                self._start_epmd()
            self._start_broker(script)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the broker (gracefully: SIGTERM lets it flush its message store) and its epmd."""
        self._stop_broker()
        if self._epmd is not None:
            stop_process_group(self._epmd, timeout=5)
            self._epmd = None
        if not keep_data and self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
            self.node_name = ""

    def restart(self, *, down_seconds: float = 0.0) -> None:
        """Stop the broker and start it again on the same ports with the same data."""
        self._stop_broker()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL), as a crash would; `start()` brings it back."""
        if self._broker is not None:
            stop_process_group(self._broker, sig=signal.SIGKILL, timeout=10)
            self._broker = None

    def log_tail(self, lines: int = 30) -> str:
        assert self.data_dir is not None
        return _tail(self.data_dir / "broker.out", lines)

    def _stop_broker(self) -> None:
        if self._broker is not None:
            stop_process_group(self._broker, timeout=30)
            self._broker = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _write_config(self) -> None:
        assert self.data_dir is not None
        for sub in ("mnesia", "log", "home"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.data_dir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = 127.0.0.1:{self.port}",
                    "loopback_users = none",
                    f"default_user = {self.user}",
                    f"default_pass = {self.password}",
                    "log.console = false",
                    "log.file.level = warning",
                    "disk_free_limit.absolute = 10MB",
                    "",
                ]
            )
        )
        (self.data_dir / "enabled_plugins").write_text("[].\n")
        (self.data_dir / "rabbitmq-env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        assert self.data_dir is not None
        d = self.data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                "HOME": str(d / "home"),
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
                "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
                "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
                # The start script then execs the VM instead of forking it, so the process we start *is*
                # the broker: it gets our signals and dies with us.
                "RABBITMQ_ALLOW_INPUT": "true",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-noinput",
            }
        )
        return env

    def _start_epmd(self) -> None:
        """Our own epmd on its own port: a shared one (the package's) would outlive the tests."""
        self._epmd = _spawn(
            [str(find_epmd()), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _port_open(self.epmd_port):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailableError(f"epmd did not start on port {self.epmd_port}")
            time.sleep(0.02)

    def _start_broker(self, script: Path) -> None:
        assert self.data_dir is not None
        self._log = open(self.data_dir / "broker.out", "ab")  # noqa: SIM115 - closed in stop()
        self._broker = _spawn(
            [str(script)],
            env=self._env(),
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _wait_ready(self) -> None:
        """Ready when the broker answers an AMQP protocol header with Connection.Start: it opens its
        listener only once it has booted."""
        assert self._broker is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._broker.poll() is not None:
                raise ServiceUnavailableError(f"rabbitmq-server exited:\n{self.log_tail()}")
            if _amqp_handshake(self.port):
                return
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"rabbitmq-server not ready after {self.ready_timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)


def _amqp_handshake(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            frame = s.recv(7)
            return len(frame) == 7 and frame[0] == 1
    except OSError:
        return False


# --- PostgreSQL ---------------------------------------------------------------------------------------


def find_postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps them off PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise ServiceUnavailableError(f"PostgreSQL is not installed; {INSTALL_HINT}")


@dataclass
class PostgresServer:
    """A PostgreSQL cluster created with initdb and run by `postgres` in the foreground.

    PostgreSQL refuses to run as root; as root, the cluster is owned by and run as the `postgres` OS user
    (which the package creates). Durability is switched off (fsync, full page writes): it is a test
    database."""

    os_user: str = "postgres"
    db_user: str = "portico"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    database: str = "portico"
    ready_timeout: float = 60.0

    port: int = field(default=0, init=False)
    base_dir: Path | None = field(default=None, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def dsn(self) -> str:
        return (
            f"postgresql://{quote(self.db_user, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{self.database}"
        )

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None and self._proc.poll() is None else []

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        bin_dir = find_postgres_bin()
        first_start = self.base_dir is None
        if first_start:
            self._make_base_dir()
            self.port = free_port()
            self._initdb(bin_dir)
        try:
            self._start_postmaster(bin_dir)
            self._wait_ready(bin_dir)
            if first_start:
                self._create_database(bin_dir)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, keep_data: bool = False) -> None:
        self._stop_postmaster()
        if not keep_data and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def restart(self, *, down_seconds: float = 0.0) -> None:
        self._stop_postmaster()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        assert self.base_dir is not None
        return _tail(self.base_dir / "postgres.log", lines)

    # --- internals ---

    def _as_os_user(self) -> dict[str, Any]:
        """Popen arguments that drop root to the cluster's owner."""
        if os.geteuid() != 0:
            return {}
        try:
            pw = pwd.getpwnam(self.os_user)
        except KeyError:
            raise ServiceUnavailableError(
                f"OS user {self.os_user!r} does not exist; {INSTALL_HINT}"
            ) from None
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _make_base_dir(self) -> None:
        """A fresh directory the cluster's owner can reach: pytest's temporary directories are private
        to root, so this one is made directly under the system temp dir."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="portico-postgres-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.os_user)
            os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)

    def _run(self, args: list[str], *, input: bytes | None = None) -> None:
        assert self.base_dir is not None
        proc = subprocess.run(
            args, input=input, capture_output=True, cwd=self.base_dir, timeout=120, **self._as_os_user()
        )
        if proc.returncode != 0:
            raise ServiceUnavailableError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
            )

    def _initdb(self, bin_dir: Path) -> None:
        assert self.base_dir is not None
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.os_user)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        try:
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.db_user,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _start_postmaster(self, bin_dir: Path) -> None:
        assert self.base_dir is not None
        self._log = open(self.base_dir / "postgres.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = _spawn(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.base_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "log_min_messages=warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            **self._as_os_user(),
        )

    def _wait_ready(self, bin_dir: Path) -> None:
        assert self._proc is not None and self.base_dir is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise ServiceUnavailableError(f"postgres exited:\n{self.log_tail()}")
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"postgres not ready after {self.ready_timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _create_database(self, bin_dir: Path) -> None:
        assert self.base_dir is not None
        self._run(
            [
                str(bin_dir / "createdb"),
                "-h",
                str(self.base_dir),
                "-p",
                str(self.port),
                "-U",
                self.db_user,
                self.database,
            ]
        )

    def _stop_postmaster(self) -> None:
        """`pg_ctl stop -m fast`: roll back open transactions, close sessions, checkpoint, exit."""
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ServiceUnavailableError, subprocess.TimeoutExpired):
                    self._run(
                        [
                            str(find_postgres_bin() / "pg_ctl"),
                            "stop",
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "fast",
                            "-w",
                            "-t",
                            "30",
                        ]
                    )
            stop_process_group(self._proc, sig=signal.SIGINT, timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def running_rabbitmq() -> Iterator[RabbitMQServer]:
    with RabbitMQServer() as server:
        yield server


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
