"""Where one whereabouts call spends its time before and around the IPAM work: interpreter, imports, SQLite.

Usage: .venv/bin/python bench/imports.py [--quick]   (bench/bench_local.py runs this as one of its sections)
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    ROOT,
    Latency,
    Plugin,
    call,
    children_cpu_ms,
    cni_env,
    python_env,
    warm_up,
    whereabouts,
)

TOP_MODULES = 15
# What a deployment could exec instead of the pip console script: no site, no .pth files, no environment.
LAUNCHER = (
    f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); from whereabouts.cni.main import main; sys.exit(main())"
)
# The least a forwarding client written in Python would cost: a bare interpreter and the C socket module.
SHIM = (str(PYTHON), "-I", "-S", "-c", "import _socket")
DATACLASS = """@dataclass(frozen=True)
class C:
    a: int
    b: str
    c: str = ""
"""
PLAIN_CLASS = """class C:
    __slots__ = ("a", "b", "c")

    def __init__(self, a: int, b: str, c: str = "") -> None:
        self.a, self.b, self.c = a, b, c
"""
# What a local-store call cannot do without: the CNI protocol is JSON, the store is SQLite.
FLOOR = ("json", "sqlite3")

# Run inside the plugin's interpreter: time the imports, then two ADDs in one process (the second shows the
# IPAM work alone), then opening the SQLite store by itself.
PHASES = r"""
import io, json, os, sys, time
t0 = time.perf_counter()
from whereabouts.cni.call import run
import whereabouts.cni.verbs
t1 = time.perf_counter()
conf = sys.stdin.buffer.read()

def timed(command, cid):
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": cid}
    start = time.perf_counter()
    rc = run(env, lambda: conf, io.StringIO())
    return (time.perf_counter() - start) * 1000, rc

first, rc1 = timed("ADD", "phase-1")
second, rc2 = timed("ADD", "phase-2")
third, rc3 = timed("DEL", "phase-2")
timed("DEL", "phase-1")
from whereabouts.store.local import LocalStore
t2 = time.perf_counter()
LocalStore(sys.argv[1]).close()
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "first_add_ms": first, "second_add_ms": second,
                  "del_ms": third, "open_store_ms": (t3 - t2) * 1000, "ok": rc1 == rc2 == rc3 == 0}))
