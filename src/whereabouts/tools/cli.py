"""kubectl-whereabouts: who holds an address, how full the pools are, and what is wrong in the store."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from whereabouts.errors import InvalidConfig, WhereaboutsError
from whereabouts.tools.errors import BadInput, ToolError
from whereabouts.tools.view import OUTPUTS, printable_lines

if TYPE_CHECKING:
    from whereabouts.tools.target import Target

PROG = "kubectl-whereabouts"
EXAMPLES = """examples:
  kubectl whereabouts pools                          every pool: size, held, retained, free, usage
  kubectl whereabouts who-has 10.1.2.3               the attachment holding an address, and its pod
  kubectl whereabouts show -n web web-0              a pod's addresses
  kubectl whereabouts release 10.1.2.3 --dry-run     what releasing it would do (refused while its pod lives)
  kubectl whereabouts check --repair                 find leaks and duplicates; fix what is safe
  kubectl whereabouts --etcd http://10.0.0.9:2379 export > pools.json
  kubectl whereabouts --kubeconfig ~/.kube/config import pools.json
  kubectl whereabouts --config /etc/cni/net.d/macvlan.conf import host-local /var/lib/cni/networks/macvlan
  kubectl whereabouts mirror off                     before kubernetes.ippool_mirror: false (no Go plugin left)
  kubectl-whereabouts --local-data-dir /var/lib/cni/whereabouts pools   (on a node, without kubectl)

