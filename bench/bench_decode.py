"""Benchmark: what the node daemon spends on each new version of an IPPool it watches (the mirror on).

Usage: .venv/bin/python bench/bench_decode.py [--sizes 1000,10000] [--changed 1,30,300] [--repeat 7] [--json PATH]

Every mirror patch of a pool reaches every daemon that watches it as the whole object; the first decision after
it decoded every entry and filed it again (store.kubecache). Now a version is decoded from the last one: only
the entries whose text changed (`_Decoded.of`). For each pool size and number of entries changed since the last
version, in one process: the decode of the version whole (what every version cost before) and from the last
version, the median of `--repeat` runs each (the JSON text's parse, which both pay, apart), and their ratio.
No server: the objects are built here in the plugin's own format.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from whereabouts.kube import resources
from whereabouts.model import Owner, PoolKey
from whereabouts.store.kubecache import _Decoded

KEY = PoolKey("", "10.64.0.0/16")


def version(size: int, changed: int, number: int) -> dict[str, Any]:
    """An IPPool of `size` entries as the watch delivers it (parsed from its JSON text), the last `changed` of
    them held by other containers than in version 0."""
    allocations = {}
    for i in range(1, size + 1):
        moved = number and i > size - changed
        owner = Owner(f"{'new' if moved else 'ctr'}{i:060d}", "net1", f"ns/pod-{i}", "net")
        allocations[str(i)] = resources.entry(owner)
    obj = {"metadata": {"name": KEY.name, "resourceVersion": str(number + 1)},
           "spec": {"range": KEY.cidr, "allocations": allocations}}  # fmt: skip
    parsed: dict[str, Any] = json.loads(json.dumps(obj))
    return parsed


def timed(make: Any, repeat: int) -> float:
    """Median milliseconds of `make()` over `repeat` runs."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        make()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def measure(sizes: list[int], changed: list[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        first = version(size, 0, 0)
        last = _Decoded.of(KEY, first, None)
        parse = timed(lambda first=first: json.loads(json.dumps(first)), repeat)
        for n in changed:
            if n > size:
                continue
            after = version(size, n, 1)
            whole = timed(lambda after=after: _Decoded.of(KEY, after, None), repeat)
            incremental = timed(lambda after=after, last=last: _Decoded.of(KEY, after, last), repeat)
            assert _Decoded.of(KEY, after, last).state == _Decoded.of(KEY, after, None).state
            rows.append({"entries": size, "changed": n, "whole_ms": whole, "from_last_ms": incremental,
                         "ratio": incremental / whole, "json_roundtrip_ms": parse})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--changed", default="1,30,300,3000")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    sizes = [int(text) for text in args.sizes.split(",")]
    changed = [int(text) for text in args.changed.split(",")]
    load = os.getloadavg()
    rows = measure(sizes, changed, args.repeat)
    print(f"load at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cores: {os.cpu_count()}; "
          f"Python {sys.version.split()[0]}; median of {args.repeat}")  # fmt: skip
    print(
        f"{'entries':>8} {'changed':>8} {'whole ms':>9} {'from last ms':>13} {'ratio':>6} {'(JSON dump+parse ms)':>21}"
    )
    for row in rows:
        print(f"{row['entries']:>8} {row['changed']:>8} {row['whole_ms']:>9.2f} {row['from_last_ms']:>13.2f} "
              f"{row['ratio']:>6.2f} {row['json_roundtrip_ms']:>21.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