"""


@dataclass(frozen=True)
class ImportRow:
    module: str
    depth: int
    self_ms: float
    cumulative_ms: float


@dataclass(frozen=True)
class Spawn:
    latency: Latency
    cpu_ms: float  # mean CPU (user + system) per spawn


@dataclass(frozen=True)
class ImportCost:
    alone: float
    saving: float  # the whole set's cost minus the set's cost without this module (median of pairs)


@dataclass(frozen=True)
class ImportFigures:
    startup: dict[str, Spawn]
    phases: dict[str, float]
    stdlib_costs: dict[str, ImportCost]
    stdlib_avoided: list[str]
    class_costs: dict[str, float]
    modules: int
    whereabouts_modules: int
    self_ms_total: float
    self_ms_whereabouts: float
    top: list[ImportRow]


def _timed_runs(plugin: Plugin, command: str, runs: int, argv: tuple[str, ...] | None = None) -> Spawn:
    samples, cpu = [], 0.0
    for i in range(runs):
        before = children_cpu_ms()
        samples.append(call(plugin, command, f"startup-{i}", argv).ms)
        cpu += children_cpu_ms() - before
        if command == "ADD":
            call(plugin, "DEL", f"startup-{i}")
    return Spawn(Latency.of(samples), cpu / runs)


def startup(plugin: Plugin, runs: int, stdlib: list[str], tmp: Path) -> dict[str, Spawn]:
    """Bare interpreter start-up against whereabouts calls; p50 over `runs` spawns each."""
    py = str(PYTHON)
    uncached = _replace_env(plugin, _uncached_env(plugin, stdlib, tmp / "pycache-stdlib-only"))
    isolated = (py, "-I", "-S", "-X", f"pycache_prefix={plugin.env['PYTHONPYCACHEPREFIX']}", "-c", LAUNCHER)
    return {
        "python -c pass": _timed_runs(plugin, "VERSION", runs, (py, "-c", "pass")),
        "python -I -S -c pass": _timed_runs(plugin, "VERSION", runs, (py, "-I", "-S", "-c", "pass")),
        "python -I -S -c 'import _socket' (shim floor)": _timed_runs(plugin, "VERSION", runs, SHIM),
        "python -c 'import <stdlib an ADD uses>'": _timed_runs(plugin, "VERSION", runs, _import_argv(stdlib)),
        "whereabouts VERSION": _timed_runs(plugin, "VERSION", runs),
        "whereabouts ADD": _timed_runs(plugin, "ADD", runs),
        "whereabouts ADD, no whereabouts bytecode": _timed_runs(uncached, "ADD", runs),
        "whereabouts ADD via python -I -S launcher": _timed_runs(plugin, "ADD", runs, isolated),
    }


def _import_argv(modules: list[str]) -> tuple[str, ...]:
    return (str(PYTHON), "-c", f"import {', '.join(modules)}")


def _replace_env(plugin: Plugin, env: dict[str, str]) -> Plugin:
    return Plugin(plugin.name, plugin.argv, plugin.conf, env, plugin.data_dir)


def _uncached_env(plugin: Plugin, stdlib: list[str], prefix: Path) -> dict[str, str]:
    """Bytecode cached for the stdlib only: whereabouts' own modules compile on every call, as they do when
    the plugin runs from source under PYTHONDONTWRITEBYTECODE=1 (this dev environment's default)."""
    env = {**plugin.env, "PYTHONPYCACHEPREFIX": str(prefix)}
    subprocess.run(_import_argv(stdlib), env=env, check=True, timeout=120)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def stdlib_imports(loaded: set[str]) -> tuple[list[str], list[str]]:
    """The stdlib modules whereabouts' source imports (read with ast, so the list follows src/), split into
    those a local ADD loads and those it does not."""
    found: set[str] = set()
    for path in (ROOT / "src" / "whereabouts").rglob("*.py"):
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    stdlib = sorted(m for m in found if m.split(".")[0] in sys.stdlib_module_names and m != "__future__")
    builtin = set(sys.builtin_module_names)
    return [m for m in stdlib if m in loaded | builtin], [m for m in stdlib if m not in loaded | builtin]


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text())
    except (SyntaxError, OSError):  # a file mid-edit: its imports just go uncounted
        return ast.Module(body=[], type_ignores=[])


def isolated_costs(plugin: Plugin, modules: list[str], runs: int) -> dict[str, ImportCost]:
    """Per module (ms): importing it alone into a fresh interpreter (best of `runs`: noise only ever adds), and
    what leaving it out of the whole set saves (shared dependencies make the two differ)."""
    costs = {module: _cost_of(plugin, modules, module, runs) for module in modules}
    together = _import_cost(plugin, modules, runs)
    costs["(all of the above together)"] = ImportCost(together, together)
    costs["(json + sqlite3: the local store's floor)"] = ImportCost(_import_cost(plugin, list(FLOOR), runs), 0.0)
    return dict(sorted(costs.items(), key=lambda item: item[1].alone, reverse=True))


def _cost_of(plugin: Plugin, modules: list[str], module: str, runs: int) -> ImportCost:
    alone = _import_cost(plugin, [module], runs)
    if module in FLOOR or alone < 0.1:  # the floor stays; a module loaded at start-up saves nothing
        return ImportCost(alone, 0.0)
    return ImportCost(alone, _saving(plugin, modules, [m for m in modules if m != module], runs))


