"""Node CPU per call through the node daemon: the Python relay against the compiled relay, in one run.

Usage: .venv/bin/python bench/relays.py [--quick] [--json PATH]
   (or bench/bench_local.py --node-daemon --relay both)

Both executables hand every call (local store, ADD then DEL) to one whereabouts-node, each on its own store.
A call's node CPU is its executable's (user + system, from the reaped child) plus the daemon's while serving
it: each relay's calls run in blocks, and the daemon's CPU is read around each block (clock ticks: a block's
error is under two ticks). The blocks alternate between the relays, in both orders, so both share the
machine's load. The goal (issue 16): the compiled relay's node CPU per call at most a third of the Python's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_local import machine, node_daemon, process_cpu_ms
from common import (
    WHEREABOUTS,
    Latency,
    Plugin,
    call,
    children_cpu_ms,
    compiled_relay,
    python_env,
    warm_up,
    whereabouts,
)

GOAL = 1 / 3
FULL_CALLS, QUICK_CALLS = 100, 25  # per block; 2 rounds x (ADD + DEL) blocks per relay


@dataclass(frozen=True)
class Block:
    relay_cpu_ms: float
    daemon_cpu_ms: float
    latencies: list[float]
    failures: int


@dataclass(frozen=True)
class RelayFigures:
    calls: int
    relay_cpu_ms: float  # per call: the executable the runtime starts
    daemon_cpu_ms: float  # per call: whereabouts-node serving it
    node_cpu_ms: float  # the sum: what a call costs the node
    add: Latency
    delete: Latency
    failures: int


def plugins(tmp: Path, env: dict[str, str]) -> list[Plugin]:
    python = whereabouts(tmp / "python-store", env)
    compiled = whereabouts(tmp / "compiled-store", env)
    relay = compiled_relay(tmp / "relay")
    return [
        Plugin("python relay", (str(WHEREABOUTS),), python.conf, env, python.data_dir),
        Plugin("compiled relay", (str(relay),), compiled.conf, env, compiled.data_dir),
    ]


def block(plugin: Plugin, command: str, ids: list[str], daemon_pid: int) -> Block:
    relay_before, daemon_before = children_cpu_ms(), process_cpu_ms(daemon_pid)
    calls = [call(plugin, command, cid) for cid in ids]
    return Block(
        relay_cpu_ms=children_cpu_ms() - relay_before,
        daemon_cpu_ms=process_cpu_ms(daemon_pid) - daemon_before,
        latencies=[c.ms for c in calls],
        failures=sum(not c.ok for c in calls),
    )


def compare(tmp: Path, per_block: int) -> dict[str, RelayFigures]:
    env = python_env(tmp / "pycache")
    env["WHEREABOUTS_SOCKET"] = str(tmp / "plugin.sock")
    relays = plugins(tmp, env)
    blocks: dict[str, dict[str, list[Block]]] = {p.name: {"ADD": [], "DEL": []} for p in relays}
    with node_daemon(env, tmp / "plugin.sock", quiet=True) as daemon:
        for plugin in relays:
            warm_up(plugin)
        for round_ in range(2):
            for plugin in relays if round_ == 0 else relays[::-1]:
                ids = [f"r{round_}-{i}" for i in range(per_block)]
                for command in ("ADD", "DEL"):
                    blocks[plugin.name][command].append(block(plugin, command, ids, daemon.pid))
    return {name: figures(by_command) for name, by_command in blocks.items()}


def figures(by_command: dict[str, list[Block]]) -> RelayFigures:
    every = [b for blocks in by_command.values() for b in blocks]
    calls = sum(len(b.latencies) for b in every)
    relay = sum(b.relay_cpu_ms for b in every) / calls
    daemon = sum(b.daemon_cpu_ms for b in every) / calls
    return RelayFigures(
        calls=calls,
        relay_cpu_ms=relay,
        daemon_cpu_ms=daemon,
        node_cpu_ms=relay + daemon,
        add=Latency.of([ms for b in by_command["ADD"] for ms in b.latencies]),
        delete=Latency.of([ms for b in by_command["DEL"] for ms in b.latencies]),
        failures=sum(b.failures for b in every),
    )


def report(result: dict[str, RelayFigures]) -> str:
    python, compiled = result["python relay"], result["compiled relay"]
    ratio = compiled.node_cpu_ms / python.node_cpu_ms
    lines = [
        "Node CPU per call through whereabouts-node (ms): the relay's process + the daemon's = the node's",
        f"{'':16} {'calls':>6} {'relay':>8} {'daemon':>8} {'node':>8} {'ADD p50':>8} {'DEL p50':>8} {'failed':>6}",
    ]
    for name, f in result.items():
        lines.append(
            f"{name:16} {f.calls:6d} {f.relay_cpu_ms:8.2f} {f.daemon_cpu_ms:8.2f} {f.node_cpu_ms:8.2f} "
            f"{f.add.p50:8.2f} {f.delete.p50:8.2f} {f.failures:6d}"
        )
    met = "met" if ratio <= GOAL else "NOT met"
    lines.append(f"compiled / python node CPU per call: {ratio:.2f}x (goal: at most {GOAL:.2f}x: {met})")
    return "\n".join(lines)


def run(quick: bool, tmp: Path) -> dict[str, Any]:
    info = machine()
    per_block = QUICK_CALLS if quick else FULL_CALLS
    print(
        f"Machine: nproc={info['nproc']}  cpu={info['cpu']}  kernel={info['kernel']}  "
        f"load average (1 min)={info['load_average_1m']:.2f}  CPU busy before start={info['busy_before_start']:.2f}\n"
        f"Workload: per relay, 2 rounds of {per_block} sequential ADDs then DELs on a local store",
        flush=True,
    )
    result = compare(tmp, per_block)
    print(report(result), flush=True)
    loadavg = Path("/proc/loadavg").read_text().strip()
    print(f"/proc/loadavg after: {loadavg}", flush=True)
    ratio = result["compiled relay"].node_cpu_ms / result["python relay"].node_cpu_ms
    return {
        "machine": info,
        "relays": {name: asdict(f) for name, f in result.items()},
        "node_cpu_ratio": ratio,
        "goal_met": ratio <= GOAL,
        "loadavg_after": loadavg,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload, for a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-relays-") as tmp:
        result = run(args.quick, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nFigures written to {args.json}")


if __name__ == "__main__":
    main()
