"""Many CNI processes against one pool on a real kube-apiserver: bursts, churn, and kill -9 mid-ADD."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from kube_server import KubeAPIServer
from support import PLUGIN, CNIResult, netconf, run_cni, running_daemon

pytestmark = pytest.mark.slow
RANGE = "10.90.0.0/22"


def conf(tmp_path: Path, kubeconfig: Path) -> list[dict]:
    """The network config as each of 4 nodes sees it: one node-local directory per node."""
    kube = {"kubeconfig": str(kubeconfig)}
    return [netconf(tmp_path / f"node-{i}", range=RANGE, kubernetes=kube) for i in range(4)]


def call(command: str, config: list[dict], n: int, prefix: str, sockets: list[str] | None = None) -> CNIResult:
    """One CNI call posing as one of 4 nodes, as the kubelet there would make it (through that node's
    whereabouts-node when `sockets` are given)."""
    pod = f"{prefix}-{n}"
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=burst;K8S_POD_NAME={pod}"
    env = {"NODENAME": f"node-{n % 4}", "WHEREABOUTS_SOCKET": sockets[n % 4] if sockets else ""}
    return run_cni(command, config[n % 4], container_id=f"ctr-{pod}", cni_args=args, env=env, timeout=120)


def burst(
    command: str, config: list[dict], numbers: list[int], prefix: str, sockets: list[str] | None = None
) -> list[CNIResult]:
    with ThreadPoolExecutor(max_workers=40) as pool:
        return list(pool.map(lambda n: call(command, config, n, prefix, sockets), numbers))


def state(kube: KubeAPIServer, namespace: str, *, settle: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """(address -> container ID in the pool, address -> container ID in reservations), checked for doubles;
    with `settle`, once the pool agrees with the reservations (a node daemon writes the pool, a mirror of the
    reservations, a moment after them: store.kubecache), for up to 30 s (a burst's DELs on a busy machine)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            held, reserved = _state(kube, namespace)
        except AssertionError:
            if not settle or time.monotonic() > deadline:
                raise
        else:
            if not settle or held == reserved or time.monotonic() > deadline:
                return held, reserved
        time.sleep(0.1)


def _state(kube: KubeAPIServer, namespace: str) -> tuple[dict[str, str], dict[str, str]]:
    import ipaddress

    base = int(ipaddress.ip_network(RANGE).network_address)
    pools = kube.objects(namespace, "ippools")
    entries = pools["10.90.0.0-22"]["spec"]["allocations"] if pools else {}
    held = {str(ipaddress.ip_address(base + int(k))): v["id"] for k, v in entries.items()}
    reserved = {
        n: o["spec"]["containerid"] for n, o in kube.objects(namespace, "overlappingrangeipreservations").items()
    }
    assert len(set(held.values())) == len(held), "an attachment holds two addresses"
    for address, owner in held.items():
        assert reserved.get(address) == owner, f"{address} held by {owner} without its reservation"
    return held, reserved


def pool_writes(kube: KubeAPIServer, namespace: str) -> int:
    """Writes of IPPool objects the plugin made so far in `namespace` (from the audit log)."""
    return sum(
        1
        for event in kube.audited()
        if event["verb"] in ("patch", "update", "create")
        and event.get("objectRef", {}).get("resource") == "ippools"
        and event["objectRef"].get("namespace") == namespace
    )


@pytest.fixture
def node_daemons(tmp_path: Path) -> Iterator[list[str]]:
    """One whereabouts-node per simulated node, each on its own socket."""
    sockets = [str(tmp_path / f"node-{i}" / "plugin.sock") for i in range(4)]
    with ExitStack() as stack:
        for sock in sockets:
            stack.enter_context(running_daemon(sock))
        yield sockets


@pytest.mark.parametrize(("served_by", "count"), [("process-per-call", 160), ("node-daemon", 300)])
def test_a_burst_from_40_callers_on_4_nodes(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, served_by: str, count: int,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """`count` ADDs from 40 callers (160 in process: each call a process of its own, the suite's slowest case
    at 300), then as many DELs: none fails, no address twice, every entry with its reservation."""
    config = conf(tmp_path, plugin_kubeconfig)
    sockets = request.getfixturevalue("node_daemons") if served_by == "node-daemon" else None
    before = pool_writes(kube, kube_namespace)
    started = time.monotonic()
    results = burst("ADD", config, list(range(count)), "b", sockets)
    elapsed = time.monotonic() - started
    writes = pool_writes(kube, kube_namespace) - before
    failed = [r.stdout for r in results if r.returncode]
    assert not failed, failed[:3]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == count
    held, reserved = state(kube, kube_namespace)
    assert len(held) == len(reserved) == count
    rate = count / elapsed
    print(f"{count} ADDs from 40 callers ({served_by}): {elapsed:.1f}s, {rate:.1f} ADDs/s, {writes} pool writes")
    if served_by == "node-daemon":  # group commit: ADDs waiting together on a node share one pool write
        assert writes < 200, f"{writes} IPPool writes for {count} ADDs"
    else:
        assert writes >= count
    assert all(r.returncode == 0 for r in burst("DEL", config, list(range(count)), "b", sockets))
    assert state(kube, kube_namespace) == ({}, {})


def test_mixed_add_del_churn(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> None:
    config = conf(tmp_path, plugin_kubeconfig)
    rnd = random.Random(3)
    ops = [("ADD", n) for n in range(150)]
    ops += [("DEL", n) for n in rnd.sample(range(100), 60)]  # DELs race the ADDs of the same pods
    rnd.shuffle(ops)
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda op: (op, call(op[0], config, op[1], "m")), ops))
    assert all(r.returncode == 0 for _, r in results), [r.stdout for _, r in results if r.returncode][:3]
    # the runtime never DELs before ADD for one container; repeat the DELs now that every ADD is done
    deleted = {n for (verb, n), _ in results if verb == "DEL"}
    assert all(r.returncode == 0 for r in burst("DEL", config, sorted(deleted), "m"))
    held, _ = state(kube, kube_namespace)
    assert sorted(held.values()) == sorted(f"ctr-m-{n}" for n in range(150) if n not in deleted)
    assert len(set(held)) == len(held)


def test_kill_9_mid_add_leaves_nothing_held_twice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    config = json.dumps(conf(tmp_path, plugin_kubeconfig)[0]).encode()
    rnd = random.Random(11)
    killed, finished = [], {}
    top = 0.25  # the longest wait before the kills; doubled while no call has finished (a busy machine is slower)
    for round_ in range(25):
        procs = {}
        for n in range(4):
            cid = f"k{round_}-{n}"
            env = {
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": cid,
                "CNI_IFNAME": "eth0",
                "CNI_NETNS": "/x",
                "CNI_PATH": "/x",
            }
            procs[cid] = subprocess.Popen([PLUGIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            procs[cid].stdin.write(config)
            procs[cid].stdin.close()
        time.sleep(rnd.uniform(0.05, top))
        for cid, proc in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            out = proc.stdout.read().decode()
            if proc.wait() == 0:
                finished[cid] = json.loads(out)["ips"][0]["address"].split("/")[0]
            else:
                assert proc.returncode == -signal.SIGKILL, out
                killed.append(cid)
        if not finished:
            top = min(top * 2, 4.0)
    assert killed and finished, "the loop must both kill calls and let some finish"
    held, reserved = state(kube, kube_namespace, settle=False)  # each pool entry has its reservation: none twice
    for cid, address in finished.items():
        assert held[address] == cid
    # a reservation without a pool entry can only belong to a killed call; the runtime's DEL repairs it
    assert {reserved[a] for a in set(reserved) - set(held)} <= set(killed)
    for cid in killed:
        result = run_cni("DEL", conf(tmp_path, plugin_kubeconfig)[0], container_id=cid)
        assert result.returncode == 0, result.stdout
    held, reserved = state(kube, kube_namespace)
    assert held == reserved and set(held.values()) == set(finished)


def test_node_daemons_killed_mid_burst_lose_nothing(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """kill -9 of every node daemon while its batches are in flight: the calls it was serving fall back to
    serving themselves (an ADD is idempotent), every caller gets an answer, nothing is held twice, the pool's
    mirror entries the killed daemons had not written yet are written by the next daemon that serves the pool,
    and the DELs leave the pool and the reservations empty."""
    config = conf(tmp_path, plugin_kubeconfig)
    sockets = [str(tmp_path / f"node-{i}" / "plugin.sock") for i in range(4)]
    with ExitStack() as stack:
        daemons = [stack.enter_context(running_daemon(sock)) for sock in sockets]
        with ThreadPoolExecutor(max_workers=40) as pool:
            futures = [pool.submit(call, "ADD", config, n, "kd", sockets) for n in range(120)]
            time.sleep(1.0)  # batches are being served now
            for daemon in daemons:
                daemon.send_signal(signal.SIGKILL)
            results = [f.result() for f in futures]
    assert all(d.wait() == -signal.SIGKILL for d in daemons)
    failed = [r.stdout for r in results if r.returncode]
    assert not failed, failed[:3]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 120
    reserved = {o["spec"]["address"]: o["spec"]["containerid"]
                for o in kube.objects(kube_namespace, "overlappingrangeipreservations").values()}  # fmt: skip
    assert reserved == {r.addresses()[0].split("/")[0]: f"ctr-kd-{n}" for n, r in enumerate(results)}
    with ExitStack() as stack:  # restarted, the daemons write the pool entries the killed ones owed
        for sock in sockets:
            stack.enter_context(running_daemon(sock))
        for n in range(120, 124):  # a call through each
            assert call("ADD", config, n, "kd", sockets).returncode == 0
        deadline = time.monotonic() + 30
        while len(state(kube, kube_namespace, settle=False)[0]) < 124 and time.monotonic() < deadline:
            time.sleep(0.1)
    held, reserved = state(kube, kube_namespace)  # every pool entry has its reservation
    assert held == reserved, sorted(set(held.items()) ^ set(reserved.items()))
    assert sorted(held.values()) == sorted(f"ctr-kd-{n}" for n in range(124))
    assert all(r.returncode == 0 for r in burst("DEL", config, list(range(124)), "kd"))
    assert state(kube, kube_namespace) == ({}, {})
