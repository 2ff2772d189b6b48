"""`whereabouts-controller {reconcile,pod-cleanup,node-slice,pool-usage,all}`: the entry point. Thin: it parses flags,
builds the Context, and runs each controller either once (`--once`) or as a long-running, leader-elected
loop with metrics and health endpoints."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable

from whereabouts.controller.context import Context
from whereabouts.controller.cron import SCHEDULE_FILES, CronError, Schedule
from whereabouts.controller.health import Backoff, serve
from whereabouts.controller.leader import LeaderElector
from whereabouts.errors import WhereaboutsError
from whereabouts.kube.credentials import load_credentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.controller.reconcile import Reconciler

COMMANDS = ("reconcile", "pod-cleanup", "node-slice", "pool-usage")
SCHEDULE_POLL = 5.0  # seconds between reads of the schedule file while waiting for the next run
STEADY = 60.0  # seconds a controller ran before failing: its retries start again from the shortest wait


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="whereabouts-controller", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ""), help="default: in-cluster")
    common.add_argument("--namespace", default="", help="where the pools live (default: the kubeconfig's)")
    common.add_argument("--once", action="store_true", help="process the current state, then exit")
    common.add_argument("--dry-run", action="store_true", help="log what would be done, change nothing")
    common.add_argument("--metrics-address", default="0.0.0.0")
    common.add_argument("--metrics-port", type=int, default=8080, help="0: pick a free port")
    common.add_argument("--identity", default="", help="this replica's name in Leases (default: hostname_pid)")
    common.add_argument("--lease-duration", type=float, default=15.0)
    common.add_argument("--renew-deadline", type=float, default=10.0)
    common.add_argument("--retry-period", type=float, default=2.0)
    schedule = argparse.ArgumentParser(add_help=False)
    schedule.add_argument(
        "--cron-file",
        action="append",
        default=[],
        help="a file of the whereabouts-config "
        "ConfigMap (repeatable, the first holding an expression wins; default: "
        f"{', '.join(SCHEDULE_FILES)})",
    )
    schedule.add_argument("--configuration-path", default="", help="the flat file (reconciler_cron_expression)")
    node = argparse.ArgumentParser(add_help=False)
    node.add_argument("--node", default="", help="only pods of this node (default: all nodes)")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("reconcile", parents=[common, schedule], help="release leaked allocations on a schedule")
    sub.add_parser("pod-cleanup", parents=[common, node], help="release a deleted pod's allocations at once")
    sub.add_parser("node-slice", parents=[common], help="keep each network's NodeSlicePool in step with nodes")
    sub.add_parser("pool-usage", parents=[common], help="keep each IPPool's usage in its status (kubectl get ippools)")
    every = sub.add_parser("all", parents=[common, schedule, node], help="all of them in one process")
    every.add_argument("--skip", action="append", default=[], choices=COMMANDS, help="leave this one out (repeatable)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        credentials = load_credentials(args.kubeconfig)
    except WhereaboutsError as exc:
        print(f"whereabouts-controller: {exc.msg}", file=sys.stderr)
        return 2
    ctx = Context(
        credentials=credentials,
        namespace=args.namespace or credentials.namespace,
        dry_run=args.dry_run,
        identity=args.identity or f"{socket.gethostname()}_{os.getpid()}",
    )
    try:
        workers = _workers(args, ctx)
    except CronError as exc:  # a schedule that does not parse is a configuration error: say so, do not guess
        print(f"whereabouts-controller: {exc}", file=sys.stderr)
        return 2
    if args.once:
        return _run_once(ctx, workers)
    return _run_forever(args, ctx, workers)


Worker = tuple[str, Callable[[], object], Callable[[threading.Event], None]]  # (name, once, forever)


def _workers(args: argparse.Namespace, ctx: Context) -> list[Worker]:
    """Each subcommand imports only its own controller."""
    workers: list[Worker] = []
    chosen = [c for c in COMMANDS if c not in getattr(args, "skip", [])] if args.command == "all" else [args.command]
    if "reconcile" in chosen:
        from whereabouts.controller.reconcile import Reconciler

        reconciler = Reconciler(ctx)
        files = args.cron_file or SCHEDULE_FILES
        schedule = Schedule(files, _flat_file_expression(args.configuration_path), log=ctx.log)
        workers.append(("reconcile", reconciler.run_once, lambda stop: _on_schedule(ctx, schedule, reconciler, stop)))
    if "pod-cleanup" in chosen:
        from whereabouts.controller.podcleanup import PodCleanup

        cleanup = PodCleanup(ctx, node=args.node)
        workers.append(("pod-cleanup", cleanup.sync, cleanup.run))
    if "node-slice" in chosen:
        from whereabouts.controller.nodeslice import NodeSliceController

        slicer = NodeSliceController(ctx)
        workers.append(("node-slice", slicer.sync, slicer.run))
    if "pool-usage" in chosen:
        from whereabouts.controller.usage import PoolUsage

        usage = PoolUsage(ctx)
        workers.append(("pool-usage", usage.sync, usage.run))
    return workers


def _run_once(ctx: Context, workers: list[Worker]) -> int:
    status = 0
    for name, once, _ in workers:
        try:
            once()
        except WhereaboutsError as exc:
            ctx.log(f"{name}: failed: {exc.msg}")
            status = 1
        except Exception as exc:  # a bug, or input nothing foresaw: the other controllers still run
            ctx.log(f"{name}: failed: {''.join(traceback.format_exception(exc)).rstrip()}")
            status = 1
    return status


def _run_forever(args: argparse.Namespace, ctx: Context, workers: list[Worker]) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = serve(args.metrics_address, args.metrics_port, ctx.registry, ctx.health)
    ctx.log(f"{args.command}: metrics and health on {args.metrics_address}:{server.server_address[1]}")
    lease = "whereabouts-" + (args.command if args.command != "all" else "controller")
    if args.command == "pod-cleanup" and args.node:
        lease += f"-{args.node}"  # one per node: each node's cleanup acts on its own pods only
    elector = LeaderElector(
        ctx.client(), name=lease, namespace=ctx.namespace, identity=ctx.identity, duration=args.lease_duration,
        deadline=args.renew_deadline, retry=args.retry_period, log=ctx.log, health=ctx.health,
    )  # fmt: skip
    elector.stop = stop
    ctx.may_act = lambda: elector.is_leader
    threads = [threading.Thread(target=elector.run, name="leader", daemon=True)]
    threads += [threading.Thread(target=_leading(ctx, name, forever, stop), name=name, daemon=True)
                for name, _, forever in workers]  # fmt: skip
    for thread in threads:
        thread.start()
    ctx.health.ready.set()
    stop.wait()
    for thread in threads:
        thread.join(timeout=args.renew_deadline)
    server.shutdown()
    return 0


def _leading(
    ctx: Context, name: str, forever: Callable[[threading.Event], None], stop: threading.Event
) -> Callable[[], None]:
    """Run `forever` while this replica leads; when leadership is lost, stop it and wait to lead again."""

    def loop() -> None:
        backoff = Backoff()
        while not stop.is_set():
            ctx.health.beat(name)
            if not ctx.may_act():
                stop.wait(0.5)
                continue
            term = threading.Event()
            watcher = threading.Thread(target=_end_term, args=(ctx, term, stop), daemon=True)
            watcher.start()
            started = time.monotonic()
            try:
                forever(term)
            except Exception as exc:  # said (log, /readyz) until the controller says it works again
                if not isinstance(exc, WhereaboutsError):  # a bug, or input nothing foresaw: its traceback too
                    ctx.log(f"{name}: failed: {''.join(traceback.format_exception(exc)).rstrip()}")
                ctx.health.failing(name, exc, ctx.log)
                if time.monotonic() - started > STEADY:
                    backoff.reset()  # it had been working: this is a new trouble
                backoff.wait(stop)
            term.set()

    return loop


def _end_term(ctx: Context, term: threading.Event, stop: threading.Event) -> None:
    while not term.is_set():
        if stop.is_set() or not ctx.may_act():
            term.set()
        term.wait(0.5)


def _on_schedule(ctx: Context, schedule: Schedule, reconciler: Reconciler, stop: threading.Event) -> None:
    """Run the reconciler at each time the schedule names, re-reading the schedule while waiting."""
    reconciler.publish_pools()  # the pool gauges from the start of this replica's term, not from the first run
    if reconciler.owed:  # the last term's run never completed (the API server was down): run it now
        reconciler.run_until_done(stop)
    previous: tuple[object, dt.datetime] | None = None  # (expression, due time) of the last run
    while not stop.is_set():
        expression = schedule.current()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        # counted from the previous run's due time, as gocron counts (it matters for @every), unless that is past
        due = expression.next_after(previous[1] if previous and previous[0] is expression else now)
        if due <= now:
            due = expression.next_after(now)
        ctx.log(f"reconcile: next run at {due.isoformat()}Z ({expression.text!r})")
        while not stop.is_set() and dt.datetime.now(dt.UTC).replace(tzinfo=None) < due:
            ctx.health.beat("reconcile")
            remaining = (due - dt.datetime.now(dt.UTC).replace(tzinfo=None)).total_seconds()
            stop.wait(max(0.0, min(SCHEDULE_POLL, remaining)))
            if schedule.current() is not expression:
                break  # the schedule changed: compute the next run from the new one
        else:
            previous = (expression, due)
            if not stop.is_set() and ctx.may_act():
                reconciler.run_until_done(stop)


def _flat_file_expression(path: str) -> str:
    from whereabouts.config import read_flat_file

    try:
        return str(read_flat_file(path or None)[0].get("reconciler_cron_expression") or "")
    except WhereaboutsError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
