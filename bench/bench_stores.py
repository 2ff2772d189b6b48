"""Benchmark: whereabouts on its shared datastores (etcd, Kubernetes custom resources) against the Go plugin's figures.

Usage: .venv/bin/python bench/bench_stores.py [--quick] [--store etcd|kubernetes|all] [--node-daemon] [--sticky pod|mac]
       [--json PATH]

Starts its own servers on loopback with temp dirs (etcd; for the kubernetes store a kube-apiserver 1.20 on its
own etcd, with the CRDs and RBAC from deploy/) and stops them by PID when done. The plugin is exec'd once per
call, as a runtime execs it, with a warm bytecode cache: served in process, or with `--node-daemon` handed to
a `whereabouts-node` of its node (one per node; their CPU is counted with the plugin's). The burst poses as
several nodes: each has its own local_data_dir (its node-local lock directory) and NODENAME, and every call
names its pod in CNI_ARGS. What the store holds afterwards is read back from the store itself.

With `--sticky pod|mac` the network config has `sticky` on (docs/sticky.md): every DEL retains its address, so
the burst runs on a pool that already holds the sequential phase's retained addresses, and a third phase has
the burst's pods come back under new container IDs, each of which must get its old address. Calls carry a MAC
(`CNI_ARGS MAC=`) for `mac`; for `pod` on Kubernetes the pods exist (controlled by a StatefulSet), so the ADD's
read of its pod finds one, as it does on a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, Protocol

from bench_local import machine, node_daemon, process_cpu_ms
from common import ROOT, SUBNET, WHEREABOUTS, Call, Latency, children_cpu_ms, cni_env, machine_busy_ms, python_env

sys.path.insert(0, str(ROOT / "tests"))

# the servers the tests use, from tests/ (found through the path set just above)
from etcd_server import EtcdServer
from kube_server import KubeAPIServer, kube_tools

STORES = ("etcd", "kubernetes")
NAMESPACE = "bench"
# The Go plugin on the Kubernetes store, measured on a machine like this one (figures from the issue).
GO_SEQUENTIAL_ADD_MS = 58.0
GO_BURST_ADDS_PER_S = 10.0
GO_BURST_P99_MS = 15_000.0
# The targets for the kubernetes store.
TARGET_THROUGHPUT_FACTOR = 3.0  # x the Go plugin's burst ADDs/s
TARGET_BURST_P99_MS = 2_000.0
TARGET_SEQUENTIAL_ADD_MS = GO_SEQUENTIAL_ADD_MS  # mean per sequential ADD: no worse than the Go plugin's


STICKY = ("pod", "mac")


@dataclass(frozen=True)
class Settings:
    sequential: int
    burst: int
    callers: int
    nodes: int
    sticky: str = ""  # the network config's `sticky`, "" for off


FULL = Settings(sequential=200, burst=300, callers=40, nodes=4)
QUICK = Settings(sequential=20, burst=60, callers=10, nodes=4)


# --- the stores under test --------------------------------------------------------------------------------


@dataclass
class Traffic:
    """What the plugin asked of the server so far: request counts by kind, and server-side latencies (ms)."""

    counts: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def since(self, before: Traffic) -> Traffic:
        """The requests made after `before` was taken (both are cumulative, the latencies in arrival order)."""
        later = {k: v[len(before.latencies.get(k, [])) :] for k, v in self.latencies.items()}
        return Traffic(self.counts - before.counts, {k: v for k, v in later.items() if v})


class Store(Protocol):
    name: str

    def ipam(self, node_dir: Path) -> dict[str, Any]: ...

    def holders(self) -> list[tuple[str, str]]: ...

    def retained(self) -> int: ...

    def prepare(self, pods: list[str]) -> None: ...

    def server_pids(self) -> list[int]: ...

    def traffic(self) -> Traffic: ...


@dataclass
class EtcdStore:
    server: EtcdServer
    prefix: str = field(default_factory=lambda: f"/bench/{uuid.uuid4().hex[:8]}")
    name: str = "etcd"

    def ipam(self, node_dir: Path) -> dict[str, Any]:
        return {"etcd_host": self.server.url, "etcd_prefix": self.prefix}

    def holders(self) -> list[tuple[str, str]]:
        """(address, container ID) for every pool entry held (not retained for a sticky key), checked against
        the overlapping reservations."""
        keys = self.server.dump(self.prefix + "/")
        pools = [(v["address"], v["id"]) for k, v in keys.items() if "/pools/" in k and not v.get("retained")]
        reserved = {(v["address"], v["id"]) for k, v in keys.items() if "/reservations/" in k and not v.get("retained")}
        return pools if set(pools) == reserved else [*pools, ("pool/reservation mismatch", "")]

    def retained(self) -> int:
        return sum(1 for k, v in self.server.dump(self.prefix + "/").items() if "/pools/" in k and v.get("retained"))

    def prepare(self, pods: list[str]) -> None:
        return None  # the etcd store reads no pods

    def server_pids(self) -> list[int]:
        return [self.server.proc.pid] if self.server.proc else []

    def traffic(self) -> Traffic:
        """gRPC calls etcd served (its JSON gateway goes through them), from its Prometheus metrics."""
        with urllib.request.urlopen(f"{self.server.url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{") and 'grpc_service="etcdserverpb.KV"' in line:
                labels, value = line[len("grpc_server_handled_total{") :].rsplit("} ", 1)
                fields = dict(item.split("=", 1) for item in labels.split(","))
                code = fields["grpc_code"].strip('"')
                counts[fields["grpc_method"].strip('"') + ("" if code == "OK" else f" {code}")] += int(float(value))
        return Traffic(+counts)


@dataclass
class KubeStore:
    server: KubeAPIServer
    kubeconfig: Path
    name: str = "kubernetes"

    def ipam(self, node_dir: Path) -> dict[str, Any]:
        return {"kubernetes": {"kubeconfig": str(self.kubeconfig)}}

    def holders(self) -> list[tuple[str, str]]:
        """(address, container ID) for every entry of every IPPool held (not retained for a sticky key),
        checked against the reservations of held addresses."""
        found = [(address, entry["id"]) for address, entry in self._entries() if not entry.get("retained")]
        reservations = self.server.objects(NAMESPACE, "overlappingrangeipreservations").values()
        reserved = {(r["metadata"]["name"], r["spec"]["containerid"]) for r in reservations
                    if r["spec"].get("state") != "retained"}  # fmt: skip
        return found if set(found) == reserved else [*found, ("pool/reservation mismatch", "")]

    def retained(self) -> int:
        return sum(1 for _, entry in self._entries() if entry.get("retained"))

    def _entries(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for pool in self.server.objects(NAMESPACE, "ippools").values():
            base = int(ip_network(pool["spec"]["range"]).network_address)
            for offset, entry in (pool["spec"].get("allocations") or {}).items():
                found.append((str(ip_address(base + int(offset))), entry))
        return found

    def prepare(self, pods: list[str]) -> None:
        """The pods the calls name, controlled by a StatefulSet (a `sticky: pod` ADD reads its pod's controller),
        made through the API as an admin; no kubelet runs them."""
        self.server.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
                            {"metadata": {"name": "default"}, "automountServiceAccountToken": False})  # fmt: skip
        owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "bench", "uid": str(uuid.uuid4()),
                 "controller": True}  # fmt: skip
        for pod in pods:
            meta = {"name": pod, "namespace": NAMESPACE, "ownerReferences": [owner]}
            body = {"metadata": meta, "spec": {"nodeName": "node-0", "containers": [{"name": "c", "image": "none"}]}}
            self.server.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body)

    def server_pids(self) -> list[int]:
        procs = [self.server.proc, self.server.etcd.proc if self.server.etcd else None]
        return [p.pid for p in procs if p]

    def traffic(self) -> Traffic:
        """Every request the plugin's service account made, from the apiserver's audit log."""
        result = Traffic()
        for event in self.server.audited():
            kind = _audit_kind(event)
            result.counts[kind] += 1
            result.latencies.setdefault(kind, []).append(_audit_ms(event))
        return result


def _audit_kind(event: dict[str, Any]) -> str:
    code = event.get("responseStatus", {}).get("code", 0)
    kind = f"{event['verb']} {event.get('objectRef', {}).get('resource', '?')}"
    return kind if 200 <= code < 300 else f"{kind} {code}"


def _audit_ms(event: dict[str, Any]) -> float:
    received = datetime.fromisoformat(event["requestReceivedTimestamp"])
    return (datetime.fromisoformat(event["stageTimestamp"]) - received).total_seconds() * 1000


@contextmanager
def etcd_store(tmp: Path) -> Iterator[EtcdStore]:
    (tmp / "etcd").mkdir(parents=True)
    server = EtcdServer(tmp / "etcd" / "data")
    try:
        yield EtcdStore(server.start())
    finally:
        server.stop()


@contextmanager
def kube_store(tmp: Path) -> Iterator[KubeStore]:
    server = KubeAPIServer(tmp / "kube", kube_tools())
    try:
        server.start()
        server.install_whereabouts()
        server.namespace_for_plugin(NAMESPACE)
        path = tmp / "plugin.kubeconfig"  # JSON, as install-cni writes it on a node
        config = server.kubeconfig(path, token=server.plugin_token, namespace=NAMESPACE, as_json=True)
        yield KubeStore(server, config)
    finally:
        server.stop()  # the apiserver, then its etcd


# --- one call, as a kubelet on one node makes it ----------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    conf: bytes
    env: dict[str, str]
    daemon_pid: int = 0  # its whereabouts-node, if calls go through one
    sticky: str = ""


@dataclass(frozen=True)
class Outcome:
    call: Call
    cpu_ms: float  # this call's own CPU where calls run one at a time, else 0
    error: str


def nodes(store: Store, count: int, tmp: Path, daemons: list[tuple[Path, int]], sticky: str = "") -> list[Node]:
    """The network config as each node sees it: the same store, a local_data_dir of its own, `sticky` if on,
    and its node daemon's (socket, pid) if `daemons` has one per node (else served in process)."""
    env = python_env(tmp / "pycache")
    found = []
    for i in range(count):
        data_dir = tmp / store.name / f"node-{i}"
        ipam = {"type": "whereabouts", "range": SUBNET, "local_data_dir": str(data_dir)}
        ipam |= {"configuration_path": str(data_dir / "none"), **store.ipam(data_dir)}
        if sticky:
            ipam["sticky"] = sticky
        conf = {"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "ipam": ipam}
        sock, pid = daemons[i] if daemons else (Path(""), 0)
        node_env = {**env, "NODENAME": f"node-{i}", "WHEREABOUTS_SOCKET": str(sock) if pid else ""}
        found.append(Node(f"node-{i}", json.dumps(conf).encode(), node_env, pid, sticky))
    return found


def cni(node: Node, command: str, pod: str, container: str = "") -> Outcome:
    """Exec the plugin once for `pod` on `node` (its container `ctr-<pod>` unless named), timed from spawn to
    exit. With `sticky: mac` the call carries the pod's MAC, one per pod name."""
    env = cni_env(node.env, command, container or f"ctr-{pod}")
    env["CNI_ARGS"] = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={pod}"
    if node.sticky == "mac":
        env["CNI_ARGS"] += f";MAC={pod_mac(pod)}"
    cpu, start = children_cpu_ms(), time.perf_counter()
    proc = subprocess.run([str(WHEREABOUTS)], input=node.conf, capture_output=True, env=env, timeout=120)
    ms, cpu = (time.perf_counter() - start) * 1000, children_cpu_ms() - cpu
    if proc.returncode:
        return Outcome(Call(ms, False, ""), cpu, (proc.stdout or proc.stderr).decode().strip()[:300])
    address = json.loads(proc.stdout)["ips"][0]["address"].split("/")[0] if command == "ADD" else ""
    return Outcome(Call(ms, True, address), cpu, "")


def pod_mac(pod: str) -> str:
    """A locally administered unicast MAC derived from the pod's name: the same pod, the same MAC."""
    digest = zlib.crc32(pod.encode()).to_bytes(4, "big")
    return ":".join(f"{b:02x}" for b in (0x02, 0x00, *digest))


# --- phases ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One batch of calls: client-side latency, CPU per call (the plugin's, the servers'), what it cost the server."""

    calls: int
    wall_s: float
    per_s: float
    latency: Latency
    cpu_ms: float  # the plugin processes' CPU per call
    server_cpu_ms: float  # the servers' CPU per call (etcd; or kube-apiserver plus its etcd)
    others_busy: float  # CPU that other processes on the machine used meanwhile / (wall time x nproc)
    failures: int
    first_error: str
    requests_per_call: dict[str, float]
    server_ms: dict[str, Latency]  # server-side latency of each kind of request (audit log; kubernetes only)


def run_phase(
    store: Store, work: list[tuple[Node, str]], command: str, callers: int, generation: str = ""
) -> tuple[Phase, list[Outcome]]:
    """The calls of `work` from `callers` threads; `generation` names new containers for the same pods."""
    daemons = {node.daemon_pid for node, _ in work if node.daemon_pid}
    traffic, server_cpu, busy = store.traffic(), server_cpu_ms(store), machine_busy_ms()
    cpu = children_cpu_ms() + sum(process_cpu_ms(pid) for pid in daemons)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=callers) as pool:
        outcomes = list(pool.map(lambda job: cni(job[0], command, job[1], _container(job[1], generation)), work))
    wall = time.perf_counter() - start
    cpu = children_cpu_ms() + sum(process_cpu_ms(pid) for pid in daemons) - cpu
    server_cpu, busy = server_cpu_ms(store) - server_cpu, machine_busy_ms() - busy
    time.sleep(0.2)  # let the audit log catch up with the last responses
    spent = store.traffic().since(traffic)
    n = len(work)
    failed = [o.error for o in outcomes if not o.call.ok]
    phase = Phase(
        calls=n,
        wall_s=wall,
        per_s=n / wall,
        latency=Latency.of([o.call.ms for o in outcomes]),
        cpu_ms=cpu / n,
        server_cpu_ms=server_cpu / n,
        others_busy=max(0.0, busy - cpu - server_cpu) / (wall * 1000 * _nproc()),
        failures=len(failed),
        first_error=failed[0] if failed else "",
        requests_per_call={k: v / n for k, v in sorted(spent.counts.items())},
        server_ms={k: Latency.of(v) for k, v in sorted(spent.latencies.items())},
    )
    return phase, outcomes


def _container(pod: str, generation: str) -> str:
    return f"ctr-{pod}-{generation}" if generation else ""


def server_cpu_ms(store: Store) -> float:
    """CPU (user + system) the store's server processes have used so far, from /proc/<pid>/stat."""
    ticks = 0
    for pid in store.server_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Check:
    """What the store holds, read back from the store, against what the ADDs answered."""

    held: int
    duplicates: int  # addresses answered to two callers, plus containers the store shows holding two
    unconfirmed: int  # answered addresses the store does not show held by that container


def check(store: Store, work: list[tuple[Node, str]], outcomes: list[Outcome], generation: str = "") -> Check:
    held = store.holders()
    answered = [(o.call.address, _container(pod, generation) or f"ctr-{pod}")
                for (_, pod), o in zip(work, outcomes, strict=True) if o.call.ok]  # fmt: skip
    twice = sum(n - 1 for n in Counter(a for a, _ in answered).values() if n > 1)
    twice += sum(n - 1 for n in Counter(c for _, c in held).values() if n > 1)
    return Check(len(held), twice, len(set(answered) - set(held)))


@dataclass(frozen=True)
class Sequential:
    add: Phase
    delete: Phase
    held_after_del: int
    retained_after_del: int  # sticky: the DELs retain every address for its key


@dataclass(frozen=True)
class Burst:
    add: Phase
    after_add: Check
    delete: Phase
    held_after_del: int
    retained_after_del: int


@dataclass(frozen=True)
class Return:
    """Sticky only: the burst's pods back under new container IDs, all at once, then DEL again."""

    add: Phase
    after_add: Check
    same_address: int  # pods that got the address they had in the burst
    delete: Phase
    held_after_del: int


@dataclass(frozen=True)
class Figures:
    store: str
    sequential: Sequential
    burst: Burst
    returning: Return | None = None


def warm_up(store: Store, node: Node) -> None:
    """Create the pool and fill the bytecode cache, so the first measured call is like any other."""
    for i in range(3):
        cni(node, "ADD", f"warmup-{i}")
        cni(node, "DEL", f"warmup-{i}")


def sequential(store: Store, node: Node, n: int) -> Sequential:
    work = [(node, f"seq-{i}") for i in range(n)]
    add, _ = run_phase(store, work, "ADD", 1)
    delete, _ = run_phase(store, work, "DEL", 1)
    return Sequential(add, delete, len(store.holders()), store.retained())


def burst_work(on: list[Node], settings: Settings, shift: int = 0) -> list[tuple[Node, str]]:
    """The burst's pods, spread over the nodes (`shift`: each on another node than before)."""
    return [(on[(i + shift) % len(on)], f"burst-{i}") for i in range(settings.burst)]


def burst(store: Store, on: list[Node], settings: Settings) -> tuple[Burst, list[Outcome]]:
    work = burst_work(on, settings)
    add, outcomes = run_phase(store, work, "ADD", settings.callers)
    after_add = check(store, work, outcomes)
    delete, _ = run_phase(store, work, "DEL", settings.callers)
    return Burst(add, after_add, delete, len(store.holders()), store.retained()), outcomes


def returning(store: Store, on: list[Node], settings: Settings, before: list[Outcome]) -> Return:
    """The burst's pods come back at once, each on the next node and under a new container ID."""
    work = burst_work(on, settings, shift=1)
    add, outcomes = run_phase(store, work, "ADD", settings.callers, generation="2")
    after_add = check(store, work, outcomes, generation="2")
    same = sum(
        1 for old, new in zip(before, outcomes, strict=True) if old.call.ok and new.call.address == old.call.address
    )
    delete, _ = run_phase(store, work, "DEL", settings.callers, generation="2")
    return Return(add, after_add, same, delete, len(store.holders()))


def measure(store: Store, settings: Settings, tmp: Path, *, with_daemon: bool) -> Figures:
    with ExitStack() as stack:
        daemons = []
        if with_daemon:
            env = python_env(tmp / "pycache")
            for i in range(settings.nodes):
                sock = tmp / f"node-{i}.sock"
                daemons.append((sock, stack.enter_context(node_daemon(env, sock)).pid))
        on = nodes(store, settings.nodes, tmp, daemons, settings.sticky)
        if settings.sticky == "pod":
            store.prepare([f"{kind}-{i}" for kind, n in workload_pods(settings) for i in range(n)])
        warm_up(store, on[0])
        print(f"  {store.name}: {settings.sequential} sequential ADDs, then DELs", flush=True)
        seq = sequential(store, on[0], settings.sequential)
        print(f"  {store.name}: burst of {settings.burst} ADDs from {settings.callers} callers, then DELs", flush=True)
        burst_figures, outcomes = burst(store, on, settings)
        back = None
        if settings.sticky:
            print(
                f"  {store.name}: the burst's {settings.burst} pods back under new container IDs, then DELs", flush=True
            )
            back = returning(store, on, settings, outcomes)
        return Figures(store.name, seq, burst_figures, back)


def workload_pods(settings: Settings) -> list[tuple[str, int]]:
    """The pod names the calls use: '<kind>-<i>' for i below the count."""
    return [("warmup", 3), ("seq", settings.sequential), ("burst", settings.burst)]


def measure_store(name: str, settings: Settings, tmp: Path, *, with_daemon: bool) -> Figures:
    print(f"Starting {name} ...", flush=True)
    started = time.perf_counter()
    with etcd_store(tmp) if name == "etcd" else kube_store(tmp) as store:
        print(f"  ready in {time.perf_counter() - started:.1f}s", flush=True)
        figures = measure(store, settings, tmp, with_daemon=with_daemon)
    print(f"  {name} stopped", flush=True)
    return figures


# --- report ------------------------------------------------------------------------------------------------

Row = tuple[str, float | int | None]


def rows(f: Figures) -> list[Row]:
    s, b = f.sequential, f.burst
    return [
        ("sequential ADD p50 (ms)", s.add.latency.p50),
        ("sequential ADD p99 (ms)", s.add.latency.p99),
        ("sequential ADD mean (ms)", s.add.latency.mean),
        ("sequential ADD CPU/call, plugin (ms)", s.add.cpu_ms),
        ("sequential ADD CPU/call, servers (ms)", s.add.server_cpu_ms),
        ("sequential DEL p50 (ms)", s.delete.latency.p50),
        ("sequential DEL p99 (ms)", s.delete.latency.p99),
        ("sequential DEL mean (ms)", s.delete.latency.mean),
        ("sequential DEL CPU/call, plugin (ms)", s.delete.cpu_ms),
        ("sequential DEL CPU/call, servers (ms)", s.delete.server_cpu_ms),
        ("sequential failures", s.add.failures + s.delete.failures),
        ("held after sequential DEL (must be 0)", s.held_after_del),
        ("burst wall time (s)", b.add.wall_s),
        ("burst ADDs/s", b.add.per_s),
        ("burst ADD p50 (ms)", b.add.latency.p50),
        ("burst ADD p99 (ms)", b.add.latency.p99),
        ("burst ADD CPU/call, plugin (ms)", b.add.cpu_ms),
        ("burst ADD CPU/call, servers (ms)", b.add.server_cpu_ms),
        ("burst CPU busy, plugin + servers (of nproc)", _busy(b.add)),
        ("burst CPU busy, other processes (of nproc)", b.add.others_busy),
        ("CPU-bound ceiling, nproc / CPU per ADD (ADDs/s)", _ceiling(b.add)),
        ("burst ADD failures", b.add.failures),
        ("burst duplicates (must be 0)", b.after_add.duplicates),
        ("burst answers the store lacks (must be 0)", b.after_add.unconfirmed),
        ("held after burst ADD (store)", b.after_add.held),
        ("burst DEL wall time (s)", b.delete.wall_s),
        ("burst DELs/s", b.delete.per_s),
        ("burst DEL p99 (ms)", b.delete.latency.p99),
        ("burst DEL failures", b.delete.failures),
        ("held after burst DEL (must be 0)", b.held_after_del),
        ("store requests per sequential ADD", sum(s.add.requests_per_call.values())),
        ("store requests per burst ADD", sum(b.add.requests_per_call.values())),
        *_sticky_rows(f),
    ]


def _sticky_rows(f: Figures) -> list[Row]:
    """With sticky on: what the DELs retained, and the burst's pods coming back (blank when off)."""
    r = f.returning
    return [
        ("retained after sequential DEL", f.sequential.retained_after_del),
        ("retained after burst DEL", f.burst.retained_after_del),
        ("returning burst ADDs/s", r.add.per_s if r else None),
        ("returning burst ADD p50 (ms)", r.add.latency.p50 if r else None),
        ("returning burst ADD p99 (ms)", r.add.latency.p99 if r else None),
        ("returning burst ADD failures", r.add.failures if r else None),
        ("returned to their old address (of the burst)", r.same_address if r else None),
        ("returning burst duplicates (must be 0)", r.after_add.duplicates if r else None),
        ("store requests per returning ADD", sum(r.add.requests_per_call.values()) if r else None),
        ("held after returning DEL (must be 0)", r.held_after_del if r else None),
    ]


def _busy(phase: Phase) -> float:
    """The plugin's and the servers' CPU during the phase over what the machine had: near 1 is CPU-bound."""
    return (phase.cpu_ms + phase.server_cpu_ms) * phase.calls / (phase.wall_s * 1000 * _nproc())


def _ceiling(phase: Phase) -> float:
    """The call rate this machine could reach if the plugin's and the servers' CPU were the only limit."""
    cpu = phase.cpu_ms + phase.server_cpu_ms
    return _nproc() * 1000 / cpu if cpu > 0 else float("inf")


def _nproc() -> int:
    return len(os.sched_getaffinity(0))


GO_ROWS: dict[str, float] = {
    "sequential ADD mean (ms)": GO_SEQUENTIAL_ADD_MS,
    "burst ADDs/s": GO_BURST_ADDS_PER_S,
    "burst ADD p99 (ms)": GO_BURST_P99_MS,
}


def _cell(value: float | int | None) -> str:
    if value is None:
        return f"{'':>12}"
    return f"{value:12d}" if isinstance(value, int) else f"{value:12.2f}"


def table(results: list[Figures]) -> str:
    columns = [rows(f) for f in results]
    lines = [f"{'':48}" + "".join(f" {f.store:>12}" for f in results) + f" {'Go (issue)':>12}"]
    for i, (label, _) in enumerate(columns[0]):
        cells = "".join(f" {_cell(column[i][1])}" for column in columns)
        lines.append(f"{label:48}{cells} {_cell(GO_ROWS.get(label))}")
    return "\n".join(lines)


def traffic_report(f: Figures) -> str:
    """Per ADD/DEL: which requests the store served, and (kubernetes) how long the apiserver took on each."""
    lines = [f"{f.store}: store requests per call, by kind" + (" (server-side p50/p99 ms)" if _timed(f) else "")]
    for label, phase in _phases(f):
        parts = [f"{k} {v:.2f}{_server_ms(phase, k)}" for k, v in phase.requests_per_call.items()]
        lines.append(f"  {label:15} {sum(phase.requests_per_call.values()):5.2f}: " + ", ".join(parts))
    for label, phase in _phases(f):
        if phase.server_ms:
            spent = sum(lat.mean * lat.n for lat in phase.server_ms.values()) / phase.calls
            lines.append(f"  {label:15} apiserver time per call {spent:.1f} ms of {phase.latency.mean:.1f} ms mean")
    return "\n".join(lines)


def _phases(f: Figures) -> list[tuple[str, Phase]]:
    s, b, r = f.sequential, f.burst, f.returning
    back = [("returning ADD", r.add), ("returning DEL", r.delete)] if r else []
    return [("sequential ADD", s.add), ("sequential DEL", s.delete), ("burst ADD", b.add), ("burst DEL", b.delete),
            *back]  # fmt: skip


def _timed(f: Figures) -> bool:
    return bool(f.sequential.add.server_ms)


def _server_ms(phase: Phase, kind: str) -> str:
    lat = phase.server_ms.get(kind)
    return f" ({lat.p50:.0f}/{lat.p99:.0f})" if lat else ""


def errors_report(f: Figures) -> str:
    errors = [(label, p.first_error) for label, p in _phases(f) if p.first_error]
    return "\n".join(f"{f.store}: first {label} failure: {error}" for label, error in errors)


def targets(f: Figures) -> dict[str, bool]:
    b, r = f.burst, f.returning
    sticky = {} if r is None else {
        "sticky_every_pod_back_at_its_address": r.same_address == b.add.calls and r.add.failures == 0,
        "sticky_no_duplicates_when_returning": r.after_add.duplicates == 0 and r.after_add.unconfirmed == 0,
    }  # fmt: skip
    return {
        **sticky,
        "burst_throughput_3x_go": b.add.per_s >= TARGET_THROUGHPUT_FACTOR * GO_BURST_ADDS_PER_S,
        "burst_p99_under_2s": b.add.latency.p99 < TARGET_BURST_P99_MS,
        "sequential_add_no_worse_than_go": f.sequential.add.latency.mean <= TARGET_SEQUENTIAL_ADD_MS,
        "no_duplicates": b.after_add.duplicates == 0 and b.after_add.unconfirmed == 0,
        "pool_empty_after_del": b.held_after_del == 0 and f.sequential.held_after_del == 0,
    }


def targets_report(f: Figures, met: dict[str, bool]) -> str:
    verdict = {True: "MET", False: "MISSED"}
    b, s = f.burst, f.sequential
    scope = "" if f.store == "kubernetes" else " (the targets are set for kubernetes; shown for reference)"
    return "\n".join(
        [
            f"Targets, {f.store}{scope}:",
            f"  burst throughput >= {TARGET_THROUGHPUT_FACTOR:g}x the Go plugin's ({GO_BURST_ADDS_PER_S:g} ADDs/s): "
            f"{b.add.per_s:.1f} ADDs/s ({b.add.per_s / GO_BURST_ADDS_PER_S:.1f}x) "
            f"-> {verdict[met['burst_throughput_3x_go']]}",
            f"  burst ADD p99 < {TARGET_BURST_P99_MS / 1000:g} s: {b.add.latency.p99 / 1000:.2f} s "
            f"-> {verdict[met['burst_p99_under_2s']]}",
            f"  sequential ADD mean <= {TARGET_SEQUENTIAL_ADD_MS:g} ms: {s.add.latency.mean:.1f} ms "
            f"-> {verdict[met['sequential_add_no_worse_than_go']]}",
            f"  no address held twice, every answer in the store: -> {verdict[met['no_duplicates']]}",
            f"  pool empty after DEL: -> {verdict[met['pool_empty_after_del']]}",
            *_sticky_targets(f, met, verdict),
        ]
    )


def _sticky_targets(f: Figures, met: dict[str, bool], verdict: dict[bool, str]) -> list[str]:
    if f.returning is None:
        return []
    r = f.returning
    return [
        f"  sticky: every pod back at its address ({r.same_address} of {f.burst.add.calls}): "
        f"-> {verdict[met['sticky_every_pod_back_at_its_address']]}",
        f"  sticky: no address held twice when they return: -> {verdict[met['sticky_no_duplicates_when_returning']]}",
    ]


def header(settings: Settings, info: dict[str, Any]) -> str:
    noisy = "\n  (other work is running: absolute figures are inflated)" if info["busy_before_start"] > 0.2 else ""
    return (
        f"Machine: nproc={info['nproc']}  cpu={info['cpu']}  python={info['python']}  kernel={info['kernel']}  "
        f"load average (1 min)={info['load_average_1m']:.2f}  CPU busy before start={info['busy_before_start']:.2f}"
        f"{noisy}\n"
        f"Workload per store: {settings.sequential} sequential ADDs then DELs (one node); burst of {settings.burst} "
        f"ADDs from {settings.callers} concurrent callers posing as {settings.nodes} nodes, then DEL all; "
        f"subnet {SUBNET}; sticky: {settings.sticky or 'off'}\n"
        f"Go plugin, kubernetes store, on such a machine (from the issue): ~{GO_SEQUENTIAL_ADD_MS:g} ms per sequential "
        f"ADD; 300 ADDs from 40 callers: ~{GO_BURST_ADDS_PER_S:g} ADDs/s, p99 ~{GO_BURST_P99_MS / 1000:g} s\n"
    )


def run(settings: Settings, names: list[str], tmp: Path, *, with_daemon: bool = False) -> dict[str, Any]:
    info = machine()
    print(header(settings, info), flush=True)
    print(f"Calls served {'through a whereabouts-node per node' if with_daemon else 'in process'}\n", flush=True)
    results = [measure_store(name, settings, tmp / name, with_daemon=with_daemon) for name in names]
    print()
    print(table(results))
    for f in results:
        print()
        print(traffic_report(f))
        if errors := errors_report(f):
            print(errors)
    met = {f.store: targets(f) for f in results}
    for f in results:
        print()
        print(targets_report(f, met[f.store]))
    return {
        "machine": info,
        "settings": asdict(settings),
        "go_plugin": {"sequential_add_ms": GO_SEQUENTIAL_ADD_MS, "burst_adds_per_s": GO_BURST_ADDS_PER_S},
        "stores": {f.store: asdict(f) for f in results},
        "targets_met": met,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload, for a smoke run")
    parser.add_argument("--store", choices=[*STORES, "all"], default="all", help="which datastore(s) to measure")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument("--node-daemon", action="store_true", help="serve calls through a whereabouts-node per node")
    parser.add_argument("--sticky", choices=STICKY, help="the network config's `sticky` (default: off)")
    args = parser.parse_args()
    names = list(STORES) if args.store == "all" else [args.store]
    settings = replace(QUICK if args.quick else FULL, sticky=args.sticky or "")
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as tmp:
        result = run(settings, names, Path(tmp), with_daemon=args.node_daemon)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nFigures written to {args.json}")


if __name__ == "__main__":
    main()
