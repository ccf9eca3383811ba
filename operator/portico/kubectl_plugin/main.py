"""`kubectl-portico`: the command line. kubectl finds it on PATH and runs it as `kubectl portico ...`.

kubectl's conventions hold: `-n`, `-A`, `--context`, `--kubeconfig` (before or after the command),
`-o json|yaml|wide|name`, and exit codes 0 (done), 1 (an error: printed as `error: ...`), 2 (bad usage).
"""

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, TextIO

from kubernetes_asyncio.client.exceptions import ApiException

from portico import __version__
from portico.kubectl_plugin.cluster import Cluster, PluginError, Target, api_error

EXIT_ERROR = 1
EXIT_USAGE = 2


def _global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The kubectl flags. On subcommands they default to SUPPRESS, so a flag given before the command
    is not overwritten by the subcommand's default."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("-n", "--namespace", default=default(None), help="namespace of the triggers")
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", default=default(False), help="every namespace"
    )
    parser.add_argument("--context", default=default(None), help="kubeconfig context to use")
    parser.add_argument("--kubeconfig", default=default(None), help="kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument(
        "--request-timeout",
        type=_positive_seconds,
        default=default(30.0),
        help="seconds to wait for one API request",
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return value


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone offset, e.g. 2026-11-29T09:00:00Z")
    return moment


def _queue_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue-url", help="queue service URL (default: PORTICO_QUEUE_URL, else the operator's)"
    )
    parser.add_argument("--queue-token-file", help="file with the queue service's bearer token")
    parser.add_argument(
        "--operator-namespace", help="where the operator runs (default: search every namespace)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl portico",
        description="Operate Portico JobTriggers: list, predict, run, pause, inspect, diagnose.",
    )
    parser.add_argument("--version", action="version", version=f"kubectl-portico {__version__}")
    _global_flags(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, description=help)

    get = command("get", "list triggers with phase, jobs, next fire, target and last error")
    get.add_argument("names", nargs="*", metavar="NAME")
    get.add_argument("-o", "--output", choices=["wide", "json", "yaml", "name"])
    get.add_argument("-l", "--selector", help="label selector, e.g. team=finance")

    nxt = command("next", "the next fire times of schedule triggers, in their time zone and UTC")
    nxt.add_argument("name", nargs="?", metavar="NAME", help="one trigger (default: every schedule trigger)")
    nxt.add_argument(
        "--count", type=int, default=None, help="how many fire times (default: 5 for one, 1 for all)"
    )
    nxt.add_argument("--from", dest="after", type=_moment, help="compute after this time (default: now)")
    nxt.add_argument("-o", "--output", choices=["json", "yaml"])

    run = command("run-now", "fire a schedule trigger once now and wait until its job is accepted")
    run.add_argument("name", metavar="NAME")
    run.add_argument("--timeout", type=_positive_seconds, default=60.0, help="seconds to wait (default 60)")
    run.add_argument("--no-wait", dest="wait", action="store_false", help="ask and return at once")
    run.add_argument("-o", "--output", choices=["json", "yaml"])

    for verb, text in (
        ("suspend", "stop triggers without deleting them"),
        ("resume", "restart suspended triggers"),
    ):
        p = command(verb, text)
        p.add_argument("names", nargs="+", metavar="NAME")

    hist = command("history", "the trigger's recent jobs in the queue service, with status and attempts")
    hist.add_argument("name", metavar="NAME")
    hist.add_argument("--limit", type=int, default=20, help="how many recent jobs (default 20)")
    hist.add_argument("-o", "--output", choices=["wide", "json", "yaml"])
    _queue_flags(hist)

    desc = command("describe", "status, conditions, Events, and for webhooks the URL with a signed curl")
    desc.add_argument("name", metavar="NAME")
    desc.add_argument("--show-secret", action="store_true", help="put the webhook secret into the curl")
    desc.add_argument("--webhook-url", help="webhook base URL (default: the chart's Ingress or Service)")
    desc.add_argument(
        "--body", help="request body of the example curl (default: a job request, or {} in payload mode)"
    )
    desc.add_argument("--operator-namespace", help="where the operator runs (default: search)")

    doc = command("doctor", "check the CRD, operator Pods, leader Lease, queue service and your access")
    doc.add_argument("-o", "--output", choices=["json", "yaml"])
    doc.add_argument("--lease-name", help="leader Lease name (default: from the operator Deployment)")
    doc.add_argument("--lease-namespace", help="leader Lease namespace (default: the operator's)")
    _queue_flags(doc)
    return parser


Handler = Callable[[Cluster, argparse.Namespace, TextIO, TextIO], Coroutine[Any, Any, int]]


async def _get(cluster: Cluster, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from portico.kubectl_plugin.get import get

    return await get(
        cluster,
        a.names,
        output=a.output,
        all_namespaces=a.all_namespaces,
        selector=a.selector,
        out=out,
        err=err,
    )


async def _next(cluster: Cluster, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from portico.kubectl_plugin.next_fires import next_fires

    count = a.count if a.count is not None else (5 if a.name else 1)
    return await next_fires(
        cluster,
        a.name,
        count=count,
        after=a.after,
        output=a.output,
        all_namespaces=a.all_namespaces,
        out=out,
        err=err,
    )


async def _run_now(cluster: Cluster, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from portico.kubectl_plugin.actions import run_now

    return await run_now(cluster, a.name, wait_seconds=a.timeout, wait=a.wait, output=a.output, out=out)


async def _suspend(cluster: Cluster, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from portico.kubectl_plugin.actions import set_suspended

    for name in a.names:
        await set_suspended(cluster, name, a.command == "suspend", out)
    return 0


async def _history(cluster: Cluster, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from portico.kubectl_plugin.queue import find_queue, history

    endpoint = await find_queue(cluster, a.queue_url, a.queue_token_file, a.operator_namespace)
    return await history(
        cluster,
        a.name,
        endpoint,
        limit=a.limit,
        output=a.output,
        request_seconds=a.request_timeout,
        out=out,
        err=err,
    )


async def _describe(cluster: Cluster, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from portico.kubectl_plugin.describe import describe

    return await describe(
        cluster,
        a.name,
        webhook_url=a.webhook_url,
        operator_namespace=a.operator_namespace,
        show_secret=a.show_secret,
        body=a.body,
        out=out,
    )


async def _doctor(cluster: Cluster, a: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from portico.kubectl_plugin.doctor import Doctor, DoctorOptions, print_checks

    options = DoctorOptions(
        operator_namespace=a.operator_namespace,
        lease_name=a.lease_name,
        lease_namespace=a.lease_namespace,
        queue_url=a.queue_url,
        queue_token_file=a.queue_token_file,
        timeout=min(a.request_timeout, 10.0),
    )
    return print_checks(await Doctor(cluster, options).run(), a.output, out)


HANDLERS: dict[str, Handler] = {
    "get": _get,
    "next": _next,
    "run-now": _run_now,
    "suspend": _suspend,
    "resume": _suspend,
    "history": _history,
    "describe": _describe,
    "doctor": _doctor,
}


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    target = Target(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        all_namespaces=args.all_namespaces,
        request_timeout=args.request_timeout,
    )
    cluster = await Cluster.connect(target)
    try:
        return await HANDLERS[args.command](cluster, args, out, err)
    finally:
        await cluster.close()


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    if args.all_namespaces and args.command not in ("get", "next"):
        err.write(f"error: -A/--all-namespaces is not supported by {args.command}\n")
        return EXIT_USAGE
    if args.all_namespaces and (getattr(args, "names", None) or getattr(args, "name", None)):
        err.write("error: a trigger cannot be named across all namespaces: use -n NAMESPACE\n")
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, out, err))
    except PluginError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_ERROR
    except ApiException as exc:
        err.write(f"error: {api_error(exc, 'the API server refused the request')}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except (OSError, TimeoutError) as exc:
        err.write(f"error: cannot reach the API server: {exc or type(exc).__name__}\n")
        return EXIT_ERROR


def entry_point() -> None:
    sys.exit(main())
