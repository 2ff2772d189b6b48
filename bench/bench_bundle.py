"""Benchmark: the self-contained plugin (the bundle install-cni puts on each node) against the plain install.

Usage (as root): .venv/bin/python bench/bench_bundle.py [--rounds N] [--json PATH]

Builds the bundle from the cached image root (scripts/image-root.sh, scripts/make_bundle.py), installs it
into a temp CNI bin dir with install-cni's own code, then execs ADD and DEL on the local store, the two
plugins interleaved call by call (so the machine's noise hits both alike): the plain install is
`.venv/bin/whereabouts` (pip install of this repo into a venv), the bundle is the launcher install-cni wrote.
Prints wall time and CPU per call of each and their ratio (the issue's limit: the bundle at most 1.2x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_local import machine
from common import ROOT, WHEREABOUTS, Latency, children_cpu_ms, cni_env, python_env, whereabouts

sys.path.insert(0, str(ROOT / "src"))
from whereabouts.node.install import install_bundle


def build_bundle(tmp: Path) -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts/image-root.sh")], check=True, capture_output=True, text=True)
    root = tmp / "root"
    root.mkdir()
    subprocess.run(["tar", "-xpf", out.stdout.strip(), "-C", str(root)], check=True)
    subprocess.run([sys.executable, str(ROOT / "scripts/make_bundle.py"), str(root), str(root / "bundle")],
                   check=True, capture_output=True)  # fmt: skip
    return root / "bundle"


def timed(argv: list[str], conf: bytes, env: dict[str, str]) -> tuple[float, float]:
    """One exec: (wall ms, CPU ms)."""
    cpu, start = children_cpu_ms(), time.perf_counter()
    proc = subprocess.run(argv, input=conf, capture_output=True, env=env, timeout=60)
    wall, cpu = (time.perf_counter() - start) * 1000, children_cpu_ms() - cpu
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return wall, cpu


def run(rounds: int, tmp: Path) -> dict[str, dict[str, float]]:
    bin_dir = tmp / "cni-bin"
    bin_dir.mkdir()
    install_bundle(build_bundle(tmp), bin_dir, log=lambda _: None)
    variants = {"plain install": str(WHEREABOUTS), "bundle": str(bin_dir / "whereabouts")}
    plugins = {name: whereabouts(tmp / name.replace(" ", "-"), python_env(tmp / "pycache")) for name in variants}
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in variants}
    for i in range(rounds + 3):  # the first 3 warm the bytecode caches and the pools
        for command in ("ADD", "DEL"):
            for name, argv in variants.items():
                env = {**cni_env(plugins[name].env, command, f"ctr-{i}"), "WHEREABOUTS_SOCKET": ""}
                wall, cpu = timed([argv], plugins[name].conf, env)
                if i >= 3:
                    samples[name]["wall"].append(wall)
                    samples[name]["cpu"].append(cpu)
    return {name: {"wall_p50_ms": Latency.of(s["wall"]).p50, "wall_mean_ms": Latency.of(s["wall"]).mean,
                   "cpu_mean_ms": sum(s["cpu"]) / len(s["cpu"])} for name, s in samples.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="ADD+DEL pairs per plugin")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    info = machine()
    print(f"Machine: nproc={info['nproc']} cpu={info['cpu']} load average (1 min)={info['load_average_1m']:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        figures = run(args.rounds, Path(tmp))
    plain, bundle = figures["plain install"], figures["bundle"]
    print(f"{args.rounds} ADDs and {args.rounds} DELs each, local store, interleaved call by call")
    print(f"{'':16}{'wall p50 (ms)':>16}{'wall mean (ms)':>16}{'CPU/call (ms)':>16}")
    for name, f in figures.items():
        print(f"{name:16}{f['wall_p50_ms']:16.2f}{f['wall_mean_ms']:16.2f}{f['cpu_mean_ms']:16.2f}")
    ratio = {k: bundle[k] / plain[k] for k in plain}
    print(
        f"{'bundle / plain':16}{ratio['wall_p50_ms']:15.2f}x{ratio['wall_mean_ms']:15.2f}x{ratio['cpu_mean_ms']:15.2f}x"
    )
    verdict = "MET" if ratio["wall_p50_ms"] <= 1.2 else "MISSED"
    print(f"Target: the bundle's per-call start-up at most 1.2x the plain install's (p50): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "figures": figures, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