The datastore: --local-data-dir, --etcd, a network config (--config) or NAD (--nad), --kubeconfig, the flat
file (as the plugin finds it), else $KUBECONFIG or ~/.kube/config (the Kubernetes datastore). docs/operators.md
has the on-call questions and the command answering each."""


def _globals(suppress: bool) -> argparse.ArgumentParser:
    """The flags every command takes, before or after it (after: only those given override)."""
    flags = argparse.ArgumentParser(add_help=False)
    default: Callable[[object], object] = (lambda _: argparse.SUPPRESS) if suppress else (lambda value: value)
    group = flags.add_argument_group("datastore")
    group.add_argument("--kubeconfig", default=default(""), help="kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    group.add_argument("--context", default=default(""), help="the kubeconfig context to use")
    group.add_argument(
        "--pool-namespace",
        default=default(""),
        metavar="NS",
        help="where the pools live (default: the plugin's kubeconfig's namespace, else the context's)",
    )
    group.add_argument("--etcd", default=default(""), metavar="URLS", help="etcd endpoints, comma-separated")
    group.add_argument("--etcd-prefix", default=default(""), metavar="PREFIX", help="etcd key prefix (/whereabouts)")
    group.add_argument("--local-data-dir", default=default(""), metavar="DIR", help="a node's local store")
    group.add_argument("--config", default=default(""), metavar="FILE", help="a network config (conf or conflist)")
    group.add_argument("--nad", default=default(""), metavar="[NS/]NAME", help="a NetworkAttachmentDefinition")
    group.add_argument("--configuration-path", default=default(""), metavar="PATH", help="the flat file")
    out = flags.add_argument_group("output")
    out.add_argument(
        "-o", "--output", default=default("table"), choices=OUTPUTS, help="table (default), wide, json, yaml"
    )
    out.add_argument("-n", "--namespace", default=default(""), metavar="NS", help="the pods' namespace")
    out.add_argument(
        "-A", "--all-namespaces", action="store_true", default=default(False), help="pods of every namespace"
    )
    return flags  # fmt: skip


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=__doc__, epilog=EXAMPLES, parents=[_globals(False)],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _globals(True)

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        epilog = f"example:\n  {example}"
        return sub.add_parser(name, parents=[common], help=summary, description=summary, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip

    pools = command("pools", "every pool: network, range, node slice, size, held, retained, excluded, free, usage",
                    "kubectl whereabouts pools -o wide")  # fmt: skip
    pools.add_argument("--network", default=None, help="only this network_name ('' for the default)")
    who = command("who-has", "who holds an address: attachment, pod, node, since when, pod status, sticky state",
                  "kubectl whereabouts who-has 10.1.2.3")  # fmt: skip
    who.add_argument("address")
    who.add_argument("--network", default=None, help="only this network_name")
    show = command("show", "a pod's addresses (POD: NAME in -n, or NS/NAME); without POD, every pod's in -n or -A",
                   "kubectl whereabouts show -n web web-0")  # fmt: skip
    show.add_argument("pod", nargs="?", default="")
    release = command("release", "release an address or a pod's addresses: refused while the pod lives",
                      "kubectl whereabouts release --pod web/web-0 --dry-run")  # fmt: skip
    release.add_argument("address", nargs="?", default="")
    release.add_argument("--pod", default="", metavar="NS/NAME", help="every address of this pod")
    release.add_argument("--network", default=None, help="the network_name, where the address is in several")
    release.add_argument("--force", action="store_true", help="release even if the pod may be alive")
    release.add_argument("--dry-run", action="store_true", help="say what would be released, change nothing")
    check = command("check", "addresses held twice, orphans both ways, gone pods, node slices, out-of-range entries",
                    "kubectl whereabouts check --repair --dry-run")  # fmt: skip
    check.add_argument("--repair", action="store_true", help="fix what the reconciler's evidence rules allow")
    check.add_argument("--dry-run", action="store_true", help="with --repair: say what would be fixed")
    export = command("export", "every pool entry (sticky fields included) as a JSON document",
                     "kubectl whereabouts --etcd http://10.0.0.9:2379 export > pools.json")  # fmt: skip
    export.add_argument("-f", "--file", default="-", help="write it here (default: stdout)")
    imp = command("import", "import FILE (an export) or import host-local DIR, keeping every address's holder",
                  "kubectl whereabouts --nad macvlan import host-local /var/lib/cni/networks/macvlan")  # fmt: skip
    imp.add_argument("source", metavar="FILE|host-local")
    imp.add_argument("directory", nargs="?", default="", metavar="DIR", help="host-local's network directory")
    imp.add_argument("--ifname", default="eth0", help="host-local: for files that record no interface (eth0)")
    imp.add_argument("--node", default="", help="host-local: the node the addresses were made on (recorded)")
    mirror = command("mirror", "off: give every IPPool entry its reservation before kubernetes.ippool_mirror false; "
                     "on: write the IPPools from the reservations after it is true again",
                     "kubectl whereabouts mirror off --dry-run")  # fmt: skip
    mirror.add_argument("direction", choices=["off", "on"])
    mirror.add_argument("--dry-run", action="store_true", help="say what would be written, change nothing")
    mirror.add_argument("--prune", action="store_true", help="on: remove entries whose address has no reservation")
    mirror.add_argument("--finish", action="store_true",
                        help="off, once every node runs without the mirror: drop its frozen entries")  # fmt: skip
    mirror.add_argument("--force", action="store_true",
                        help="off: even while the Go plugin's Lease says it ran in the last 10 minutes")  # fmt: skip
    completion = command("completion", "a shell completion script", "source <(kubectl-whereabouts completion bash)")
    completion.add_argument("shell", choices=["bash"])
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:  # the completion script's question (see whereabouts.tools.completion)
        from whereabouts.tools.completion import candidates

        print("\n".join(candidates(parser(), argv[1:])))
        return 0
    args = parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ToolError as exc:
        print(printable_lines(f"{PROG}: error: {exc.message}"), file=sys.stderr)
        return exc.status
    except WhereaboutsError as exc:  # the stores' and the service's (an unreachable API, a refused read)
        print(printable_lines(f"{PROG}: error: {exc.msg}"), file=sys.stderr)
        return 2 if isinstance(exc, InvalidConfig) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: not an error
        sys.stderr.close()
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "completion":
        from whereabouts.tools.completion import bash_script

        print(bash_script(), end="")
        return 0
    _check_args(args)
    from whereabouts.tools.target import resolve, warn

    target = resolve(args)
    try:
        text, status = _run(args, target)
    finally:
        target.close()
        warn(target.notes)
    if text and args.command != "export" and args.output not in ("json", "yaml"):
        text = printable_lines(text)  # (JSON and YAML escape what they hold themselves)
    if text:
        print(text, end="" if text.endswith("\n") else "\n")
    return status


def _check_args(args: argparse.Namespace) -> None:
    if args.command == "release" and bool(args.address) == bool(args.pod):
        raise BadInput("release takes an ADDRESS or --pod NS/NAME (one of them)")
    if args.command == "import" and args.source == "host-local" and not args.directory:
        raise BadInput("import host-local needs host-local's network directory: import host-local DIR")
    if args.command == "mirror" and args.prune and args.direction != "on":
        raise BadInput("--prune goes with mirror on")
    if args.command == "mirror" and args.finish and args.direction != "off":
        raise BadInput("--finish goes with mirror off")
    if args.command == "mirror" and args.force and args.direction != "off":
        raise BadInput("--force goes with mirror off")
    if args.command == "check" and args.dry_run and not args.repair:
        raise BadInput("--dry-run goes with --repair (check alone changes nothing)")
    if args.namespace and args.all_namespaces:
        raise BadInput("-n/--namespace and -A/--all-namespaces exclude each other")


def _run(args: argparse.Namespace, target: Target) -> tuple[str, int]:
    if args.command == "pools":
        from whereabouts.tools import usage

        return _or_none(usage.run(target, args.output, args.network), "No pools found."), 0
    if args.command in ("who-has", "show"):
        from whereabouts.tools import lookup

        if args.command == "who-has":
            return lookup.who_has(target, args.address, args.output, args.network), 0
        namespace = args.namespace or (target.kube() and target.pods_namespace) or "default"
        text = lookup.show(target, args.pod, args.output, namespace=namespace, every=args.all_namespaces)
        return _or_none(
            text, f"No addresses held by pods in {'any namespace' if args.all_namespaces else namespace}."
        ), 0
    return _write_commands(args, target)


def _write_commands(args: argparse.Namespace, target: Target) -> tuple[str, int]:
    from whereabouts.tools import check, release, transfer

    if args.command == "mirror":
        from whereabouts.tools import mirror

        lines, left = mirror.run(target, args.direction, dry_run=args.dry_run, prune=args.prune, finish=args.finish,
                                 force=args.force)  # fmt: skip
        return "\n".join(lines), 1 if left else 0
    if args.command == "release":
        return "\n".join(release.run(target, args.address, args.pod, force=args.force, dry_run=args.dry_run,
                                     network=args.network)), 0  # fmt: skip
    if args.command == "check":
        outcome = check.run(target, repair=args.repair, dry_run=args.dry_run)
        return check.report(outcome, args.output), 1 if outcome.failed else 0
    if args.command == "export":
        text = transfer.export(target)
        if args.file == "-":
            return text, 0
        _write_file(args.file, text)
        return "", 0
    if args.source == "host-local":
        lines, refused = transfer.import_host_local(target, args.directory, ifname=args.ifname, node=args.node)
    else:
        lines, refused = transfer.import_document(target, args.source)
    return "\n".join(lines), 1 if refused else 0


def _or_none(text: str, empty: str) -> str:
    if not text:
        print(printable_lines(empty), file=sys.stderr)
    return text


def _write_file(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it names every pod: keep it private
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
