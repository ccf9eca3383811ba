"""Operator settings, from the command line and the environment."""

import argparse
import os
import socket
from dataclasses import dataclass, field

from portico.http_guard import ServerLimits
from portico.operator.sharding.shard_map import MAX_SHARDS


class SettingsError(Exception):
    """A setting the operator cannot start with; the message is one line for the user."""


def default_identity() -> str:
    """This replica's name: the Pod's name (the chart sets POD_NAME from the downward API), else the
    host name. Never the login name: a container's numeric user has no passwd entry."""
    return os.environ.get("POD_NAME") or socket.gethostname() or "portico"


@dataclass(frozen=True)
class OperatorSettings:
    queue_url: str
    queue_token: str | None = None
    namespaces: tuple[str, ...] = ()
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 8080
    webhook_limits: ServerLimits = field(default_factory=ServerLimits)
    health_host: str = "0.0.0.0"
    health_port: int = 8081
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    status_interval: float = 1.0
    stop_timeout: float = 20.0
    kubeconfig: str | None = None
    identity: str = field(default_factory=default_identity)
    leader_election: bool = True
    lease_name: str = "portico-operator"
    lease_namespace: str = "default"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    shards: int = 0
    """With N > 0, triggers are spread over the replicas by N shard Leases instead of one leader."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "OperatorSettings":
        queue_url = args.queue_url or os.environ.get("PORTICO_QUEUE_URL")
        if not queue_url:
            raise SettingsError("the queue service URL is required (--queue-url or PORTICO_QUEUE_URL)")
        token_file = args.queue_token_file or os.environ.get("PORTICO_QUEUE_TOKEN_FILE")
        token = None
        if token_file:
            try:
                with open(token_file) as f:
                    token = f.read(64 * 1024).strip() or None
            except OSError as exc:
                raise SettingsError(f"queue token file {token_file}: {exc.strerror}") from None
        return cls(
            queue_url=queue_url.rstrip("/"),
            queue_token=token,
            namespaces=tuple(args.namespaces),
            webhook_host=args.webhook_host,
            webhook_port=args.webhook_port,
            webhook_limits=ServerLimits(
                header_timeout=args.webhook_header_timeout,
                keepalive_timeout=args.webhook_keepalive_timeout,
                max_connections=args.webhook_max_connections,
            ),
            health_host=args.health_host,
            health_port=args.health_port,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
            status_interval=args.status_interval,
            stop_timeout=args.stop_timeout,
            kubeconfig=args.kubeconfig,
            identity=args.id or default_identity(),
            leader_election=args.leader_election,
            lease_name=args.lease_name,
            lease_namespace=(
                args.lease_namespace
                or os.environ.get("POD_NAMESPACE")
                or (args.namespaces[0] if args.namespaces else "default")
            ),
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
            shards=_shards(args),
        )


def _shards(args: argparse.Namespace) -> int:
    shards = int(getattr(args, "shards", 0) or 0)
    if not 0 <= shards <= MAX_SHARDS:
        raise SettingsError(f"--shards must be between 0 (no sharding) and {MAX_SHARDS}, not {shards}")
    return shards
