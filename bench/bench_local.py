"""Benchmark: whereabouts on its local store against the reference host-local IPAM plugin, in one run.

Usage: .venv/bin/python bench/bench_local.py [--quick] [--json PATH] [--node-daemon] [--relay python|compiled|both]

Both plugins are exec'd exactly as a CNI runtime execs an IPAM plugin (CNI_COMMAND, config on stdin), each on
its own fresh data directory. whereabouts runs with a warm bytecode cache kept outside src/
(PYTHONPYCACHEPREFIX), as an installed package would; bench/imports.py also times it without one.
`--relay compiled` runs the compiled relay (scripts/build-relay.sh) as the whereabouts executable, as
install-cni deploys it; `--relay both` compares the node CPU per call of the two relays through the node
daemon instead (bench/relays.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import imports
from common import (
    WHEREABOUTS,
    Call,
    Latency,
    Plugin,
    call,
    children_cpu_ms,
    compiled_relay,
    host_local,
    load_average,
    machine_busy_ms,
    python_env,
    warm_up,
    whereabouts,
)

# The targets from DESIGN.md "Performance": latency ratios are whereabouts / host-local.
TARGET_ADD_P50_RATIO = 4.0
TARGET_THROUGHPUT_RATIO = 0.5
NOISY = "\n  (other work is running: absolute figures are inflated; the ratios, measured side by side, less so)"


@dataclass(frozen=True)
class Settings:
    sequential: int
    burst: int
    callers: int
    startup_runs: int


FULL = Settings(sequential=200, burst=300, callers=40, startup_runs=40)
QUICK = Settings(sequential=30, burst=80, callers=20, startup_runs=10)


@dataclass(frozen=True)
class Sequential:
    add: Latency
    delete: Latency
    add_cpu_ms: float  # mean CPU (user + system) per call: what bounds throughput on a busy node
    del_cpu_ms: float
    failures: int


@dataclass(frozen=True)
class Burst:
    wall_s: float
    adds_per_s: float
    cpu_ms_per_add: float  # all children's CPU during the ADD burst / ADDs
    cpu_busy: float  # that CPU / (wall time x nproc): near 1 means CPU-bound, lower means waiting
    latency: Latency
    duplicates: int
    failures: int
    held_after_add: int
    del_failures: int
    held_after_del: int
    others_busy: float  # CPU that other processes on the machine used meanwhile / (wall time x nproc)


@dataclass(frozen=True)
class Figures:
    sequential: Sequential
    burst: Burst


def sequential(plugins: list[Plugin], n: int) -> dict[str, Sequential]:
    """N ADDs then N DELs per plugin, the plugins' calls interleaved so they share the machine's load."""
    ids = [f"seq-{i}" for i in range(n)]
    adds = _interleaved(plugins, "ADD", ids)
    dels = _interleaved(plugins, "DEL", ids)
    return {p.name: _sequential_figures(adds[p.name], dels[p.name]) for p in plugins}


def _interleaved(plugins: list[Plugin], command: str, ids: list[str]) -> dict[str, list[tuple[Call, float]]]:
    """Each call with the CPU time its process used (one child at a time, so the rusage delta is its own)."""
    calls: dict[str, list[tuple[Call, float]]] = {p.name: [] for p in plugins}
    for cid in ids:
        for plugin in plugins:
            before = children_cpu_ms()
            done = call(plugin, command, cid)
            calls[plugin.name].append((done, children_cpu_ms() - before))
    return calls


def _sequential_figures(adds: list[tuple[Call, float]], dels: list[tuple[Call, float]]) -> Sequential:
    return Sequential(
        add=Latency.of([c.ms for c, _ in adds]),
        delete=Latency.of([c.ms for c, _ in dels]),
        add_cpu_ms=statistics.fmean(cpu for _, cpu in adds),
        del_cpu_ms=statistics.fmean(cpu for _, cpu in dels),
        failures=sum(not c.ok for c, _ in adds + dels),
    )


def _concurrently(plugin: Plugin, command: str, ids: list[str], callers: int) -> tuple[list[Call], float]:
    with ThreadPoolExecutor(max_workers=callers) as pool:
        start = time.perf_counter()
        calls = list(pool.map(lambda cid: call(plugin, command, cid), ids))
        return calls, time.perf_counter() - start


def duplicates(calls: list[Call]) -> int:
    """Addresses handed out more than once (each extra holder counts once)."""
    counts = Counter(c.address for c in calls if c.address)
    return sum(n - 1 for n in counts.values() if n > 1)


def burst(plugin: Plugin, total: int, callers: int) -> Burst:
    ids = [f"burst-{i}" for i in range(total)]
    cpu_before, machine_before = children_cpu_ms(), machine_busy_ms()
    adds, wall = _concurrently(plugin, "ADD", ids, callers)
    cpu, machine_cpu = children_cpu_ms() - cpu_before, machine_busy_ms() - machine_before
    held_after_add = plugin.held()
    dels, _ = _concurrently(plugin, "DEL", ids, callers)
    return Burst(
        wall_s=wall,
        adds_per_s=total / wall,
        cpu_ms_per_add=cpu / total,
        cpu_busy=cpu / (wall * 1000 * _nproc()),
        latency=Latency.of([c.ms for c in adds]),
        duplicates=duplicates(adds),
        failures=sum(not c.address for c in adds),
        held_after_add=held_after_add,
        del_failures=sum(not c.ok for c in dels),
        held_after_del=plugin.held(),
        others_busy=max(0.0, machine_cpu - cpu) / (wall * 1000 * _nproc()),
    )


def measure(plugins: list[Plugin], settings: Settings) -> dict[str, Figures]:
    for plugin in plugins:
        warm_up(plugin)
    seq = sequential(plugins, settings.sequential)
    return {p.name: Figures(seq[p.name], burst(p, settings.burst, settings.callers)) for p in plugins}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    return {
        "nproc": _nproc(),
        "cpu": model,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "kernel": platform.release(),
        "load_average_1m": load_average(),
        "busy_before_start": _busy_fraction(2.0),
    }


def _busy_fraction(seconds: float) -> float:
    """How busy the machine's CPUs were over a short window just before the benchmark (other people's work)."""
    before = machine_busy_ms()
    time.sleep(seconds)
    return (machine_busy_ms() - before) / (seconds * 1000 * _nproc())


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def ratios(wa: Figures, hl: Figures) -> dict[str, float]:
    return {
        "add_p50": wa.sequential.add.p50 / hl.sequential.add.p50,
        "add_p99": wa.sequential.add.p99 / hl.sequential.add.p99,
        "add_mean": wa.sequential.add.mean / hl.sequential.add.mean,
        "del_p50": wa.sequential.delete.p50 / hl.sequential.delete.p50,
        "del_p99": wa.sequential.delete.p99 / hl.sequential.delete.p99,
        "del_mean": wa.sequential.delete.mean / hl.sequential.delete.mean,
        "add_cpu": wa.sequential.add_cpu_ms / hl.sequential.add_cpu_ms,
        "del_cpu": wa.sequential.del_cpu_ms / hl.sequential.del_cpu_ms,
        "burst_p50": wa.burst.latency.p50 / hl.burst.latency.p50,
        "burst_p99": wa.burst.latency.p99 / hl.burst.latency.p99,
        "throughput": wa.burst.adds_per_s / hl.burst.adds_per_s,
    }


def _rows(f: Figures) -> list[tuple[str, float | int, str]]:
    s, b = f.sequential, f.burst
    return [
        ("sequential ADD p50 (ms)", s.add.p50, "add_p50"),
        ("sequential ADD p99 (ms)", s.add.p99, "add_p99"),
        ("sequential ADD mean (ms)", s.add.mean, "add_mean"),
        ("sequential DEL p50 (ms)", s.delete.p50, "del_p50"),
        ("sequential DEL p99 (ms)", s.delete.p99, "del_p99"),
        ("sequential DEL mean (ms)", s.delete.mean, "del_mean"),
        ("sequential ADD CPU/call (ms)", s.add_cpu_ms, "add_cpu"),
        ("sequential DEL CPU/call (ms)", s.del_cpu_ms, "del_cpu"),
        ("sequential failures", s.failures, ""),
        ("burst wall time (s)", b.wall_s, ""),
        ("burst ADDs/s", b.adds_per_s, "throughput"),
        ("burst CPU/ADD (ms)", b.cpu_ms_per_add, ""),
        ("burst CPU busy, plugin (of nproc)", b.cpu_busy, ""),
        ("burst ADD p50 (ms)", b.latency.p50, "burst_p50"),
        ("burst ADD p99 (ms)", b.latency.p99, "burst_p99"),
        ("burst duplicates (must be 0)", b.duplicates, ""),
        ("burst ADD failures", b.failures, ""),
        ("held after burst ADD", b.held_after_add, ""),
        ("burst DEL failures", b.del_failures, ""),
        ("held after burst DEL (must be 0)", b.held_after_del, ""),
        ("burst CPU busy, other processes", b.others_busy, ""),
        ("CPU-bound ceiling nproc/CPU (ADDs/s)", _ceiling(s.add_cpu_ms), ""),
    ]


def _ceiling(cpu_ms: float) -> float:
    """The ADD rate this machine could reach if CPU were the only limit."""
    return _nproc() * 1000 / cpu_ms if cpu_ms > 0 else float("inf")


def _nproc() -> int:
    return len(os.sched_getaffinity(0))


def _cell(value: float | int) -> str:
    return f"{value:12d}" if isinstance(value, int) else f"{value:12.2f}"


def table(wa: Figures, hl: Figures, ratio: dict[str, float]) -> str:
    lines = [f"{'':34} {'whereabouts':>12} {'host-local':>12} {'ratio':>8}"]
    for (label, a, key), (_, b, _) in zip(_rows(wa), _rows(hl), strict=True):
        shown = f"{ratio[key]:7.2f}x" if key else ""
        lines.append(f"{label:34} {_cell(a)} {_cell(b)} {shown:>8}")
    return "\n".join(lines)


def targets(ratio: dict[str, float]) -> dict[str, bool]:
    return {
        "add_p50_within_4x": ratio["add_p50"] <= TARGET_ADD_P50_RATIO,
        "throughput_at_least_half": ratio["throughput"] >= TARGET_THROUGHPUT_RATIO,
    }


def targets_report(ratio: dict[str, float], met: dict[str, bool]) -> str:
    verdict = {True: "MET", False: "MISSED"}
    return "\n".join(
        [
            "Targets:",
            f"  p50 ADD within {TARGET_ADD_P50_RATIO:g}x of host-local: "
            f"{ratio['add_p50']:.2f}x -> {verdict[met['add_p50_within_4x']]}",
            f"  burst throughput >= {TARGET_THROUGHPUT_RATIO:g}x host-local's: "
            f"{ratio['throughput']:.2f}x -> {verdict[met['throughput_at_least_half']]}",
        ]
    )


def header(settings: Settings, info: dict[str, Any]) -> str:
    return (
        f"Machine: nproc={info['nproc']}  cpu={info['cpu']}  python={info['python']}  kernel={info['kernel']}  "
        f"load average (1 min)={info['load_average_1m']:.2f}  CPU busy before start={info['busy_before_start']:.2f}"
        f"{NOISY if info['busy_before_start'] > 0.2 else ''}\n"
        f"Workload: {settings.sequential} sequential ADDs then DELs; burst of {settings.burst} ADDs from "
        f"{settings.callers} concurrent callers, then DEL all; subnet 10.99.0.0/22\n"
    )


@contextmanager
def node_daemon(env: dict[str, str], sock: Path, *, quiet: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """whereabouts-node on `sock` (no line per call if `quiet`), stopped by PID afterwards."""
    argv = [str(WHEREABOUTS.with_name("whereabouts-node")), "--socket", str(sock), *(["--quiet"] if quiet else [])]
    proc = subprocess.Popen(argv, env=env)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("whereabouts-node did not start")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def process_cpu_ms(pid: int) -> float:
    """User + system CPU of a running process (a daemon's CPU is not in RUSAGE_CHILDREN until it exits)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def run(settings: Settings, tmp: Path, *, with_daemon: bool = False, relay: str = "python") -> dict[str, Any]:
    info = machine()
    print(header(settings, info), flush=True)
    env = python_env(tmp / "pycache")
    executable = compiled_relay(tmp / "relay") if relay == "compiled" else WHEREABOUTS
    if not with_daemon:
        env["WHEREABOUTS_SOCKET"] = ""
        return _run(settings, tmp, info, env, executable)
    env["WHEREABOUTS_SOCKET"] = str(tmp / "plugin.sock")
    with node_daemon(env, tmp / "plugin.sock") as daemon:
        result = _run(settings, tmp, info, env, executable)
        daemon_ms = process_cpu_ms(daemon.pid)
    calls = 2 * (settings.sequential + settings.burst)
    print(f"\nwhereabouts-node served every whereabouts call above; its own CPU: {daemon_ms:.0f} ms in all, "
          f"{daemon_ms / calls:.2f} ms per call (not included in the CPU/call rows)")  # fmt: skip
    result["node_daemon_cpu_ms_per_call"] = daemon_ms / calls
    return result


def _run(settings: Settings, tmp: Path, info: dict[str, Any], env: dict[str, str], executable: Path) -> dict[str, Any]:
    wa_plugin = whereabouts(tmp / "whereabouts", env)  # the Python plugin: what the start-up section is about
    measured = replace(wa_plugin, argv=(str(executable),))
    figures = measure([measured, host_local(tmp / "host-local")], settings)
    wa, hl = figures["whereabouts"], figures["host-local"]
    ratio = ratios(wa, hl)
    met = targets(ratio)
    print(table(wa, hl, ratio))
    print(targets_report(ratio, met), flush=True)
    startup = imports.measure(wa_plugin, settings.startup_runs, tmp)
    print(imports.report(startup))
    return {
        "machine": info,
        "settings": asdict(settings),
        "executable": str(executable),
        "whereabouts": asdict(wa),
        "host_local": asdict(hl),
        "ratios": ratio,
        "targets_met": met,
        "imports": imports.as_json(startup),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload, for a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--node-daemon", action="store_true", help="serve whereabouts calls through whereabouts-node")
    parser.add_argument("--relay", choices=("python", "compiled", "both"), default="python",
                        help="the whereabouts executable: the Python plugin (pip's), the compiled relay beside it "
                        "(as install-cni deploys it), or both compared through the node daemon")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        if args.relay == "both":
            import relays  # it imports this module

            result = relays.run(args.quick, Path(tmp))
        else:
            result = run(QUICK if args.quick else FULL, Path(tmp), with_daemon=args.node_daemon, relay=args.relay)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nFigures written to {args.json}")


if __name__ == "__main__":
    main()
