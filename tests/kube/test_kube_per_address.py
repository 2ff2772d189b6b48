"""The per-address objects as the unit of truth (store.kubecache), on a real kube-apiserver: node daemons on
many nodes deciding from watch-fed copies that lag each other, killed mid-burst, and a Go-plugin-like
allocator writing the same pool beside them."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from kube_server import KubeAPIServer
from support import CNIResult, alive, netconf, run_cni, running_daemon, standin_pid, stop_standin
from whereabouts.kube.client import Conflict, KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.kube.resources import IPPOOLS, RESERVATIONS

pytestmark = pytest.mark.slow
RANGE = "10.91.0.0/22"
POOL = "10.91.0.0-22"
NODES = 10


def configs(tmp_path: Path, kubeconfig: Path) -> list[dict[str, Any]]:
    kube = {"kubeconfig": str(kubeconfig)}
    return [netconf(tmp_path / f"node-{i}", range=RANGE, kubernetes=kube) for i in range(NODES)]


def call(command: str, config: list[dict[str, Any]], n: int, sockets: list[str], standin: str = "") -> CNIResult:
    node = n % NODES
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=race;K8S_POD_NAME=p-{n}"
    env = {"NODENAME": f"node-{node}", "WHEREABOUTS_SOCKET": sockets[node], "WHEREABOUTS_STANDIN": standin}
    return run_cni(command, config[node], container_id=f"ctr-{n}", cni_args=args, env=env, timeout=120)


def pool_entries(kube: KubeAPIServer, namespace: str) -> dict[str, str]:
    base = int(ipaddress.ip_network(RANGE).network_address)
    pool = kube.objects(namespace, "ippools").get(POOL)
    entries = (pool or {}).get("spec", {}).get("allocations") or {}
    return {str(ipaddress.ip_address(base + int(k))): v["id"] for k, v in entries.items()}


def reservations(kube: KubeAPIServer, namespace: str) -> dict[str, str]:
    """address -> container ID (the Go plugin's objects say their address by their name alone)."""
    return {o["spec"].get("address", name): o["spec"]["containerid"]
            for name, o in kube.objects(namespace, "overlappingrangeipreservations").items()}  # fmt: skip


def mirrored(kube: KubeAPIServer, namespace: str, wait: float = 30.0) -> dict[str, str]:
    """The pool's entries once they say what the reservations say (the mirror is written a moment after)."""
    deadline = time.monotonic() + wait
    while True:
        entries, reserved = pool_entries(kube, namespace), reservations(kube, namespace)
        if entries == reserved or time.monotonic() > deadline:
            assert entries == reserved, f"the pool does not mirror the reservations: {entries} vs {reserved}"
            return entries
        time.sleep(0.1)


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[list[str]]:
    for i in range(NODES):
        (tmp_path / f"node-{i}").mkdir(exist_ok=True)
    found = [str(tmp_path / f"node-{i}" / "plugin.sock") for i in range(NODES)]
    yield found
    for sock in found:  # the stand-ins the calls started (if any), stopped by their pids
        stop_standin(sock, 15)


@pytest.mark.parametrize("standin", ["", "30"], ids=["in-process", "stand-in"])
def test_ten_nodes_racing_with_daemons_killed_mid_burst_hold_nothing_twice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, sockets: list[str], standin: str
) -> None:
    """200 ADDs from 50 callers on 10 nodes, each node's daemon deciding from its own copy; 3 daemons are
    killed (kill -9) mid-burst and their calls serve themselves, or (WHEREABOUTS_STANDIN) go to the stand-in
    daemon the first of them starts on their node, beside the in-process calls meanwhile. Every call gets an
    address, none twice, each address's reservation names its attachment; restarted, the daemons write the pool
    entries the killed ones owed (and the stand-ins leave); the DELs leave nothing."""
    config = configs(tmp_path, plugin_kubeconfig)
    with ExitStack() as stack:
        daemons = [stack.enter_context(running_daemon(sock, log=Path(sock + ".log"))) for sock in sockets]
        with ThreadPoolExecutor(max_workers=50) as pool:
            futures = [pool.submit(call, "ADD", config, n, sockets, standin) for n in range(200)]
            time.sleep(1.5)
            for daemon in daemons[:3]:
                daemon.send_signal(signal.SIGKILL)
            results = [f.result() for f in futures]
        failed = [r.stdout for r in results if r.returncode]
        assert not failed, failed[:3]
        got = {f"ctr-{n}": r.addresses()[0].split("/")[0] for n, r in enumerate(results)}
        assert len(set(got.values())) == 200, "an address handed out twice"
        assert reservations(kube, kube_namespace) == {address: cid for cid, address in got.items()}
        for daemon in daemons[:3]:
            daemon.wait()
        started = [standin_pid(sock) for sock in sockets[:3] if standin_pid(sock)]
        assert bool(started) == bool(standin)  # (the killed daemons' nodes)
        restarted = [stack.enter_context(running_daemon(sock, log=Path(sock + ".log"))) for sock in sockets[:3]]
        assert restarted
        for pid in started:  # the node's daemon is back: each stand-in leaves
            deadline = time.monotonic() + 15
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(pid), "a stand-in stayed beside the node daemon"
        for n in range(200, 203):  # a call through each restarted daemon: it reads the pool, writes what is owed
            assert call("ADD", config, n, sockets, standin).returncode == 0
        entries = mirrored(kube, kube_namespace)
        assert len(entries) == 203
        with ThreadPoolExecutor(max_workers=50) as pool:
            dels = list(pool.map(lambda n: call("DEL", config, n, sockets, standin), range(203)))
        assert all(r.returncode == 0 for r in dels), [r.stdout for r in dels if r.returncode][:3]
        assert mirrored(kube, kube_namespace) == {}


