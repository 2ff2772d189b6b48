"""What both benchmark scripts share: the plugins under test, one timed CNI call, latency summaries."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
WHEREABOUTS = ROOT / ".venv" / "bin" / "whereabouts"
CNI_PATH = "/usr/lib/cni"
HOST_LOCAL = Path(CNI_PATH) / "host-local"
SUBNET = "10.99.0.0/22"
NETWORK = "benchnet"


@dataclass(frozen=True)
class Plugin:
    """One IPAM plugin executable, its network config and where it keeps its pool."""

    name: str
    argv: tuple[str, ...]
    conf: bytes
    env: Mapping[str, str]
    data_dir: Path

    def held(self) -> int:
        """How many addresses the plugin's store holds right now."""
        if self.name == "host-local":
            pool = self.data_dir / NETWORK
            skip = ("lock", "last_reserved_ip")
            return sum(1 for f in pool.iterdir() if not f.name.startswith(skip)) if pool.exists() else 0
        with sqlite3.connect(self.data_dir / "whereabouts.db") as db:
            return int(db.execute("SELECT COUNT(*) FROM allocations").fetchone()[0])


@dataclass(frozen=True)
class Call:
    ms: float
    ok: bool
    address: str


@dataclass(frozen=True)
class Latency:
    """Per-call latency summary, in milliseconds."""

    p50: float
    p99: float
    mean: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Latency:
        if len(samples) < 2:
            value = samples[0] if samples else float("nan")
            return cls(value, value, value, len(samples))
        p99 = statistics.quantiles(samples, n=100, method="inclusive")[98]
        return cls(statistics.median(samples), p99, statistics.fmean(samples), len(samples))


def clean_env() -> dict[str, str]:
    """The caller's environment without any CNI_ variable (each call sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}


def python_env(pycache: Path) -> dict[str, str]:
    """Environment for the Python plugin: bytecode cached (as an installed package has it), outside src/."""
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def whereabouts(data_dir: Path, env: Mapping[str, str]) -> Plugin:
    ipam = {"type": "whereabouts", "range": SUBNET, "local_data_dir": str(data_dir)}
    ipam["configuration_path"] = str(data_dir / "none")
    conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "ipam": ipam}
    return Plugin("whereabouts", (str(WHEREABOUTS),), json.dumps(conf).encode(), env, data_dir)


def compiled_relay(directory: Path) -> Path:
    """The compiled relay (scripts/build-relay.sh) as `whereabouts` in `directory`, the Python plugin beside it
    as `whereabouts-python` (this environment's), as install-cni lays them out on a node; the relay's path."""
    from whereabouts.node.launcher import script

    directory.mkdir(parents=True, exist_ok=True)
    python = directory / "whereabouts-python"
    python.write_text(script("whereabouts", python=str(PYTHON)))
    python.chmod(0o755)
    relay = directory / "whereabouts"
    subprocess.run(["bash", str(ROOT / "scripts/build-relay.sh"), str(relay)], check=True, stdout=subprocess.DEVNULL)
    return relay


def host_local(data_dir: Path) -> Plugin:
    ipam = {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "dataDir": str(data_dir)}
    conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "ipam": ipam}
    return Plugin("host-local", (str(HOST_LOCAL),), json.dumps(conf).encode(), clean_env(), data_dir)


def cni_env(base: Mapping[str, str], command: str, container_id: str) -> dict[str, str]:
    return {
        **base,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": f"/var/run/netns/{container_id}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": CNI_PATH,
    }


def call(plugin: Plugin, command: str, container_id: str, argv: tuple[str, ...] | None = None) -> Call:
    """Exec the plugin once, as a runtime would, and time it from spawn to exit."""
    env = cni_env(plugin.env, command, container_id)
    start = time.perf_counter()
    proc = subprocess.run(argv or plugin.argv, input=plugin.conf, capture_output=True, env=env, timeout=120)
    ms = (time.perf_counter() - start) * 1000
    ok = proc.returncode == 0
    return Call(ms, ok, _address(proc.stdout) if ok and command == "ADD" else "")


def _address(stdout: bytes) -> str:
    try:
        return str(json.loads(stdout)["ips"][0]["address"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def children_cpu_ms() -> float:
    """CPU time (user + system) used so far by this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def load_average() -> float:
    return os.getloadavg()[0]


def machine_busy_ms() -> float:
    """CPU time (all processes, all CPUs) spent busy since boot, from /proc/stat; 0 where unavailable."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) * 1000 / os.sysconf("SC_CLK_TCK")


def warm_up(plugin: Plugin, rounds: int = 3) -> None:
    """Create the store and fill the bytecode cache, so the first measured call is like any other."""
    for i in range(rounds):
        call(plugin, "ADD", f"warmup-{i}")
        call(plugin, "DEL", f"warmup-{i}")
