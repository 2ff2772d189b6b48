"""Benchmark: what a config with many ranges costs, for 1,000, 5,000 and 20,000 `ipRanges`.

Usage: .venv/bin/python bench/bench_ranges.py [--quick] [--json PATH]

Two shapes: distinct /24s of one network, and windows of one /16 shared by all ranges of one network_name
(overlapping ranges, one pool). For each size: parsing the config (`parse_ipam`), the decision alone
(`allocate()`, with another pod already holding addresses the ranges pass over), and whole CNI calls through
the executable on a fresh local store (first ADD, a second pod's ADD, the first ADD repeated, CHECK, DEL),
exec'd as a runtime execs it with a warm bytecode cache. In-process figures are CPU time (least of the runs);
CNI figures are wall time and the plugin's CPU time. Cost per range should stay flat as the size grows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import ROOT, WHEREABOUTS, Plugin, call, children_cpu_ms, load_average, python_env

sys.path.insert(0, str(ROOT / "src"))

from whereabouts.allocator import PoolRange, allocate
from whereabouts.config import parse_ipam
from whereabouts.model import Owner, PoolState, Snapshot
from whereabouts.service import pool_ranges

SIZES = (1_000, 5_000, 20_000)
ME, OTHER = Owner("bench-me", "eth0", "ns/me"), Owner("bench-other", "eth0", "ns/other")


def distinct_slash24s(n: int) -> dict[str, Any]:
    return {"ipRanges": [{"range": f"10.{i >> 8}.{i & 255}.0/24"} for i in range(n)]}


def windows_of_one_slash16(n: int) -> dict[str, Any]:
    windows = [{"range": "10.0.0.0/16", "range_start": f"10.0.{i % 250}.{1 + i // 250}"} for i in range(n)]
    return {"network_name": "bench", "ipRanges": windows}


SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {
    "distinct /24s": distinct_slash24s,
    "windows of one /16": windows_of_one_slash16,
}


@dataclass(frozen=True)
class Row:
    shape: str
    ranges: int
    parse_ms: float
    allocate_ms: float
    cni_ms: dict[str, float]  # call -> wall ms
    cni_cpu_ms: dict[str, float]  # call -> the plugin's CPU ms


def cpu_ms(action: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        action()
        best = min(best, (time.process_time() - started) * 1000)
    return best


def occupied(ranges: tuple[PoolRange, ...]) -> Snapshot:
    """Every range's window start held by another pod (pool entry and network-wide reservation)."""
    pools = {pr.key: PoolState(pr.key, 1) for pr in ranges}
    reservations = {}
    for pr in ranges:
        pools[pr.key].allocations[pr.rng.first] = OTHER
        reservations[(pr.key.network, pr.rng.version, pr.rng.first)] = OTHER
    return Snapshot(pools, reservations)


def cni_calls(ipam: dict[str, Any], work: Path) -> tuple[dict[str, float], dict[str, float]]:
    data_dir = work / "store"
    ipam = {"type": "whereabouts", **ipam, "local_data_dir": str(data_dir), "configuration_path": str(work / "none")}
    conf = {"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": ipam}
    plugin = Plugin("whereabouts", (str(WHEREABOUTS),), json.dumps(conf).encode(), python_env(work / "pyc"), data_dir)
    call(plugin, "VERSION", "warm-up")  # fills the bytecode cache
    first = call(plugin, "ADD", "pod-a")
    prev = {"cniVersion": "1.0.0", "ips": [{"address": first.address}]}
    check = Plugin(plugin.name, plugin.argv, json.dumps({**conf, "prevResult": prev}).encode(), plugin.env, data_dir)
    wall, cpu = {}, {}
    for name, target, command, container in (
        ("ADD", plugin, "ADD", "pod-b"),
        ("ADD repeated", plugin, "ADD", "pod-a"),
        ("CHECK", check, "CHECK", "pod-a"),
        ("DEL", plugin, "DEL", "pod-a"),
    ):
        before = children_cpu_ms()
        done = call(target, command, container)
        if not done.ok:
            raise SystemExit(f"{name} failed for {len(ipam['ipRanges'])} ranges")
        wall[name], cpu[name] = round(done.ms, 1), round(children_cpu_ms() - before, 1)
    return wall, cpu


def measure(shape: str, n: int, runs: int, work: Path) -> Row:
    raw = {"type": "whereabouts", **SHAPES[shape](n)}
    parse = cpu_ms(lambda: parse_ipam(raw), runs)
    ranges = pool_ranges(parse_ipam(raw))
    snapshot = occupied(ranges)  # allocate() only reads it
    decide = cpu_ms(lambda: allocate(ranges=ranges, snapshot=snapshot, owner=ME), runs)
    wall, cpu = cni_calls(SHAPES[shape](n), work)
    return Row(shape, n, round(parse, 1), round(decide, 1), wall, cpu)


def report(rows: list[Row]) -> None:
    calls = list(rows[0].cni_ms)
    print(f"\n{'shape':<20}{'ranges':>8}{'parse ms':>10}{'allocate ms':>13}{'us/range':>10}", end="")
    print("".join(f"{name + ' ms (cpu)':>24}" for name in calls))
    for row in rows:
        per_range = row.allocate_ms * 1000 / row.ranges
        print(f"{row.shape:<20}{row.ranges:>8}{row.parse_ms:>10.1f}{row.allocate_ms:>13.1f}{per_range:>10.1f}", end="")
        print("".join(f"{f'{row.cni_ms[c]:.0f} ({row.cni_cpu_ms[c]:.0f})':>24}" for c in calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per figure instead of the least of three")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    print(f"load average at start: {load_average():.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ranges-") as tmp:
        for shape in SHAPES:
            for n in SIZES:
                rows.append(measure(shape, n, runs, Path(tmp) / f"{shape.split()[0]}-{n}"))
    report(rows)
    print(f"load average at end: {load_average():.2f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
        print(f"\nFigures written to {args.json}")


if __name__ == "__main__":
    main()