class GoLikeAllocator:
    """Stands in for the Go plugin (which cannot be built here: its Go modules are not reachable), doing what
    its Kubernetes IPAM does per ADD with overlapping ranges on (its default): read the IPPool, take the
    lowest offset not in its allocations, skip it if its OverlappingRangeIPReservation exists, write the whole
    pool back under its resourceVersion (a conflict: read and try again), then create the reservation (if
    that create fails, the ADD fails)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.client = KubeClient(load_credentials(str(kubeconfig)))
        self.network = ipaddress.ip_network(RANGE)
        self.got: dict[str, str] = {}
        self.failed = 0

    def add(self, cid: str) -> None:
        skip: set[int] = set()
        for _ in range(200):
            pool = self.client.get(self.client.path(IPPOOLS, POOL))
            if pool is None:
                time.sleep(0.05)  # our plugin creates it with its first ADD
                continue
            taken = {int(k) for k in pool["spec"].get("allocations") or {}} | skip
            offset = next(o for o in range(1, self.network.num_addresses - 1) if o not in taken)
            address = str(self.network.network_address + offset)
            if self.client.get(self.client.path(RESERVATIONS, address)) is not None:
                skip.add(offset)
                continue
            pool["spec"].setdefault("allocations", {})[str(offset)] = {"id": cid, "podref": "go/p", "ifname": "eth0"}
            try:
                self.client.replace(self.client.path(IPPOOLS, POOL), pool)
            except Conflict:
                continue
            reservation = {
                "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
                "kind": "OverlappingRangeIPReservation",
                "metadata": {"name": address, "namespace": self.client.namespace},
                "spec": {"containerid": cid, "podref": "go/p", "ifname": "eth0"},
            }
            try:
                self.client.create(self.client.path(RESERVATIONS), reservation)
            except Conflict:
                self.failed += 1  # the Go plugin's ADD fails here (its entry stays: a leak, never a double)
                return
            self.got[cid] = address
            return
        raise AssertionError(f"{cid}: the Go-like allocator found no address")


@pytest.fixture
def go_like(plugin_kubeconfig: Path) -> Iterator[GoLikeAllocator]:
    allocator = GoLikeAllocator(plugin_kubeconfig)
    yield allocator
    allocator.client.close()


def test_a_go_like_allocator_beside_the_daemons_never_gets_an_address_they_hold(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, sockets: list[str],
    go_like: GoLikeAllocator,
) -> None:  # fmt: skip
    config = configs(tmp_path, plugin_kubeconfig)
    assert call("ADD", config, 0, [""] * NODES).returncode == 0  # the pool exists for the Go-like allocator
    with ExitStack() as stack:
        for sock in sockets:
            stack.enter_context(running_daemon(sock))
        go_thread = threading.Thread(target=lambda: [go_like.add(f"go-{i}") for i in range(40)])
        go_thread.start()
        with ThreadPoolExecutor(max_workers=30) as pool:
            results = list(pool.map(lambda n: call("ADD", config, n, sockets), range(1, 121)))
        go_thread.join(120)
        assert not go_thread.is_alive()
        assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:3]
        ours = {r.addresses()[0].split("/")[0] for r in results}
        assert len(ours) == 120
        assert not ours & set(go_like.got.values()), "the Go-like allocator got an address the daemons hold"
        assert len(set(go_like.got.values())) == len(go_like.got)
        reserved = reservations(kube, kube_namespace)
        for address in ours:
            assert reserved[address].startswith("ctr-")
        time.sleep(1.0)  # the mirror settles: the Go-like allocator's entries and ours, none overwritten
        entries = pool_entries(kube, kube_namespace)
        for cid, address in go_like.got.items():
            assert entries[address] == cid
        for address in ours:
            assert entries[address].startswith("ctr-")


def test_an_adoption_from_a_copy_that_missed_a_del_brings_back_no_entry(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path
) -> None:
    """A daemon compares a pool with its reservations (adopt) from its copy, which may not have seen another
    node's DEL yet: the entries it would write are read afresh first, so a released address gets no entry back
    (nobody would remove it: the DEL's node saw no entry to remove). A reservation the server has is mirrored."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.store.kubecache import KubeCache

    key = PoolKey("", "10.93.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(IPPOOLS), resources.new_pool(key, kube_namespace))
    where = {"network": "", "cidr": key.cidr}
    live, gone = Owner("ctr-live", "eth0", "ns/live"), Owner("ctr-gone", "eth0", "ns/gone")
    live_ip, gone_ip = int(ipaddress.ip_address("10.93.0.5")), int(ipaddress.ip_address("10.93.0.6"))
    client.create(client.path(RESERVATIONS),
                  resources.reservation("10.93.0.5", live, kube_namespace, **where, address=(4, live_ip)))  # fmt: skip
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    try:
        assert cache.ready()
        stale = resources.reservation("10.93.0.6", gone, kube_namespace, **where, address=(4, gone_ip))
        stale["metadata"]["resourceVersion"] = str(10**12)  # the copy still shows it: its DEL is not seen yet
        cache.wrote_reservation(stale)
        cache.mirror.adopt(key)
        assert cache.mirror.flush(30.0)
        entries = client.get(client.path(IPPOOLS, "10.93.0.0-24"))["spec"]["allocations"]
        assert {offset: entry["id"] for offset, entry in entries.items()} == {"5": "ctr-live"}
    finally:
        cache.close()


def test_a_restarted_daemon_removes_the_entries_its_killed_predecessor_s_dels_left_and_no_go_entry(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path
) -> None:
    """A daemon's DEL deletes the reservation and leaves the entry to its mirror round: killed in between (and
    no other daemon watching the pool), the entry stayed for good, its address never handed out again. The
    next daemon's comparison removes an entry this plugin wrote after its reservation (marked so) that has no
    reservation now (it is no ADD in flight); a Go plugin's entry without one (it writes its entry first: an
    ADD in flight, maybe), this plugin's entries written without overlapping ranges (no reservation: by design),
    also of a network config that was switched to them since and whose new ADDs write reservations (the
    old entries' pods are live), and an entry whose reservation is there stay."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.store.kubecache import KubeCache

    key = PoolKey("", "10.93.4.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    ours = {"netconf": "testnet", "node": "node-a"}
    live = Owner("ctr-live", "eth0", "ns/live").but(**ours)
    deleted = Owner("ctr-deleted", "eth0", "ns/deleted").but(**ours)
    go = Owner("ctr-go", "eth0", "ns/go")
    flat = Owner("ctr-flat", "eth0", "ns/flat").but(netconf="flat", node="node-a")  # no overlapping ranges
    switched = Owner("ctr-old", "eth0", "ns/old").but(**ours)  # before testnet was switched to overlapping ranges
    pool = resources.new_pool(key, kube_namespace)
    pool["spec"]["allocations"] = {
        "5": resources.entry(live, reserved=True), "6": resources.entry(deleted, reserved=True),
        "7": resources.entry(go), "8": resources.entry(flat), "9": resources.entry(switched),
    }  # fmt: skip
    assert set(pool["spec"]["allocations"]["7"]) == {"id", "podref", "ifname"}  # the Go plugin's format
    client.create(client.path(IPPOOLS), pool)
    where = {"network": "", "cidr": key.cidr}
    client.create(client.path(RESERVATIONS), resources.reservation(
        "10.93.4.5", live, kube_namespace, **where, address=(4, int(ipaddress.ip_address("10.93.4.5")))))  # fmt: skip
    # (ctr-deleted's reservation: deleted by the killed daemon's DEL; ctr-go's: not written yet; ctr-flat: none)
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))  # the daemon restarted: no call yet
    try:
        assert cache.ready()
        deadline = time.monotonic() + 30
        while set(client.get(client.path(IPPOOLS, key.name))["spec"]["allocations"]) != {"5", "7", "8", "9"}:
            assert time.monotonic() < deadline, client.get(client.path(IPPOOLS, key.name))["spec"]["allocations"]
            time.sleep(0.1)
        assert cache.mirror.flush(30.0)
        free = int(ipaddress.ip_address("10.93.4.6"))
        assert free not in cache.pool_state(key).allocations  # handed out again
        assert {ip - free + 6 for ip in cache.pool_state(key).allocations} == {5, 7, 8, 9}
    finally:
        cache.close()
        client.close()


def test_the_copy_survives_a_nonsense_range_label_and_forgets_a_deleted_pools_entries(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path
) -> None:
    """A reservation labelled with a range no address has (subnet_40 on an IPv4 address: hand-written, or
    another tool's) is not filed in any pool, and the copy stays usable (before: a negative shift in the
    watch's listener, the copy refused for good, every call read the server); the decoded entries of an IPPool
    go when it is deleted (a daemon runs for months while node slices come and go)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.store.kubecache import KubeCache

    key = PoolKey("", "10.95.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(IPPOOLS), resources.new_pool(key, kube_namespace))
    odd = resources.reservation(
        "10.95.0.7", Owner("ctr-odd", "eth0", "ns/odd"), kube_namespace, address=(4, 0x0A5F0007)
    )
    odd["metadata"]["labels"]["subnet_40"] = "10.95.0.0"
    client.create(client.path(RESERVATIONS), odd)
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    try:
        assert cache.ready()
        snapshot = cache.snapshot([key])
        assert ("", 4, 0x0A5F0007) in snapshot.reservations  # it still blocks its address, network-wide
        assert 0x0A5F0007 not in snapshot.pools[key].allocations  # in no pool: its range is none
        assert key.name in cache.decoded
        client.delete(client.path(IPPOOLS, key.name))
        deadline = time.monotonic() + 10
        while key.name in cache.decoded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert key.name not in cache.decoded
        assert cache.ready(0)
    finally:
        cache.close()


def test_a_slow_mirror_round_does_not_leave_the_pools_stale_for_long() -> None:
    """The next round waits ten times what the last took (the mirror's share of the server's time), but not
    so long that the pools stay stale: a round of 5 s under load is followed 2 s later; failures back off to
    30 s at most."""
    from whereabouts.store.kubecache import MIRROR_DELAY, round_pause

    assert round_pause(0.001, 0) == MIRROR_DELAY
    assert round_pause(0.1, 0) == pytest.approx(1.0)
    assert round_pause(5.0, 0) == 2.0
    assert round_pause(0.001, 1) == 2 * MIRROR_DELAY
    assert round_pause(5.0, 20) == 30.0


def test_a_del_in_process_leaves_another_networks_reservation_of_the_same_interface(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The same container and interface in two networks (a runtime reusing an interface name across
    attachments): the DEL of one drops its own leftover reservations, never the other network's record."""
    kubernetes = {"kubeconfig": str(plugin_kubeconfig)}
    a = netconf(tmp_path, range="10.94.0.0/29", network_name="neta", kubernetes=kubernetes)
    b = netconf(tmp_path, range="10.94.0.0/29", network_name="netb", kubernetes=kubernetes)
    for config in (a, b):
        assert run_cni("ADD", config, container_id="ctr-x").returncode == 0
    assert run_cni("DEL", a, container_id="ctr-x").returncode == 0
    names = set(kube.objects(kube_namespace, "overlappingrangeipreservations"))
    assert names == {"netb-10.94.0.1"}


@pytest.mark.parametrize("served", ["in-process", "in-process-mirror-off", "daemon-copy"])
def test_a_failed_add_gives_a_sticky_address_it_took_over_back_to_its_retained_record(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, served: str,
) -> None:  # fmt: skip
    """A pod's new container takes over its retained sticky address in one range and loses the last free
    address of a second range to a racer between its decision and its write; the retry finds that range full
    and the ADD fails. Its abort must give the sticky address back to the retained record, not delete the
    reservation (before: the address was freed, and the pod's next ADD got another one)."""
    from whereabouts.allocator import Refusal
    from whereabouts.config import KubernetesSettings, parse_ipam
    from whereabouts.model import Owner
    from whereabouts.service import IPAMService
    from whereabouts.store.kubecache import KubeCache
    from whereabouts.store.kubernetes import KubernetesStore

    mirror = served != "in-process-mirror-off"
    settings = {"kubeconfig": str(plugin_kubeconfig), "ippool_mirror": mirror}
    base = {"type": "whereabouts", "local_data_dir": str(tmp_path), "kubernetes": settings, "sticky": "pod"}
    one = parse_ipam({**base, "range": "10.66.0.0/29"}, "netA")
    both = parse_ipam({**base, "ipRanges": [{"range": "10.66.0.0/29"}, {"range": "10.66.1.0/30"}]}, "netA")
    sticky = "pod:ns/db-0/eth0"
    old, new = (Owner(c, "eth0", "ns/db-0", netconf="netA", sticky=sticky) for c in ("old", "new"))
    other, racer = Owner("x", "eth0", "ns/x", netconf="netA"), Owner("y", "eth0", "ns/y", netconf="netA")

    def store() -> KubernetesStore:
        return KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=mirror)

    assert [a.address for a in IPAMService(store()).add(one, old)] == ["10.66.0.1/29"]
    IPAMService(store()).delete(one, old)  # retained for db-0
    only_b = parse_ipam({**base, "range": "10.66.1.0/30", "sticky": ""}, "netA")
    assert [a.address for a in IPAMService(store()).add(only_b, other)] == ["10.66.1.1/30"]

    cache = KubeCache(KubernetesSettings(**settings)) if served == "daemon-copy" else None
    try:
        loser = store()
        if cache is not None:
            assert cache.ready()
            loser.cache = cache
        real_create = loser.create_reservation

        def racing(name: str, owner: Owner, **where: object) -> str:
            if name == "10.66.1.2":  # the racer's ADD lands between this call's decision and its create
                assert [a.address for a in IPAMService(store()).add(only_b, racer)] == ["10.66.1.2/30"]
            return real_create(name, owner, **where)

        monkeypatch.setattr(loser, "create_reservation", racing)
        refused = IPAMService(loser).add(both, new)
        assert isinstance(refused, Refusal) and "no free address in range 10.66.1.0/30" in refused.msg, refused
        if cache is not None:
            assert cache.mirror.flush(30.0)
    finally:
        if cache is not None:
            cache.close()
    spec = kube.objects(kube_namespace, "overlappingrangeipreservations")["10.66.0.1"]["spec"]
    assert (spec["containerid"], spec["state"]) == ("old", "retained"), spec
    if mirror:
        pool = kube.objects(kube_namespace, "ippools")["10.66.0.0-29"]["spec"]["allocations"]
        assert pool["1"]["id"] == "old" and pool["1"].get("retained"), pool
    IPAMService(store()).delete(only_b, racer)
    assert [a.address for a in IPAMService(store()).add(both, new)] == ["10.66.0.1/29", "10.66.1.2/30"]


@pytest.mark.parametrize(("held", "lists"), [(400, 0), (12, 1)])
def test_the_mirror_confirms_removals_by_gets_where_a_list_would_read_far_more(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
    held: int, lists: int,
) -> None:  # fmt: skip
    """Before removing entries the mirror reads their reservations from the server. With 400 reservations in
    the namespace, 10 removals are ten GETs (before: one LIST reading and decoding all 400, for every round of
    more than 8 DELs: what made the mirror's DELs cost grow with the pool); with 12, one LIST."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.store.kubecache import KubeCache

    key = PoolKey("", "10.67.0.0/20")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    base = int(ipaddress.ip_address("10.67.0.0"))

    def reserve(i: int) -> None:
        owner, address = Owner(f"c{i}", "eth0", f"ns/p{i}"), (4, base + i)
        client_i = KubeClient(load_credentials(str(plugin_kubeconfig)))
        name = str(ipaddress.ip_address(base + i))
        client_i.create(client_i.path(RESERVATIONS),
                        resources.reservation(name, owner, kube_namespace, cidr=key.cidr, address=address))  # fmt: skip

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(reserve, range(1, held + 1)))
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    try:
        assert cache.ready()
        listed: list[str] = []
        got: list[str] = []
        real_list, real_get = cache.mirror.client.list_with_version, cache.mirror.client.get
        monkeypatch.setattr(cache.mirror.client, "list_with_version",
                            lambda path, **kw: listed.append(path) or real_list(path, **kw))  # fmt: skip
        monkeypatch.setattr(cache.mirror.client, "get", lambda path: got.append(path) or real_get(path))
        client.delete(client.path(RESERVATIONS, str(ipaddress.ip_address(base + 1))))  # the copy may not know yet
        ips = [base + i for i in range(1, 11)]
        confirmed = cache.mirror._confirm(key, ips)
        assert confirmed[base + 1] is None
        assert all(confirmed[ip] is not None for ip in ips[1:])
        assert (len(listed), len(got)) == ((lists, 0) if lists else (0, 10))
    finally:
        cache.close()


@pytest.mark.parametrize("served", ["daemon-copy", "in-process"])
def test_a_create_lost_to_a_holder_the_copy_learned_is_retried_at_once(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, served: str,
) -> None:  # fmt: skip
    """Through the daemon's copy a lost create reads the winner into the copy, so the next decision passes that
    address over: the call decides again at once instead of sleeping a growing, jittered backoff (which made
    the slowest ADDs of a burst on one shared range wait for nothing). In process the backoff stays: each retry
    reads the range from the server again, and racing processes spread out."""
    import whereabouts.service as service_module
    from whereabouts.config import KubernetesSettings, parse_ipam
    from whereabouts.model import Owner
    from whereabouts.service import IPAMService
    from whereabouts.store.kubecache import KubeCache
    from whereabouts.store.kubernetes import KubernetesStore

    settings = {"kubeconfig": str(plugin_kubeconfig)}
    cfg = parse_ipam({"type": "whereabouts", "range": "10.68.0.0/24", "local_data_dir": str(tmp_path),
                      "kubernetes": settings}, "netA")  # fmt: skip

    def store() -> KubernetesStore:
        return KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))))

    cache = KubeCache(KubernetesSettings(**settings)) if served == "daemon-copy" else None
    slept: list[float] = []
    try:
        loser = store()
        if cache is not None:
            assert cache.ready()
            loser.cache = cache
        real_create, racers = loser.create_reservation, iter(range(3))

        def racing(name: str, owner: Owner, **where: object) -> str:
            racer = next(racers, None)  # the first three creates each lose: another node took it just before
            if racer is not None:
                store().create_reservation(name, Owner(f"racer{racer}", "eth0"), **where)
            return real_create(name, owner, **where)

        monkeypatch.setattr(loser, "create_reservation", racing)
        monkeypatch.setattr(service_module.time, "sleep", slept.append)
        (got,) = IPAMService(loser).add(cfg, Owner("mine", "eth0"))
    finally:
        if cache is not None:
            cache.close()
    held = {
        n: o["spec"]["containerid"] for n, o in kube.objects(kube_namespace, "overlappingrangeipreservations").items()
    }
    assert held[got.address.split("/")[0]] == "mine" and len(held) == 4 and loser.contended
    assert len(slept) == (0 if served == "daemon-copy" else 3), slept


def test_a_store_kept_by_the_daemon_forgets_what_a_call_learned_of_other_pools(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """A sticky key's reservation found on another node's slice (read while the daemon's copy is not current)
    is laid over the pools of that call only: the daemon keeps the store for the next call, by when it may be
    released (before: it stayed laid over every later call's pools, blocking a free address)."""
    from whereabouts.config import parse_ipam
    from whereabouts.model import Owner
    from whereabouts.service import IPAMService
    from whereabouts.store.kubernetes import KubernetesStore

    base = {"type": "whereabouts", "range": "10.71.0.0/28", "local_data_dir": str(tmp_path),
            "kubernetes": {"kubeconfig": str(plugin_kubeconfig)}, "sticky": "pod"}  # fmt: skip
    cfg = parse_ipam(base, "netA")
    store = KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))))
    key = "pod:ns/db-0/eth0"
    old = Owner("old", "eth0", "ns/db-0", netconf="netA", sticky=key)
    assert [a.address for a in IPAMService(store).add(cfg, old)] == ["10.71.0.1/28"]
    assert store.reusable()
    IPAMService(store).delete(cfg, old)  # retained for db-0
    assert store.reusable()
    store.pools_with_sticky("", key)  # what a call with node slices does first: finds it, and learns it
    assert store.learned
    assert store.reusable()
    assert not store.learned


def _hold(client: KubeClient, namespace: str, cidr: str, n: int) -> None:
    """The reservation of the `n`th address of `cidr` for container `ctr-<n>`, as another node's daemon (or an
    in-process call) writes it."""
    from whereabouts.kube import resources
    from whereabouts.model import Owner

    ip = ipaddress.ip_network(cidr).network_address + n
    obj = resources.reservation(str(ip), Owner(f"ctr-{n}", "eth0", f"ns/p-{n}"), namespace, network="", cidr=cidr,
                                address=(4, int(ip)))  # fmt: skip
    client.create(client.path(RESERVATIONS), obj)


def _pool_said(client: KubeClient, name: str, want: dict[str, str], wait: float = 20.0) -> dict[str, Any]:
    """The IPPool once its entries (offset -> container ID) are `want`."""
    deadline = time.monotonic() + wait
    while True:
        pool = client.get(client.path(IPPOOLS, name)) or {}
        entries = {offset: entry["id"] for offset, entry in (pool.get("spec", {}).get("allocations") or {}).items()}
        if entries == want or time.monotonic() > deadline:
            assert entries == want
            return pool
        time.sleep(0.05)


def test_one_daemon_writes_a_pool_for_every_daemon_and_another_takes_over_when_it_stops(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten daemons patching one big IPPool each round cost the API server ten times one (~0.1 ms of its CPU per
    entry per patch). The daemon that wrote a pool last writes the entries of every daemon's reservations as
    its copy sees them come and go; the others leave the pool to it while it is seen writing, and take over
    when it stops (before: each wrote its own and only its own, and nobody wrote a stopped daemon's)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import PoolKey
    from whereabouts.store import kubecache
    from whereabouts.store.kubecache import KubeCache

    monkeypatch.setattr(kubecache, "MIRROR_LEASE", 2.0, raising=False)
    writer = "whereabouts.cni.cncf.io/mirror-writer"  # the annotation naming a pool's writer
    key = PoolKey("", "10.97.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(IPPOOLS), resources.new_pool(key, kube_namespace))

    settings = KubernetesSettings(kubeconfig=str(plugin_kubeconfig))
    a = KubeCache(settings)
    b: KubeCache | None = None
    try:
        assert a.ready()
        a.mirror.adopt(key)  # a call of this daemon served the pool
        assert a.mirror.flush(10.0)  # (its first comparison of the pool with the reservations is done)
        _hold(client, kube_namespace, key.cidr, 1)
        pool = _pool_said(client, key.name, {"1": "ctr-1"})  # not a's own: written from its copy
        assert pool["metadata"]["annotations"][writer] == a.mirror.me
        b = KubeCache(settings)
        assert b.ready()
        b.mirror.adopt(key)
        _hold(client, kube_namespace, key.cidr, 2)
        client.delete(client.path(RESERVATIONS, "10.97.0.1"))  # released elsewhere: its entry goes
        _pool_said(client, key.name, {"2": "ctr-2"})
        assert b.mirror.flush(10.0)
        assert b.mirror.writes == 0 and b.mirror.deferred > 0  # b left it to a
        a.mirror.stopping.set()  # a's daemon is killed: nothing more from it
        a.reservations.stop()
        _hold(client, kube_namespace, key.cidr, 3)
        pool = _pool_said(client, key.name, {"2": "ctr-2", "3": "ctr-3"})
        assert pool["metadata"]["annotations"][writer] == b.mirror.me
        assert b.mirror.writes >= 1
    finally:
        a.close()
        if b is not None:
            b.close()


def test_a_daemon_that_stops_hands_its_pools_back_and_another_writes_them_at_once(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path
) -> None:
    """A writer that closes (its DaemonSet pod replaced in a rolling update) takes its name off the pools it
    writes, so another daemon serving them writes the next change at its next round (before: the name stayed,
    and the others waited MIRROR_LEASE, 8-12 s, for a writer that was gone)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import PoolKey
    from whereabouts.store.kubecache import MIRROR_LEASE, KubeCache

    writer = "whereabouts.cni.cncf.io/mirror-writer"
    key = PoolKey("", "10.94.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(IPPOOLS), resources.new_pool(key, kube_namespace))

    settings = KubernetesSettings(kubeconfig=str(plugin_kubeconfig))
    a = KubeCache(settings)
    b: KubeCache | None = None
    try:
        assert a.ready()
        a.mirror.adopt(key)
        assert a.mirror.flush(10.0)
        _hold(client, kube_namespace, key.cidr, 1)
        pool = _pool_said(client, key.name, {"1": "ctr-1"})
        assert pool["metadata"]["annotations"][writer] == a.mirror.me
        b = KubeCache(settings)  # (once the pool says what a's copy says: b's first comparison finds it right)
        assert b.ready()
        b.mirror.adopt(key)
        assert b.mirror.flush(10.0)
        a.close()
        assert client.get(client.path(IPPOOLS, key.name))["metadata"]["annotations"][writer] == ""  # handed back
        started = time.monotonic()
        _hold(client, kube_namespace, key.cidr, 2)
        pool = _pool_said(client, key.name, {"1": "ctr-1", "2": "ctr-2"}, wait=MIRROR_LEASE)
        assert time.monotonic() - started < MIRROR_LEASE * 0.75  # (its lease: 8-12 s from the mark)
        assert pool["metadata"]["annotations"][writer] == b.mirror.me
    finally:
        a.close()
        if b is not None:
            b.close()


def test_a_pool_handed_back_is_written_by_one_daemon_not_by_all_that_serve_it(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path
) -> None:
    """A pool handed back by a daemon that stopped (its writer named as ""): each daemon serving it waits up to
    UNCLAIMED_WAIT, by its patience, so the first names itself and the others see it before their turn (before:
    every daemon serving it patched it in the same round, each patch a rewrite of the whole pool)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import PoolKey
    from whereabouts.store.kubecache import KubeCache

    writer = "whereabouts.cni.cncf.io/mirror-writer"
    key = PoolKey("", "10.92.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    handed_back = resources.new_pool(key, kube_namespace)
    handed_back["metadata"]["annotations"] = {writer: ""}
    client.create(client.path(IPPOOLS), handed_back)
    settings = KubernetesSettings(kubeconfig=str(plugin_kubeconfig))
    a, b = KubeCache(settings), KubeCache(settings)
    try:
        a.mirror.patience, b.mirror.patience = 1.0, 1.5  # a moves at once, b after UNCLAIMED_WAIT
        assert a.ready() and b.ready()
        for cache in (a, b):
            cache.mirror.adopt(key)
            assert cache.mirror.flush(10.0)
        _hold(client, kube_namespace, key.cidr, 1)
        pool = _pool_said(client, key.name, {"1": "ctr-1"})
        assert pool["metadata"]["annotations"][writer] == a.mirror.me
        assert b.mirror.flush(20.0)  # b's mark is dropped once its copy shows the pool saying it
        assert (a.mirror.writes, b.mirror.writes) == (1, 0)
    finally:
        a.close()
        b.close()


def test_a_stopping_daemon_hands_back_within_its_budget_whatever_the_server_does(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DaemonSet pod has seconds to stop: a server that does not answer the hand-back's patch holds the close
    up for HAND_BACK_BUDGET at most (the patch runs on a thread of its own, with that deadline)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import PoolKey
    from whereabouts.store.kubecache import KubeCache

    key = PoolKey("", "10.91.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(IPPOOLS), resources.new_pool(key, kube_namespace))
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    release = threading.Event()
    try:
        cache.mirror.patience = 1.0
        assert cache.ready()
        cache.mirror.adopt(key)
        _hold(client, kube_namespace, key.cidr, 1)
        _pool_said(client, key.name, {"1": "ctr-1"})
        assert cache.mirror.flush(10.0)
        asked: list[str] = []

        def unanswered(path: str, operations: Any) -> None:
            asked.append(path)
            release.wait(30)

        monkeypatch.setattr(cache.mirror.client, "patch_existing", unanswered)
        started = time.monotonic()
        cache.close()
        assert asked  # it did try
        assert time.monotonic() - started < 5.0  # (HAND_BACK_BUDGET 2 s; a pod has 10 s to stop)
    finally:
        release.set()
        cache.close()


def test_a_mirror_patch_split_in_chunks_keeps_each_entrys_guards_with_its_write(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round with more operations than one patch may carry is sent as several patches; each is atomic, the
    sequence is not, so an entry's guard (its test) must travel in the patch that writes it (before: the
    operations were cut every MAX_PATCH_OPS, and a write could land in a patch without its guard)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import PoolKey
    from whereabouts.store.kubecache import KubeCache

    key = PoolKey("", "10.98.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(IPPOOLS), resources.new_pool(key, kube_namespace))
    for n in range(1, 6):
        _hold(client, kube_namespace, key.cidr, n)
    monkeypatch.setattr(resources, "MAX_PATCH_OPS", 3)  # entries of 2 operations each, and the writer's name's 2
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    patches: list[list[dict[str, Any]]] = []
    real_patch = cache.mirror.client.patch
    monkeypatch.setattr(cache.mirror.client, "patch", lambda path, ops: patches.append(ops) or real_patch(path, ops))
    try:
        assert cache.ready()
        cache.mirror.adopt(key)
        assert cache.mirror.flush(30.0)
        _pool_said(client, key.name, {str(n): f"ctr-{n}" for n in range(1, 6)})
        writes = [op for ops in patches for op in ops if op["path"].startswith("/spec/allocations/")]
        assert len(writes) == 10  # five guarded adds
        for ops in patches:
            guarded = {op["path"] for op in ops if op["op"] == "test"}
            assert all(op["path"] in guarded for op in ops if op["op"] != "test"), ops
    finally:
        cache.close()


def test_a_reservation_its_copy_cannot_place_again_is_not_taken_for_released(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path
) -> None:
    """A network name longer than a label value (63) gives its reservations no network label: the copy places
    them by name once a call asks about that network. A later change of such a reservation (a label, a relist)
    must not read as its release: the mirror would remove the entry of an address still held."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.store.kubecache import KubeCache

    network = "n" * 70
    key = PoolKey(network, "10.99.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(IPPOOLS), resources.new_pool(key, kube_namespace))
    name = resources.reservation_name(network, 4, 0x0A630005)
    obj = resources.reservation(name, Owner("ctr-long", "eth0", "ns/long"), kube_namespace, network=network,
                                cidr=key.cidr, address=(4, 0x0A630005))  # fmt: skip
    assert resources.NETWORK_LABEL not in obj["metadata"]["labels"]
    client.create(client.path(RESERVATIONS), obj)
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    try:
        assert cache.ready()
        cache.mirror.adopt(key)  # a call serves the pool: the copy places the reservation, the entry is written
        assert cache.mirror.flush(30.0)
        _pool_said(client, key.name, {"5": "ctr-long"})
        patch = [{"op": "add", "path": "/metadata/labels/touched", "value": "yes"}]
        client.patch(client.path(RESERVATIONS, name), patch)
        time.sleep(1.0)  # its watch event, and a mirror round after it
        assert cache.mirror.flush(30.0)
        _pool_said(client, key.name, {"5": "ctr-long"}, wait=0)
        assert ("", 4, 0x0A630005) not in cache.snapshot([key]).reservations
        assert (network, 4, 0x0A630005) in cache.snapshot([key]).reservations
    finally:
        cache.close()


def test_a_daemon_leaving_a_pool_to_its_writer_keeps_a_release_until_its_copy_of_the_pool_moves_on(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon that is not a pool's writer keeps each mark until the pool says it. A release whose entry its
    copy of the pool does not show may still be on its way (the writer wrote it from a copy that had not seen
    the DEL yet): the mark stays until that copy has moved past the version it showed at the mark, then goes
    without a write (before: dropped at the first comparison, and a writer killed then left the entry)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.store import kubecache
    from whereabouts.store.kubecache import KubeCache

    monkeypatch.setattr(kubecache, "MIRROR_LEASE", 60.0, raising=False)
    key = PoolKey("", "10.100.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    pool = resources.new_pool(key, kube_namespace)
    pool["metadata"]["annotations"] = {"whereabouts.cni.cncf.io/mirror-writer": "elsewhere/1/abc"}
    client.create(client.path(IPPOOLS), pool)
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    try:
        assert cache.ready()
        cache.mirror.adopt(key)
        assert cache.mirror.flush(10.0)
        ip = 0x0A640007
        cache.mirror.mark(key, ip, Owner("ctr-gone", "eth0", "ns/gone"))
        time.sleep(2.5)  # rounds that compare (one a second while only deferring)
        assert ip in cache.mirror.dirty.get(key, {}) or ip in cache.mirror.writing.get(key, {})
        assert not cache.mirror.idle.is_set()
        client.patch(client.path(IPPOOLS, key.name), [{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}])
        assert cache.mirror.flush(10.0)  # the copy moved on, the pool shows no entry there: nothing owed
        assert cache.mirror.writes == 0 and cache.mirror.deferred > 0
        annotations = client.get(client.path(IPPOOLS, key.name))["metadata"]["annotations"]
        assert annotations["whereabouts.cni.cncf.io/mirror-writer"] == "elsewhere/1/abc"
    finally:
        cache.close()


def test_an_ippool_deleted_or_edited_by_hand_is_written_again_from_the_reservations(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The IPPool is the mirror a Go plugin reads (one with enable_overlapping_ranges false reads nothing
    else). Deleted by hand, it was made again with only the addresses marked after (the others read free for
    up to ADOPT_EVERY, and with no call never compared again); an entry removed by hand came back only when a
    call served the pool ADOPT_EVERY seconds after the last comparison. Now a deletion is compared at once, and
    a pool served is compared every ADOPT_EVERY seconds, calls for it or none (and calls for another pool
    waking the writer meanwhile)."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.model import PoolKey
    from whereabouts.store import kubecache
    from whereabouts.store.kubecache import KubeCache

    monkeypatch.setattr(kubecache, "ADOPT_EVERY", 2.0)
    key, busy = PoolKey("", "10.98.0.0/24"), PoolKey("", "10.98.1.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    quiet = threading.Event()

    def keep_calling() -> None:  # an ADD of the busy pool every 0.2 s marks an entry (and wakes the writer)
        while not quiet.wait(0.2):
            cache.mirror.mark(busy, 0x0A620105)

    calls = threading.Thread(target=keep_calling)
    try:
        assert cache.ready()
        cache.mirror.adopt(key)  # a call of this daemon served the pool
        cache.mirror.adopt(busy)  # and another pool, whose calls keep coming (each wakes the writer)
        calls.start()
        for n in (1, 2, 3):
            _hold(client, kube_namespace, key.cidr, n)
        everyone = {"1": "ctr-1", "2": "ctr-2", "3": "ctr-3"}
        _pool_said(client, key.name, everyone)
        client.delete(client.path(IPPOOLS, key.name))
        _pool_said(client, key.name, everyone, wait=10.0)  # made again from the reservations, no call needed
        edited = client.patch(client.path(IPPOOLS, key.name), [{"op": "remove", "path": "/spec/allocations/2"}])
        assert set(edited["spec"]["allocations"]) == {"1", "3"}
        _pool_said(client, key.name, everyone, wait=10.0)  # compared again without a call: the entry is back
    finally:
        quiet.set()
        if calls.is_alive():
            calls.join()
        cache.close()
        client.close()


@pytest.mark.parametrize("mirror", [True, False], ids=["mirrored", "mirror-off"])
def test_a_closed_copy_leaves_no_socket_open(plugin_kubeconfig: Path, mirror: bool) -> None:
    """The node daemon makes a copy per datastore settings and closes it when idle or when its credentials
    change, for months. Closing stopped the watches and the mirror writer but left their clients (and a watch,
    until it ended) to the garbage collector: 15 copies made and closed kept 60 sockets open. Each client is
    closed as its thread ends; the watch being read ends at once."""
    import gc

    from whereabouts.config import KubernetesSettings
    from whereabouts.store.kubecache import KubeCache

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    settings = KubernetesSettings(kubeconfig=str(plugin_kubeconfig), ippool_mirror=mirror)
    gc.disable()  # what the collector would close is not what close closed
    try:
        before = descriptors()
        for _ in range(5):
            cache = KubeCache(settings)
            assert cache.ready(10)
            started = time.monotonic()
            cache.close()
            assert time.monotonic() - started < 5, "close waited for a watch to end by itself"
        assert descriptors() == before
    finally:
        gc.enable()


def test_the_mirror_writer_forgets_the_pools_of_networks_that_are_gone(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer kept every pool a call ever served, and compared each with its reservations every ADOPT_EVERY
    seconds, for the daemon's life: tenants' networks, node slices re-sliced. A pool is forgotten once it has
    nothing left to write (no IPPool, no reservation in its range, nothing marked); never one that does."""
    from whereabouts.config import KubernetesSettings, parse_ipam
    from whereabouts.model import Owner, PoolKey
    from whereabouts.service import IPAMService
    from whereabouts.store import kubecache
    from whereabouts.store.kubecache import KubeCache
    from whereabouts.store.kubernetes import KubernetesStore

    monkeypatch.setattr(kubecache, "ADOPT_EVERY", 1.0)
    kubernetes = {"kubeconfig": str(plugin_kubeconfig)}
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    cache = KubeCache(KubernetesSettings(**kubernetes))
    mirror = cache.mirror
    store = KubernetesStore(client, cache=cache)

    def config(n: int) -> Any:
        ipam = {"type": "whereabouts", "range": f"10.72.{n}.0/28", "network_name": f"tenant-{n}",
                "kubernetes": kubernetes, "local_data_dir": str(tmp_path)}  # fmt: skip
        return parse_ipam(ipam, f"tenant-{n}")

    def maps() -> tuple[int, int, int]:
        with mirror.lock:
            return len(mirror.serving), len(mirror.served), len(mirror.adopted)

    def wait_for(want: tuple[int, int, int], what: str) -> None:
        deadline = time.monotonic() + 15
        while maps() != want:
            assert time.monotonic() < deadline, f"{what}: serving, served, adopted {maps()}"
            time.sleep(0.05)

    try:
        assert cache.ready()
        gone = 8
        for n in range(gone):
            owner = Owner(f"ctr-{n}", "eth0", f"ns/p-{n}")
            assert [a.address for a in IPAMService(store).add(config(n), owner)] == [f"10.72.{n}.1/28"]
            IPAMService(store).delete(config(n), owner)
        kept = Owner("ctr-kept", "eth0", "ns/kept")
        assert [a.address for a in IPAMService(store).add(config(gone), kept)] == [f"10.72.{gone}.1/28"]
        assert mirror.flush(30.0)
        assert maps()[0] == gone + 1
        names = [PoolKey(f"tenant-{n}", f"10.72.{n}.0/28").name for n in range(gone + 1)]
        for name in names:
            client.delete(client.path(IPPOOLS, name))
        wait_for((1, 1, 1), "the pools of the networks gone forgotten, the one holding an address kept")
        _pool_said(client, names[gone], {"1": "ctr-kept"})  # its entry was owed: written again
        served_empty = PoolKey("tenant-empty", "10.72.99.0/28")
        mirror.adopt(served_empty)  # a call served it and held nothing (its ADD failed): no IPPool is made
        assert maps()[0] == 2
        wait_for((1, 1, 1), "a pool served with nothing to write forgotten by the periodic comparison")
        assert maps() == (1, 1, 1) and next(iter(mirror.serving)).name == names[gone]
    finally:
        cache.close()
        client.close()