def _saving(plugin: Plugin, modules: list[str], without: list[str], runs: int) -> float:
    """Median of paired differences, each pair run back to back so the machine's drifting load cancels."""
    pairs = [_import_cost(plugin, modules, 1) - _import_cost(plugin, without, 1) for _ in range(runs)]
    return statistics.median(pairs)


def _import_cost(plugin: Plugin, modules: list[str], runs: int) -> float:
    code = f"import time; t = time.perf_counter(); import {', '.join(modules)}; print(time.perf_counter() - t)"
    return _best_of(plugin, code, runs)


def _best_of(plugin: Plugin, code: str, runs: int) -> float:
    """The fastest of `runs` fresh interpreters running `code`, which prints the seconds it measured."""
    samples = []
    for _ in range(runs):
        proc = subprocess.run((str(PYTHON), "-c", code), env=plugin.env, capture_output=True, check=True, timeout=60)
        samples.append(float(proc.stdout) * 1000)
    return min(samples)


def hot_dataclasses(loaded: set[str]) -> int:
    """How many @dataclass classes the whereabouts modules a local ADD loads define."""
    count = 0
    for module in (m for m in loaded if m.startswith("whereabouts")):
        base = ROOT / "src" / Path(*module.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        classes = (n for n in ast.walk(_parse(path)) if isinstance(n, ast.ClassDef))
        count += sum(1 for c in classes for d in c.decorator_list if "dataclass" in ast.unparse(d))
    return count


def class_costs(plugin: Plugin, count: int, runs: int) -> dict[str, float]:
    """Best-of ms to define `count` three-field classes: frozen dataclasses against plain slotted classes."""
    return {
        f"{count} @dataclass(frozen=True) classes": _define_cost(plugin, DATACLASS, count, runs),
        f"{count} plain classes with __slots__": _define_cost(plugin, PLAIN_CLASS, count, runs),
    }


def _define_cost(plugin: Plugin, body: str, count: int, runs: int) -> float:
    code = f"from dataclasses import dataclass\nimport time\nt = time.perf_counter()\nfor _ in range({count}):\n"
    code += textwrap.indent(body, "    ") + "print(time.perf_counter() - t)\n"
    return _best_of(plugin, code, runs)


def phases(plugin: Plugin, runs: int) -> dict[str, float]:
    """Median in-process phase times (ms) of fresh interpreters doing ADD, ADD, DEL."""
    env = cni_env(plugin.env, "ADD", "phase")
    argv = (str(PYTHON), "-c", PHASES, str(plugin.data_dir))
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        proc = subprocess.run(argv, input=plugin.conf, capture_output=True, env=env, timeout=120, check=True)
        result = json.loads(proc.stdout)
        if not result.pop("ok"):
            raise RuntimeError(f"phase run failed: {proc.stdout!r}")
        for key, value in result.items():
            samples[key].append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def parse_importtime(stderr: str) -> list[ImportRow]:
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append(ImportRow(name.strip(), depth, int(self_us) / 1000, int(cumulative_us) / 1000))
    return rows


def import_profile(plugin: Plugin, runs: int) -> list[ImportRow]:
    """`-X importtime -m whereabouts.cni.main` under CNI_COMMAND=ADD; per-module medians over `runs`."""
    argv = (str(PYTHON), "-X", "importtime", "-m", "whereabouts.cni.main")
    by_module: dict[str, list[ImportRow]] = defaultdict(list)
    for i in range(runs):
        env = cni_env(plugin.env, "ADD", f"importtime-{i}")
        proc = subprocess.run(argv, input=plugin.conf, capture_output=True, env=env, timeout=120, check=True)
        call(plugin, "DEL", f"importtime-{i}")
        for row in parse_importtime(proc.stderr.decode()):
            by_module[row.module].append(row)
    return [_median_row(rows) for rows in by_module.values()]


def _median_row(rows: list[ImportRow]) -> ImportRow:
    self_ms = statistics.median(r.self_ms for r in rows)
    return ImportRow(rows[0].module, rows[0].depth, self_ms, statistics.median(r.cumulative_ms for r in rows))


def measure(plugin: Plugin, runs: int, tmp: Path) -> ImportFigures:
    rows = import_profile(plugin, max(3, runs // 4))
    ours = [r for r in rows if r.module.startswith("whereabouts")]
    stdlib, avoided = stdlib_imports({r.module for r in rows})
    return ImportFigures(
        startup=startup(plugin, runs, stdlib, tmp),
        phases=phases(plugin, max(3, runs // 4)),
        stdlib_costs=isolated_costs(plugin, stdlib, max(3, runs // 2)),
        stdlib_avoided=avoided,
        class_costs=class_costs(plugin, hot_dataclasses({r.module for r in rows}), max(3, runs // 2)),
        modules=len(rows),
        whereabouts_modules=len(ours),
        self_ms_total=sum(r.self_ms for r in rows),
        self_ms_whereabouts=sum(r.self_ms for r in ours),
        top=sorted(rows, key=lambda r: r.cumulative_ms, reverse=True)[:TOP_MODULES],
    )


def report(figures: ImportFigures) -> str:
    return "\n".join(["", *_startup_lines(figures), *_stdlib_lines(figures), *_profile_lines(figures)])


def _startup_lines(figures: ImportFigures) -> list[str]:
    lines = ["Start-up and imports (whereabouts, bytecode cached unless said; ms per spawn)"]
    lines.append(f"  {'':48} {'p50':>8} {'p99':>8} {'mean':>8} {'CPU':>8}")
    for name, spawn in figures.startup.items():
        lat = spawn.latency
        lines.append(f"  {name:48} {lat.p50:8.2f} {lat.p99:8.2f} {lat.mean:8.2f} {spawn.cpu_ms:8.2f}")
    lines.append("  In-process phases of a fresh interpreter (median ms):")
    lines.extend(f"    {name:42} {value:8.2f}" for name, value in figures.phases.items())
    return lines


def _stdlib_lines(figures: ImportFigures) -> list[str]:
    lines = ["  Stdlib modules a local ADD imports directly, into a fresh interpreter (best of N, ms):"]
    lines.append(f"    {'':44} {'alone':>8} {'saving if dropped':>18}")
    for name, cost in figures.stdlib_costs.items():
        lines.append(f"    {name:44} {cost.alone:8.2f} {cost.saving:18.2f}")
    lines.append("  Class definitions, as many as a local ADD's modules make (best of N, ms; dataclasses imported):")
    lines.extend(f"    {name:44} {value:8.2f}" for name, value in figures.class_costs.items())
    lines.append(f"  Imported somewhere in src/ but not by a local ADD: {', '.join(figures.stdlib_avoided) or '-'}")
    return lines


def _profile_lines(figures: ImportFigures) -> list[str]:
    lines = [
        f"  A local ADD imports {figures.modules} modules ({figures.whereabouts_modules} whereabouts.*); "
        f"self time {figures.self_ms_total:.1f} ms, of which whereabouts.* {figures.self_ms_whereabouts:.1f} ms "
        "(under -X importtime, which inflates it)",
        f"  Top {TOP_MODULES} by cumulative import time (median ms; indent = import depth):",
        f"    {'module':44} {'cumul.':>8} {'self':>8}",
    ]
    for row in figures.top:
        lines.append(f"    {'  ' * row.depth + row.module:44} {row.cumulative_ms:8.2f} {row.self_ms:8.2f}")
    return lines


def as_json(figures: ImportFigures) -> dict[str, Any]:
    return asdict(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    runs = 10 if parser.parse_args().quick else 40
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        plugin = whereabouts(Path(tmp) / "whereabouts", python_env(Path(tmp) / "pycache"))
        warm_up(plugin)
        print(report(measure(plugin, runs, Path(tmp))))


if __name__ == "__main__":
    main()
