"""Soak: the long-running parts under continuous churn, with token rotations and an API-server restart.

Usage: .venv/bin/python bench/soak.py [--minutes 30 | --seconds S] [--max-cycles N] [--json PATH]

On a kube-apiserver 1.20 of its own (and its etcd; loopback ports, a temp dir, stopped by PID): one
`whereabouts-controller all` (reconciler every minute, pod cleanup, node-slice) and one `whereabouts-node` per
node, two nodes, both authenticating with bound service-account tokens from token files, as projected
tokens are. Pods come and go on both nodes (bench/churn.py) for the whole run; meanwhile the tokens are
rotated twice (the files rewritten, the old tokens revoked) and the API server is stopped and started again
once (the same port, the same etcd). Bounded in time (--minutes) and in requests (--max-cycles).

At the end, and printed with the machine's line: no address handed to two live pods, none leaked (every pool
and reservation empty once the last pods are gone), and the RSS of each process against its value after the
warm-up (a fifth of the run): within 10%. The exit status says whether all three held.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_local import machine
from common import ROOT, WHEREABOUTS

sys.path.insert(0, str(ROOT / "tests"))

# the servers and objects the tests use, from tests/ (found through the path set just above)
from churn import Churn, Node, node_conf
from kube_objects import create_nad, create_node
from kube_server import KubeAPIServer, kube_tools, write_token

NAMESPACE = "soak"
CIDR = "10.120.0.0/22"
RSS_GROWTH_LIMIT = 0.10
PLUGIN, CONTROLLER = "whereabouts", "whereabouts-controller"  # the service accounts (deploy/base/rbac)


@dataclass(frozen=True)
class Settings:
    seconds: float
    max_cycles: int = 20_000
    workers_per_node: int = 2
    down_for: float = 20.0  # seconds the API server stays stopped

    def at(self, fraction: float) -> float:
        return self.seconds * fraction


@dataclass
class Result:
    seconds: float
    machine: dict[str, Any]
    counts: dict[str, int]
    errors: dict[str, int]
    duplicates: list[str]
    leaked: list[str]
    rss_kib: dict[str, dict[str, int]]  # process -> warm-up, highest, end
    events: list[str] = field(default_factory=list)

    @property
    def rss_ok(self) -> bool:
        return all(r["end"] <= r["warm-up"] * (1 + RSS_GROWTH_LIMIT) for r in self.rss_kib.values())

    @property
    def ok(self) -> bool:
        return not self.duplicates and not self.leaked and self.rss_ok and self.counts.get("ADD", 0) > 0


class Tokens:
    """One token file per service account, rotated as the kubelet rotates a projected token."""

    def __init__(self, kube: KubeAPIServer, directory: Path) -> None:
        self.kube, self.directory = kube, directory
        directory.mkdir(parents=True, exist_ok=True)
        self.current = {account: self._mint(account) for account in (PLUGIN, CONTROLLER)}

    def file(self, account: str) -> Path:
        return self.directory / account

    def _mint(self, account: str) -> tuple[str, str]:
        token, secret = self.kube.mint_token(account)
        write_token(self.file(account), token)
        return token, secret

    def rotate(self) -> None:
        """New tokens in the files, then the old ones revoked (refused by the server from then on)."""
        old = dict(self.current)
        self.current = {account: self._mint(account) for account in old}
        for token, secret in old.values():
            self.kube.revoke(token, secret)


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running process, its output in `log`, stopped by its PID when the block ends."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RSSWatch:
    """Samples each process's RSS every few seconds: the value after warm-up, the highest, the last."""

    def __init__(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        self.procs = procs
        self.table: dict[str, dict[str, int]] = {name: {"warm-up": 0, "highest": 0, "end": 0} for name in procs}

    def sample(self, column: str = "") -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            value = rss_kib(proc.pid)
            row = self.table[name]
            row["highest"] = max(row["highest"], value)
            if column:
                row[column] = value


def held(kube: KubeAPIServer) -> list[str]:
    """Every allocation and reservation the store holds: '<kind> <name>'."""
    found = []
    for name, pool in kube.objects(NAMESPACE, "ippools").items():
        found += [f"allocation {name}/{offset}" for offset in pool["spec"].get("allocations") or {}]
    found += [f"reservation {name}" for name in kube.objects(NAMESPACE, "overlappingrangeipreservations")]
    return found


def wait_empty(kube: KubeAPIServer, timeout: float) -> list[str]:
    """Wait until the store holds nothing (pod cleanup and the reconciler finish what the churn left)."""
    deadline = time.monotonic() + timeout
    while (left := held(kube)) and time.monotonic() < deadline:
        time.sleep(2)
    return left


def run(settings: Settings, tmp: Path, log: Callable[[str], None] = print) -> Result:
    info = machine()
    log(f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, Linux {info['kernel']}, "
        f"load {info['load_average_1m']:.2f}, busy before start {info['busy_before_start']:.2f}")  # fmt: skip
    with ExitStack() as stack:
        kube = KubeAPIServer(tmp / "kube", kube_tools())
        stack.callback(kube.stop)
        kube.start()
        kube.install_whereabouts()
        kube.namespace_for_plugin(NAMESPACE)
        tokens = Tokens(kube, tmp / "tokens")
        nodes = [_node(kube, tokens, tmp, name) for name in ("soak-n1", "soak-n2")]
        procs = {f"whereabouts-node {node.name}": stack.enter_context(_daemon(node, tmp)) for node in nodes}
        procs[f"{CONTROLLER} all"] = stack.enter_context(_controller(kube, tokens, tmp))
        _sliced_network(kube)
        stop = threading.Event()
        churn = Churn(kube, NAMESPACE, nodes, tmp / "pycache", stop, settings.max_cycles)
        rss, events = RSSWatch(procs), []
        started = time.monotonic()
        workers = churn.run(settings.workers_per_node)
        _timeline(settings, started, rss, tokens, kube, events, log)
        stop.set()
        for worker in workers:
            worker.join(700)
        leaked = wait_empty(kube, 150)  # pod cleanup at once, stragglers at the reconciler's next minute
        rss.sample("end")
        return Result(round(time.monotonic() - started, 1), info, dict(churn.ledger.counts), dict(churn.ledger.errors),
                      churn.ledger.duplicates, leaked, rss.table, events)  # fmt: skip


def _timeline(
    settings: Settings,
    started: float,
    rss: RSSWatch,
    tokens: Tokens,
    kube: KubeAPIServer,
    events: list[str],
    log: Callable[[str], None],
) -> None:
    """Warm-up, then the two rotations and the restart at set points of the run, sampling RSS throughout."""

    def restart() -> None:
        kube.stop_apiserver()
        time.sleep(settings.down_for)
        kube.start()

    plan: list[tuple[float, str, Callable[[], None]]] = [
        (settings.at(0.2), "warm-up over: RSS taken", lambda: rss.sample("warm-up")),
        (settings.at(0.3), "token rotation 1", tokens.rotate),
        (settings.at(0.5), f"API server stopped for {settings.down_for:.0f} s, then started again", restart),
        (settings.at(0.75), "token rotation 2", tokens.rotate),
    ]
    for when, what, action in plan:
        _sample_until(rss, started + when)
        begun = time.monotonic()
        action()
        events.append(f"{begun - started:7.1f} s  {what} (took {time.monotonic() - begun:.1f} s)")
        log(events[-1])
    _sample_until(rss, started + settings.seconds)


def _sample_until(rss: RSSWatch, deadline: float) -> None:
    while time.monotonic() < deadline:
        rss.sample()
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def _node(kube: KubeAPIServer, tokens: Tokens, tmp: Path, name: str) -> Node:
    create_node(kube, name)
    directory = tmp / name
    directory.mkdir()
    kubeconfig = kube.kubeconfig(directory / "kubeconfig", token_file=tokens.file(PLUGIN), namespace=NAMESPACE,
                                 as_json=True)  # fmt: skip
    return Node(name, directory / "plugin.sock", node_conf(NAMESPACE, kubeconfig, directory, CIDR))


@contextmanager
def _daemon(node: Node, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    daemon = str(WHEREABOUTS.with_name("whereabouts-node"))
    with process([daemon, "--socket", str(node.socket)], tmp / f"{node.name}.log") as proc:
        deadline = time.monotonic() + 30
        while not node.socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("whereabouts-node did not start")
            time.sleep(0.05)
        yield proc


@contextmanager
def _controller(kube: KubeAPIServer, tokens: Tokens, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    kubeconfig = kube.kubeconfig(tmp / "controller.kubeconfig", token_file=tokens.file(CONTROLLER),
                                 namespace=NAMESPACE)  # fmt: skip
    schedule = tmp / "cron"
    schedule.write_text("* * * * *")
    argv = [str(WHEREABOUTS.with_name("whereabouts-controller")), "all", f"--kubeconfig={kubeconfig}",
            f"--namespace={NAMESPACE}", "--metrics-address=127.0.0.1", "--metrics-port=0",
            f"--cron-file={schedule}", "--identity=soak"]  # fmt: skip
    with process(argv, tmp / "controller.log") as proc:
        yield proc


def _sliced_network(kube: KubeAPIServer) -> None:
    """A network cut into node slices, so that the node-slice controller has its work too."""
    config = {"cniVersion": "1.0.0", "name": "soak-sliced", "type": "bridge",
              "ipam": {"type": "whereabouts", "range": "10.121.0.0/16", "node_slice_size": "/24"}}  # fmt: skip
    create_nad(kube, NAMESPACE, "soak-sliced", config)


def report(result: Result, log: Callable[[str], None] = print) -> None:
    counts = result.counts
    log(f"\nsoak of {result.seconds:.0f} s: {counts.get('cycles', 0)} pods, {counts.get('ADD', 0)} ADDs, "
        f"{counts.get('DEL', 0)} DELs, {counts.get('pods deleted without DEL', 0)} pods deleted without a DEL, "
        f"{counts.get('retries', 0)} calls or requests retried; load {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    for error, n in sorted(result.errors.items(), key=lambda item: -item[1])[:6]:
        log(f"  retried {n}x: {error}")
    log(f"addresses handed to two live pods: {len(result.duplicates)} {result.duplicates[:3]}")
    log(f"left in the store after the last pods went: {len(result.leaked)} {result.leaked[:5]}")
    log(f"{'process':<34} {'RSS after warm-up':>18} {'highest':>10} {'at the end':>11} {'change':>8}")
    for name, row in result.rss_kib.items():
        change = (row["end"] - row["warm-up"]) / row["warm-up"] * 100 if row["warm-up"] else float("nan")
        log(f"{name:<34} {row['warm-up']:>14} KiB {row['highest']:>6} KiB {row['end']:>7} KiB {change:>+7.1f}%")
    log(f"RSS within {RSS_GROWTH_LIMIT:.0%} of its value after warm-up: {'yes' if result.rss_ok else 'NO'}; "
        f"soak {'passed' if result.ok else 'FAILED'}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=30.0)
    length.add_argument("--seconds", type=float, help="instead of --minutes (the test suite runs 75)")
    parser.add_argument("--max-cycles", type=int, default=Settings.max_cycles, help="pods made at most")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds else args.minutes * 60
    settings = Settings(seconds, max_cycles=args.max_cycles, down_for=min(30.0, max(5.0, seconds / 20)))
    tmp = Path(tempfile.mkdtemp(prefix="whereabouts-soak-"))
    result = run(settings, tmp)
    report(result)
    if args.json:
        args.json.write_text(json.dumps({**asdict(result), "ok": result.ok}, indent=2))
    if result.ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs kept in {tmp}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
