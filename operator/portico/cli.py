"""The `portico` command. Each subcommand imports its implementation lazily, so `portico --help`
stays fast and `portico validate` works without a cluster."""

import argparse
import os
import sys
from collections.abc import Sequence

from portico import __version__


def _operator(args: argparse.Namespace) -> int:
    from portico.operator.main import run_operator

    return run_operator(args)


def _queue_service(args: argparse.Namespace) -> int:
    from portico.queue_service.server import run_queue_service

    return run_queue_service(args)


def _worker(args: argparse.Namespace) -> int:
    from portico.worker.main import run_worker

    return run_worker(args)


def _validate(args: argparse.Namespace) -> int:
    from portico.operator.validate import EXIT_UNREADABLE, validate_paths

    try:
        return validate_paths(args.filename, out=sys.stdout)
    except Exception as exc:  # one line, never a traceback, whatever the input did
        print(f"portico validate: cannot validate: {type(exc).__name__}", file=sys.stderr)
        return EXIT_UNREADABLE


def _add_limit_arguments(parser: argparse.ArgumentParser, prefix: str, server: str) -> None:
    """The connection limits of an HTTP server (`portico.http_guard.ServerLimits`)."""
    from portico.http_guard import ServerLimits

    defaults = ServerLimits()
    parser.add_argument(
        f"--{prefix}header-timeout",
        type=float,
        default=defaults.header_timeout,
        help=f"seconds a client of the {server} has to send a request's headers (then 408)",
    )
    parser.add_argument(
        f"--{prefix}keepalive-timeout",
        type=float,
        default=defaults.keepalive_timeout,
        help=f"seconds an idle keep-alive connection to the {server} stays open",
    )
    parser.add_argument(
        f"--{prefix}max-connections",
        type=int,
        default=defaults.max_connections,
        help=f"open connections to the {server} beyond which new ones are answered 503",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portico",
        description="Portico Triggers: declare background-job triggers as Kubernetes resources.",
    )
    parser.add_argument("--version", action="version", version=f"portico {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    op = sub.add_parser("operator", help="run the operator that turns JobTriggers into running triggers")
    op.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch only this namespace (repeatable); default: cluster-wide",
    )
    op.add_argument("--queue-url", default=None, help="queue service base URL (env PORTICO_QUEUE_URL)")
    op.add_argument(
        "--queue-token-file",
        default=None,
        help="file holding the queue service bearer token (env PORTICO_QUEUE_TOKEN_FILE)",
    )
    op.add_argument("--webhook-host", default="0.0.0.0", help="address of the webhook server")
    op.add_argument("--webhook-port", type=int, default=8080, help="port of the webhook server (0: random)")
    _add_limit_arguments(op, "webhook-", "webhook server")
    op.add_argument("--health-host", default="0.0.0.0", help="address of the liveness/readiness server")
    op.add_argument("--health-port", type=int, default=8081, help="port of liveness/readiness probes")
    op.add_argument("--metrics-host", default="0.0.0.0", help="address of the Prometheus metrics server")
    op.add_argument("--metrics-port", type=int, default=9090, help="port of the Prometheus metrics server")
    op.add_argument(
        "--status-interval",
        type=float,
        default=1.0,
        help="seconds between status patches of one trigger (coalescing)",
    )
    op.add_argument("--stop-timeout", type=float, default=20.0, help="seconds allowed for a graceful stop")
    op.add_argument(
        "--log-format", choices=["json", "text"], default=None, help="log format (env PORTICO_LOG_FORMAT)"
    )
    op.add_argument("--log-level", default="INFO", help="log level")
    op.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster or $KUBECONFIG)")
    op.add_argument(
        "--id",
        default=None,
        help="identity of this replica (Lease holder, Events); default: env POD_NAME, else the host name",
    )
    op.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run single-active sources only on the lease holder",
    )
    op.add_argument("--lease-name", default="portico-operator", help="name of the leader-election Lease")
    op.add_argument(
        "--lease-namespace",
        default=None,
        help="namespace of the Lease (env POD_NAMESPACE; default: the first --namespace, else 'default')",
    )
    op.add_argument("--lease-duration", type=float, default=15.0, help="seconds a Lease is held unrenewed")
    op.add_argument(
        "--renew-deadline", type=float, default=10.0, help="seconds the leader keeps trying to renew"
    )
    op.add_argument("--retry-period", type=float, default=2.0, help="seconds between Lease attempts")
    op.add_argument(
        "--shards",
        type=int,
        default=os.environ.get("PORTICO_SHARDS") or "0",
        help="spread the single-active sources over the replicas by this many shard Leases (e.g. 32; "
        "0: one leader runs them all; env PORTICO_SHARDS)",
    )
    op.set_defaults(func=_operator)

    qs = sub.add_parser("queue-service", help="run the reference job-queue service")
    qs.add_argument("--host", default="127.0.0.1", help="listen address")
    qs.add_argument("--port", type=int, default=8000, help="listen port (0: random)")
    qs.add_argument("--db", default="portico-queue.db", help="SQLite database file, or :memory:")
    qs.add_argument("--token-file", default=None, help="require this bearer token (env PORTICO_QUEUE_TOKEN)")
    qs.add_argument("--max-body-bytes", type=int, default=1024 * 1024, help="largest accepted request body")
    qs.add_argument(
        "--body-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request body (then 408)",
    )
    _add_limit_arguments(qs, "", "queue service")
    qs.add_argument("--log-level", default="INFO", help="log level")
    qs.set_defaults(func=_queue_service)

    wk = sub.add_parser("worker", help="claim jobs from the queue service and run handlers on them")
    wk.add_argument(
        "--handlers",
        required=True,
        help="import path of the handlers, package.module:attribute (a JobHandler, a list, a mapping "
        "of job type to async function, or a factory returning one)",
    )
    wk.add_argument("--queue-url", default=None, help="queue service base URL (env PORTICO_QUEUE_URL)")
    wk.add_argument(
        "--queue-token-file",
        default=None,
        help="file holding the queue service bearer token (env PORTICO_QUEUE_TOKEN_FILE)",
    )
    wk.add_argument(
        "-q",
        "--queue",
        action="append",
        default=[],
        dest="queues",
        help="queue to claim from (repeatable; earlier queues are served first); default: default",
    )
    wk.add_argument("--concurrency", type=int, default=4, help="jobs handled at the same time")
    wk.add_argument("--lease-seconds", type=float, default=30.0, help="lease length; renewed every third")
    wk.add_argument(
        "--handler-timeout", type=float, default=300.0, help="longest attempt, unless the handler sets one"
    )
    wk.add_argument(
        "--shutdown-timeout",
        type=float,
        default=25.0,
        help="on SIGTERM, seconds running jobs get to finish before they are released",
    )
    wk.add_argument("--poll-interval", type=float, default=1.0, help="longest wait between empty claims")
    wk.add_argument(
        "--retry-backoff-base", type=float, default=1.0, help="seconds before the first retry (doubling)"
    )
    wk.add_argument("--retry-backoff-max", type=float, default=300.0, help="longest wait between retries")
    wk.add_argument(
        "--max-payload-bytes",
        type=int,
        default=1024 * 1024,
        help="jobs with a larger payload fail for good instead of reaching a handler",
    )
    wk.add_argument("--metrics-host", default="0.0.0.0", help="address of the metrics and probes server")
    wk.add_argument(
        "--metrics-port", type=int, default=9100, help="port of /metrics, /healthz, /readyz (0: random)"
    )
    wk.add_argument("--id", default=None, help="worker identity shown in the queue (default: host-pid)")
    wk.add_argument(
        "--log-format", choices=["json", "text"], default=None, help="log format (env PORTICO_LOG_FORMAT)"
    )
    wk.add_argument("--log-level", default="INFO", help="log level")
    wk.set_defaults(func=_worker)

    va = sub.add_parser("validate", help="validate JobTrigger manifests offline (for CI and GitOps)")
    va.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help=(
            "manifest file or directory (repeatable; '-' for stdin); exit 1 if a manifest is invalid, "
            "2 if an input cannot be read"
        ),
    )
    va.set_defaults(func=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
