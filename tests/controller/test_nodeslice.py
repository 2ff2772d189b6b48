"""The node-slice controller on a real kube-apiserver: the real `whereabouts-controller node-slice` executable
against Nodes and NADs made through the API, and the real plugin allocating from the slices it writes.

Nodes are cluster-wide and other tests' nodes may still exist: each test names its own nodes uniquely and
asserts about those.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kube_objects import (
    CONTROLLER,
    controller_kubeconfig,
    create_nad,
    create_node,
    ensure_namespace,
    events,
    run_controller,
)
from kube_server import KubeAPIServer
from support import netconf, run_cni, stop_process
from whereabouts.controller.context import Context
from whereabouts.controller.health import Backoff
from whereabouts.controller.nads import SlicedNetwork
from whereabouts.controller.nodeslice import NodeSliceController
from whereabouts.errors import TryAgainLater
from whereabouts.kube.client import Event, Expired
from whereabouts.kube.credentials import load_credentials

POOLS = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"
NADS = "/apis/k8s.cni.cncf.io/v1/namespaces"


@dataclass
class Cluster:
    """One test's view: its nodes and NADs (removed afterwards), the pools' namespace, the controller."""

    kube: KubeAPIServer
    namespace: str
    controller_config: Path
    plugin_config: Path
    data_dir: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    nodes: set[str] = field(default_factory=set)
    nads: set[tuple[str, str]] = field(default_factory=set)

    def node(self, short: str) -> str:
        name = f"{self.tag}-{short}"
        create_node(self.kube, name)
        self.nodes.add(name)
        return name

    def remove_node(self, name: str) -> None:
        self.kube.request("DELETE", f"/api/v1/nodes/{name}")
        self.nodes.discard(name)

    def conf(self, name: str = "", **ipam: Any) -> dict[str, Any]:
        """A network config as the NAD holds it and the runtime passes it to the plugin."""
        conf = netconf(self.data_dir, kubernetes={"kubeconfig": str(self.plugin_config)}, **ipam)
        return {**conf, "name": name or f"net-{self.tag}"}

    def nad(self, name: str, config: dict[str, Any], namespace: str = "") -> None:
        namespace = namespace or self.namespace
        create_nad(self.kube, namespace, name, config)
        self.nads.add((namespace, name))

    def update_nad(self, name: str, config: dict[str, Any], namespace: str = "") -> None:
        path = f"{NADS}/{namespace or self.namespace}/network-attachment-definitions/{name}"
        current = self.kube.request("GET", path)
        assert isinstance(current, dict)
        self.kube.request("PUT", path, {**current, "spec": {"config": json.dumps(config)}})

    def delete_nad(self, name: str, namespace: str = "") -> None:
        namespace = namespace or self.namespace
        self.kube.request("DELETE", f"{NADS}/{namespace}/network-attachment-definitions/{name}")
        self.nads.discard((namespace, name))

    def sync(self, *flags: str) -> subprocess.CompletedProcess[str]:
        """`whereabouts-controller node-slice --once`: one pass, as a CronJob would run it."""
        done = run_controller(self.controller_config, "node-slice", "--once", f"--namespace={self.namespace}", *flags)
        assert done.returncode == 0, done.stderr
        return done

    def slice_pool(self, name: str) -> dict[str, Any] | None:
        return self.kube.objects(self.namespace, "nodeslicepools").get(name)

    def slices(self, name: str) -> dict[str, str]:
        """node -> slice, of this test's nodes, from the NodeSlicePool's status."""
        pool = self.slice_pool(name)
        assert pool is not None, f"no NodeSlicePool {name}"
        listing = pool.get("status", {}).get("allocations", [])
        return {e["nodeName"]: e["sliceRange"] for e in listing if e.get("nodeName") in self.nodes}

    def ippools(self) -> dict[str, dict[str, Any]]:
        return {
            name: pool["spec"].get("allocations") or {}
            for name, pool in self.kube.objects(self.namespace, "ippools").items()
        }

    def add(self, conf: dict[str, Any], node: str, container: str) -> str:
        result = run_cni("ADD", conf, container_id=container, env={"NODENAME": node})
        assert result.returncode == 0, result.stdout
        return result.addresses()[0]

    def cleanup(self) -> None:
        for namespace, name in list(self.nads):
            self.delete_nad(name, namespace)
        for name in list(self.nodes):
            self.remove_node(name)


@pytest.fixture
def cluster(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Iterator[Cluster]:
    config = controller_kubeconfig(kube, tmp_path / "controller.kubeconfig", kube_namespace)
    made = Cluster(kube, kube_namespace, config, plugin_kubeconfig, tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def inside(address: str, cidr: str) -> bool:
    return ipaddress.ip_interface(address).ip in ipaddress.ip_network(cidr)


@pytest.mark.parametrize(
    ("cidr", "size", "listed"),
    [("10.110.0.0/24", "/26", 4), ("fd00:110::/64", "80", 1024)],
    ids=["ipv4", "ipv6-listed-lazily"],
)
def test_slices_for_three_nodes(cluster: Cluster, cidr: str, size: str, listed: int) -> None:
    nodes = [cluster.node(n) for n in ("a", "b", "c")]
    conf = cluster.conf(range=cidr, node_slice_size=size)
    cluster.nad("sliced", conf)
    cluster.nad("plain", cluster.conf(name="unsliced", range="10.111.0.0/24"))  # no node_slice_size: ignored
    done = cluster.sync()
    pool = cluster.slice_pool(conf["name"])
    assert pool is not None and cluster.slice_pool("unsliced") is None
    assert pool["spec"] == {"range": cidr, "sliceSize": size}  # the slice size as the NAD wrote it
    assert len(pool["status"]["allocations"]) == listed  # every slice, up to 1024 of a /64's 65536
    slices = cluster.slices(conf["name"])
    assert set(slices) == set(nodes) and len(set(slices.values())) == 3
    assert all(ipaddress.ip_network(s).subnet_of(ipaddress.ip_network(cidr)) for s in slices.values())
    for node in nodes:
        assert f"gave slice {slices[node]} to node {node}" in done.stderr
        address = cluster.add(conf, node, f"pod-{node}")
        assert inside(address, slices[node]) and address.endswith(cidr[cidr.index("/") :]), address
    assert cluster.sync().stderr.count("gave slice") == 0  # a second pass finds nothing to do


def test_nodes_join_and_leave(cluster: Cluster) -> None:
    a, b, c = (cluster.node(n) for n in ("a", "b", "c"))
    conf = cluster.conf(range="10.112.0.0/16", node_slice_size="/24")
    cluster.nad("net", conf)
    cluster.sync()
    before = cluster.slices(conf["name"])
    d = cluster.node("d")
    cluster.sync()
    after = cluster.slices(conf["name"])
    assert {n: after[n] for n in (a, b, c)} == before and after[d] not in before.values()  # join
    kept = cluster.add(conf, b, "b-pod")  # b's pool holds an address: it stays until that is released
    cluster.add(conf, c, "c-pod")
    assert run_cni("DEL", conf, container_id="c-pod", env={"NODENAME": c}).returncode == 0  # c's pool: empty
    b_pool, c_pool = (f"{n}-{after[n].replace('/', '-')}" for n in (b, c))
    assert set(cluster.ippools()) >= {b_pool, c_pool}
    cluster.remove_node(b)
    cluster.remove_node(c)
    done = cluster.sync()
    listing = {
        e["sliceRange"]: e.get("nodeName", "") for e in cluster.slice_pool(conf["name"])["status"]["allocations"]
    }
    assert listing[after[b]] == "" and listing[after[c]] == ""  # both slices freed
    assert f"freed slice {after[b]} of node {b} (node gone)" in done.stderr
    pools = cluster.ippools()
    assert c_pool not in pools and b_pool in pools  # c's empty pool deleted; b's kept while it holds kept
    e = cluster.node("e")
    cluster.sync()
    assert cluster.slices(conf["name"])[e] != after[b]  # never a slice holding another node's address
    assert run_cni("DEL", conf, container_id="b-pod", env={"NODENAME": b}).returncode == 0
    assert kept and b_pool in cluster.ippools()
    cluster.sync()
    assert b_pool not in cluster.ippools()  # emptied: deleted on the next pass


def test_slices_running_out_is_an_event_not_a_crash(cluster: Cluster) -> None:
    nodes = [cluster.node(f"n{i}") for i in range(5)]
    conf = cluster.conf(range="10.113.0.0/24", node_slice_size="/26")  # four slices
    cluster.nad("small", conf)
    done = cluster.sync()
    pool = cluster.slice_pool(conf["name"])
    assert pool is not None and all(e.get("nodeName") for e in pool["status"]["allocations"])  # all 4 in use
    left_out = [n for n in nodes if n not in cluster.slices(conf["name"])]
    assert left_out and "no free slice for node" in done.stderr
    warnings = [e for e in events(cluster.kube, cluster.namespace) if e["reason"] == "NodeSlicesExhausted"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert warnings[0]["involvedObject"]["kind"] == "NodeSlicePool"
    assert warnings[0]["involvedObject"]["name"] == conf["name"]
    # Nodes are cluster-wide: other tests' nodes may be left out too, so look for ours among the warnings
    assert any(n in w["message"] for w in warnings for n in left_out)
    result = run_cni("ADD", conf, container_id="x", env={"NODENAME": left_out[0]})
    assert result.json["code"] == 11 and left_out[0] in result.json["msg"], result.stdout


@pytest.mark.parametrize(
    ("old", "new", "overlapping"),
    [("/24", "/25", True), ("/24", "/23", True), ("/24", "/25", False)],
    ids=["slices-shrink", "slices-grow", "overlapping-off"],
)
def test_re_slice_never_hands_an_address_in_use_to_a_second_pod(
    cluster: Cluster, old: str, new: str, overlapping: bool
) -> None:
    """Each node gets the new slice holding its own old addresses, whose pool starts empty: only the
    network-wide reservations guard them, so a sliced network writes them even when configured not to."""
    a, b = cluster.node("a"), cluster.node("b")
    conf = cluster.conf(range="10.114.0.0/20", node_slice_size=old, enable_overlapping_ranges=overlapping)
    cluster.nad("net", conf)
    cluster.sync()
    first = cluster.slices(conf["name"])
    held = {f"{n}-{i}": cluster.add(conf, n, f"{n}-{i}") for n in (a, b) for i in range(3)}
    resliced = {**conf, "ipam": {**conf["ipam"], "node_slice_size": new}}
    cluster.update_nad("net", resliced)
    done = cluster.sync()
    assert "re-sliced" in done.stderr
    second = cluster.slices(conf["name"])
    assert all(ipaddress.ip_network(s).prefixlen == int(new[1:]) for s in second.values())
    for node, other in ((a, b), (b, a)):  # no node's new slice holds an address the other node's pods have
        assert not [x for key, x in held.items() if key.startswith(other) and inside(x, second[node])]
    held |= {f"{n}-new-{i}": cluster.add(resliced, n, f"{n}-new-{i}") for n in (a, b) for i in range(3)}
    assert len(set(held.values())) == len(held), held  # every pod its own address, before and after
    for key, address in held.items():
        node = a if key.startswith(a) else b
        assert inside(address, second[node] if "-new-" in key else first[node]), (key, address)
    old_pools = {f"{n}-{first[n].replace('/', '-')}" for n in (a, b)}
    assert old_pools <= set(cluster.ippools())  # kept while they hold addresses
    for key in held:
        run_cni("DEL", resliced, container_id=key, env={"NODENAME": a if key.startswith(a) else b})
    cluster.sync()
    assert not old_pools & set(cluster.ippools())  # emptied by DEL (which found them), then deleted


RESERVATIONS = "overlappingrangeipreservations"


def drop_reservations(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Delete every reservation of the namespace, as an entry written with overlapping ranges off has none (the
    Go plugin's, or this plugin's before sliced networks wrote them always); what they were."""
    dropped = cluster.kube.objects(cluster.namespace, RESERVATIONS)
    for name in dropped:
        cluster.kube.request("DELETE", f"{POOLS}/{cluster.namespace}/{RESERVATIONS}/{name}")
    return dropped


def test_a_re_slice_first_gives_reservation_less_entries_their_reservations(cluster: Cluster) -> None:
    """Entries of node pools written without reservations (an upgrade from a release, or a Go plugin, that
    honoured overlapping off on a sliced network) get them before the re-slice is published: the nodes' new
    slices overlap their old pools' addresses, and only the reservations keep them from being handed out again."""
    a, b = cluster.node("a"), cluster.node("b")
    conf = cluster.conf(range="10.114.0.0/20", node_slice_size="/24", enable_overlapping_ranges=False)
    cluster.nad("net", conf)
    cluster.sync()
    held = {f"{n}-{i}": cluster.add(conf, n, f"{n}-{i}") for n in (a, b) for i in range(3)}
    dropped = drop_reservations(cluster)
    assert {spec["spec"]["containerid"] for spec in dropped.values()} == set(held)
    resliced = {**conf, "ipam": {**conf["ipam"], "node_slice_size": "/25"}}
    cluster.update_nad("net", resliced)
    done = cluster.sync()
    assert "re-sliced" in done.stderr
    before = cluster.kube.objects(cluster.namespace, RESERVATIONS)
    held |= {f"{n}-new-{i}": cluster.add(resliced, n, f"{n}-new-{i}") for n in (a, b) for i in range(3)}
    assert len(set(held.values())) == len(held), held  # no address handed out twice
    assert done.stderr.count("created reservation") == len(before) == len(dropped), done.stderr
    assert {r["spec"]["containerid"] for r in before.values()} == {r["spec"]["containerid"] for r in dropped.values()}
    assert all(r["metadata"]["labels"] for r in before.values())  # labelled with their pools' ranges


def test_a_reservation_naming_another_holder_holds_the_re_slice_back(cluster: Cluster) -> None:
    """An entry whose reservation names another attachment cannot be guarded across pools: the slices stay as
    they are, said in the log and a Warning Event, until someone sorts it out."""
    a = cluster.node("a")
    conf = cluster.conf(range="10.115.0.0/20", node_slice_size="/24", enable_overlapping_ranges=False)
    cluster.nad("net", conf)
    cluster.sync()
    first = cluster.slices(conf["name"])
    cluster.add(conf, a, "a-0")
    cluster.add(conf, a, "a-1")
    dropped = drop_reservations(cluster)
    name, other = sorted(dropped.items())[0]
    meta = {"name": name, "namespace": cluster.namespace}
    stranger = {**other, "metadata": meta, "spec": {**other["spec"], "containerid": "stranger"}}
    cluster.kube.request("POST", f"{POOLS}/{cluster.namespace}/{RESERVATIONS}", stranger)
    cluster.update_nad("net", {**conf, "ipam": {**conf["ipam"], "node_slice_size": "/25"}})
    done = cluster.sync()
    assert "re-slice held back" in done.stderr and "names container stranger" in done.stderr, done.stderr
    assert cluster.slices(conf["name"]) == first
    warned = [e for e in events(cluster.kube, cluster.namespace) if e.get("reason") == "ReservationConflict"]
    assert warned and warned[0]["type"] == "Warning"


def test_a_go_reservation_that_records_no_container_id_holds_no_re_slice_back(cluster: Cluster) -> None:
    """A Go plugin v0.7 or later writes its reservations without a container ID ({podref, ifname}): read as
    another attachment's, each held every re-slice of its network back. It is the entry's."""
    a = cluster.node("a")
    conf = cluster.conf(range="10.116.0.0/20", node_slice_size="/24", enable_overlapping_ranges=False)
    cluster.nad("net", conf)
    cluster.sync()
    first = cluster.slices(conf["name"])
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a-0"  # (the Go plugin serves no call without a pod)
    assert run_cni("ADD", conf, container_id="a-0", cni_args=args, env={"NODENAME": a}).returncode == 0
    for name, obj in drop_reservations(cluster).items():
        spec = {"podref": obj["spec"]["podref"], "ifname": obj["spec"]["ifname"]}
        go = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": name}, "spec": spec}
        cluster.kube.request("POST", f"{POOLS}/{cluster.namespace}/{RESERVATIONS}", go)
    cluster.update_nad("net", {**conf, "ipam": {**conf["ipam"], "node_slice_size": "/25"}})
    done = cluster.sync()
    assert "held back" not in done.stderr and "re-sliced" in done.stderr, done.stderr
    assert cluster.slices(conf["name"]) != first


def test_a_node_named_like_another_network_keeps_its_pool_as_evidence(cluster: Cluster) -> None:
    """`<a>-<b>-<cidr>` does not say where a network's name ends: the pool of an unnamed network's node named
    `<another network>-w1` is that node's (a current Node; once gone, its entries say so), so a re-slice never
    plans another node's slice over the addresses it holds."""
    other = f"prod{cluster.tag}"
    cluster.nad("other", cluster.conf(name=f"other-{cluster.tag}", range="10.200.0.0/24", network_name=other))
    b, w1 = cluster.node("b"), f"{other}-w1"  # (b sorts first: of two nodes wanting one slice, it is served first)
    create_node(cluster.kube, w1)
    cluster.nodes.add(w1)
    conf = cluster.conf(range="10.141.0.0/16", node_slice_size="/24")  # room for other tests' nodes left over
    cluster.nad("net", conf)
    # b and w1 hold the two halves of one /23 (kept: whichever other nodes exist get other slices)
    path = f"{POOLS}/{cluster.namespace}/nodeslicepools"
    made = cluster.kube.request("POST", path, {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
        "metadata": {"name": conf["name"], "namespace": cluster.namespace},
        "spec": {"range": "10.141.0.0/16", "sliceSize": "/24"}})  # fmt: skip
    made["status"] = {"allocations": [{"sliceRange": "10.141.0.0/24", "nodeName": b},
                                      {"sliceRange": "10.141.1.0/24", "nodeName": w1}]}  # fmt: skip
    cluster.kube.request("PUT", f"{path}/{conf['name']}/status", made)
    cluster.sync()
    assert cluster.slices(conf["name"]) == {b: "10.141.0.0/24", w1: "10.141.1.0/24"}
    held = [cluster.add(conf, w1, f"w1-{i}") for i in range(2)]
    resliced = {**conf, "ipam": {**conf["ipam"], "node_slice_size": "/23"}}
    cluster.update_nad("net", resliced)
    cluster.sync()
    second = cluster.slices(conf["name"])
    assert all(inside(x, second[w1]) for x in held) and not any(inside(x, second[b]) for x in held), second
    cluster.remove_node(w1)  # gone, its pods' addresses not yet released: still evidence
    cluster.sync()  # (its slice freed: no longer listed either)
    c = cluster.node("c")
    cluster.sync()
    assert not any(inside(x, cluster.slices(conf["name"])[c]) for x in held)


def test_a_network_named_as_the_prefix_of_another_reads_only_its_own_pools(cluster: Cluster) -> None:
    """Network `blue` does not take network `blue-x`'s pools (`blue-x-<node>-<cidr>`) for pools of made-up nodes
    `x-<node>`: they neither block its slices nor get deleted as empty pools of nodes gone."""
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    short, long = f"blue{cluster.tag}", f"blue{cluster.tag}-x"
    conf_long = cluster.conf(name=f"long-{cluster.tag}", range="10.150.0.0/23", node_slice_size="/24",
                             network_name=long)  # fmt: skip
    cluster.nad("long", conf_long)
    cluster.sync()
    for node in (n1, n2):
        cluster.add(conf_long, node, f"pod-{node}")
    assert run_cni("DEL", conf_long, container_id=f"pod-{n1}", env={"NODENAME": n1}).returncode == 0
    long_pools = {name for name in cluster.ippools() if name.startswith(f"{long}-")}
    assert len(long_pools) == 2  # n1's empty, kept as its node's current slice; n2's holding an address
    conf_short = {**conf_long, "name": f"short-{cluster.tag}", "ipam": {**conf_long["ipam"], "network_name": short}}
    cluster.nad("short", conf_short)
    cluster.sync()
    assert set(cluster.slices(short)) == {n1, n2}
    assert long_pools <= set(cluster.ippools())
    assert run_cni("DEL", conf_long, container_id=f"pod-{n2}", env={"NODENAME": n2}).returncode == 0
    cluster.delete_nad("short")  # both of `blue-x`'s pools empty, on slices `blue` listed
    done = cluster.sync()
    assert cluster.slice_pool(short) is None and f"deleted NodeSlicePool {cluster.namespace}/{short}" in done.stderr
    assert long_pools <= set(cluster.ippools())  # retiring `blue` deletes only its own empty pools


@pytest.mark.parametrize("key", ["\u00b2", "1" * 5000], ids=["superscript-two", "5000-digits"])
def test_a_pool_key_that_is_no_offset_stops_no_network(cluster: Cluster, key: str) -> None:
    """`²` passes str.isdigit() but not int(); int() refuses 5,000 digits: such a key (a hand edit, a tool's bug)
    is skipped, as the plugin skips it, and every network is still brought in step."""
    a = cluster.node("a")
    conf = cluster.conf(range="10.142.0.0/16", node_slice_size="/24")
    cluster.nad("net", conf)
    other = cluster.conf(name=f"other-{cluster.tag}", range="10.143.0.0/16", node_slice_size="/24")
    cluster.nad("net2", other)
    cluster.sync()
    cluster.add(conf, a, "pod1")
    path = f"{POOLS}/{cluster.namespace}/ippools/{a}-{cluster.slices(conf['name'])[a].replace('/', '-')}"
    obj = cluster.kube.request("GET", path)
    obj["spec"]["allocations"][key] = {"id": "x", "ifname": "eth0", "podref": "ns/p"}
    cluster.kube.request("PUT", path, obj)
    b = cluster.node("b")  # a node joins: it needs a slice of both networks
    done = cluster.sync()
    assert "Traceback" not in done.stderr
    assert b in cluster.slices(conf["name"]) and b in cluster.slices(other["name"])


def test_one_network_failing_unexpectedly_holds_no_other_back(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug, or input nothing foresaw, in one network's pass: its traceback is logged, the pass fails (and is
    retried), and the other networks are still brought in step."""
    a = cluster.node("a")
    broken = cluster.conf(name=f"broken-{cluster.tag}", range="10.144.0.0/16", node_slice_size="/24")
    fine = cluster.conf(name=f"fine-{cluster.tag}", range="10.145.0.0/16", node_slice_size="/24")
    cluster.nad("broken", broken)  # (the older NAD, and first by name too: its network is synced first)
    cluster.nad("fine", fine)
    lines: list[str] = []
    controller = NodeSliceController(
        Context(load_credentials(str(cluster.controller_config)), cluster.namespace, log=lines.append)
    )
    apply = controller._apply

    def failing(network: SlicedNetwork, seen: Any, pool: Any) -> None:
        if network.name == broken["name"]:
            raise RuntimeError("unforeseen")
        apply(network, seen, pool)

    monkeypatch.setattr(controller, "_apply", failing)
    with pytest.raises(TryAgainLater, match=f"networks {broken['name']} not brought in step"):
        controller.sync()
    assert a in cluster.slices(fine["name"])
    assert any(
        line.startswith(f"node-slice: network {broken['name']}: Traceback") and "RuntimeError: unforeseen" in line
        for line in lines
    ), lines


def test_several_nads_one_network_and_nad_deletion(cluster: Cluster) -> None:
    node = cluster.node("a")
    other_namespace = f"{cluster.namespace}-apps"
    conf = cluster.conf(range="10.115.0.0/24", node_slice_size="/26", network_name=f"shared-{cluster.tag}")
    conflist = {"cniVersion": "1.0.0", "name": "as-conflist", "plugins": [{"type": "macvlan", "ipam": conf["ipam"]}]}
    cluster.nad("first", conf)
    time.sleep(1.1)  # creation timestamps have a resolution of a second: "first" is the oldest
    cluster.nad("second", conflist, namespace=other_namespace)
    mismatch = {**conf, "ipam": {**conf["ipam"], "node_slice_size": "/27"}}
    cluster.nad("third", mismatch, namespace=other_namespace)
    cluster.sync()
    name = f"shared-{cluster.tag}"
    assert [p for p in cluster.kube.objects(cluster.namespace, "nodeslicepools") if p.startswith("shared")] == [name]
    assert cluster.slice_pool(name)["spec"]["sliceSize"] == "/26"  # the oldest NAD's settings
    warned = [e for e in events(cluster.kube, other_namespace) if e["reason"] == "NodeSliceConfigMismatch"]
    assert warned and warned[0]["involvedObject"]["name"] == "third" and warned[0]["type"] == "Warning"
    address = cluster.add(conf, node, "pod")
    run_cni("DEL", conf, container_id="pod", env={"NODENAME": node})
    pool_name = f"{name}-{node}-{cluster.slices(name)[node].replace('/', '-')}"
    assert address and pool_name in cluster.ippools()  # empty, but its node's current slice: kept
    cluster.delete_nad("first")
    cluster.delete_nad("third", other_namespace)
    cluster.sync()
    assert cluster.slice_pool(name) is not None  # "second" still names the network
    cluster.delete_nad("second", other_namespace)
    done = cluster.sync()
    assert cluster.slice_pool(name) is None and pool_name not in cluster.ippools()
    assert f"deleted NodeSlicePool {cluster.namespace}/{name}" in done.stderr


def test_dry_run_and_invalid_nads(cluster: Cluster) -> None:
    node = cluster.node("a")
    cluster.nad("bad", cluster.conf(name="bad", range="10.116.0.0/24", node_slice_size="/40"))
    conf = cluster.conf(range="10.117.0.0/24", node_slice_size="/26")
    cluster.nad("good", conf)
    dry = cluster.sync("--dry-run")
    assert f"dry-run: would created NodeSlicePool {cluster.namespace}/{conf['name']}" in dry.stderr
    assert f"dry-run: would network {conf['name']}: gave slice 10.117.0.0/26 to node" in dry.stderr
    assert cluster.kube.objects(cluster.namespace, "nodeslicepools") == {}
    assert not [e for e in events(cluster.kube, cluster.namespace) if e["reason"] == "InvalidNodeSliceConfig"]
    cluster.sync()
    assert node in cluster.slices(conf["name"]) and cluster.slice_pool("bad") is None
    invalid = [e for e in events(cluster.kube, cluster.namespace) if e["reason"] == "InvalidNodeSliceConfig"]
    assert invalid and invalid[0]["involvedObject"]["name"] == "bad" and "/40" in invalid[0]["message"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_long_running_controller_follows_nodes(cluster: Cluster, tmp_path: Path) -> None:
    conf = cluster.conf(range="10.118.0.0/24", node_slice_size="/28")
    cluster.nad("net", conf)
    log = open(tmp_path / "controller.log", "w+")  # noqa: SIM115 - read while the controller writes it
    cmd = [CONTROLLER, "node-slice", f"--kubeconfig={cluster.controller_config}", f"--namespace={cluster.namespace}",
           "--metrics-address=127.0.0.1", "--metrics-port=0", "--lease-duration=4", "--renew-deadline=3",
           "--retry-period=1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, text=True)
    try:
        port = int(wait_for(lambda: re.search(r"on 127\.0\.0\.1:(\d+)", (tmp_path / "controller.log").read_text()),
                            15, "the metrics port").group(1))  # fmt: skip
        wait_for(lambda: cluster.slice_pool(conf["name"]), 15, "the NodeSlicePool")
        node = cluster.node("late")
        started = time.monotonic()
        # Well inside RESYNC (30 s): the node watch brought it, not the next periodic pass; the bound leaves a
        # busy machine room (the pass itself lists NADs, nodes and pools).
        got = wait_for(lambda: cluster.slices(conf["name"]).get(node), 15, f"a slice for {node}")
        assert time.monotonic() - started < 15
        assert inside(cluster.add(conf, node, "pod"), got)
        run_cni("DEL", conf, container_id="pod", env={"NODENAME": node})
        metrics = scrape(port)
        assert f'whereabouts_node_slices_total{{network="{conf["name"]}"}} 16' in metrics
        assert "whereabouts_node_slice_assignments_total" in metrics
        cluster.remove_node(node)
        wait_for(lambda: node not in json.dumps(cluster.slice_pool(conf["name"])), 15, f"{node}'s slice freed")
        # The controller logs an action once its write is done: the line may follow the freed slice a moment later
        freed = f"freed slice {got} of node {node} (node gone)"
        wait_for(lambda: freed in (tmp_path / "controller.log").read_text(), 15, f"{freed!r} in the log")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stop_process(proc, 10)  # type: ignore[arg-type]
        log.close()
    assert proc.returncode == 0, (tmp_path / "controller.log").read_text()


class ExpiringClient:
    """Stands in for KubeClient's list and watch: the first watch finds its version expired (410 Gone, which
    a fresh test API server, never compacted, does not produce), the rest deliver one event."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def list_with_version(self, path: str) -> tuple[list[dict], str]:
        self.calls.append("list")
        return [], "42"

    def watch(self, path: str, version: str, *, timeout: int) -> Iterator[Event]:
        self.calls.append(f"watch {version}")
        if version == "7":
            raise Expired(version)
        yield Event("ADDED", {"metadata": {"resourceVersion": "43"}})


def test_a_watch_whose_version_expired_lists_again(cluster: Cluster) -> None:
    ctx = Context(credentials=load_credentials(str(cluster.controller_config)), namespace=cluster.namespace)
    controller, client, changed, stop = NodeSliceController(ctx), ExpiringClient(), threading.Event(), threading.Event()
    backoff = Backoff()
    assert controller._watch_once(client, "/api/v1/nodes", "7", lambda kind: True, changed, stop, backoff) == ""  # type: ignore[arg-type]
    assert not changed.is_set()
    assert controller._watch_once(client, "/api/v1/nodes", "", lambda kind: True, changed, stop, backoff) == "43"  # type: ignore[arg-type]
    assert changed.is_set() and client.calls == ["watch 7", "list", "watch 42"]


def test_a_node_slice_pool_the_go_controller_wrote_is_adopted(cluster: Cluster) -> None:
    """The Go controller's NodeSlicePool (owned by its NAD, no annotation): assignments kept, the rest filled."""
    a, b = cluster.node("a"), cluster.node("b")
    conf = cluster.conf(range="10.119.0.0/24", node_slice_size="/26")
    cluster.nad("net", conf)
    nad = cluster.kube.request("GET", f"{NADS}/{cluster.namespace}/network-attachment-definitions/net")
    owner = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "name": "net",
             "uid": nad["metadata"]["uid"], "controller": True}  # fmt: skip
    path = f"{POOLS}/{cluster.namespace}/nodeslicepools"
    go = cluster.kube.request("POST", path, {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
        "metadata": {"name": conf["name"], "namespace": cluster.namespace, "ownerReferences": [owner]},
        "spec": {"range": "10.119.0.0/24", "sliceSize": "/26"}})  # fmt: skip
    listing = [{"sliceRange": f"10.119.0.{n}/26"} for n in (0, 64, 128, 192)]
    listing[2]["nodeName"] = b
    go["status"] = {"allocations": listing}
    cluster.kube.request("PUT", f"{path}/{conf['name']}/status", go)
    done = cluster.sync()
    assert cluster.slices(conf["name"]) == {a: "10.119.0.0/26", b: "10.119.0.128/26"}
    assert "(adopted)" in done.stderr
    pool = cluster.slice_pool(conf["name"])
    assert pool["metadata"]["ownerReferences"] == [owner]  # left as the Go controller made it


def test_a_tenant_nad_nested_too_deep_stops_no_controller(cluster: Cluster, tmp_path: Path) -> None:
    """Any tenant may write a NAD whose config nests deeper than the JSON decoder goes, and every controller reads
    every namespace's NADs: each goes on (node-slice reports the NAD), run once and long-running."""
    tenant = f"{cluster.namespace}-tenant"
    ensure_namespace(cluster.kube, tenant)
    deep = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "deep", "namespace": tenant}, "spec": {"config": "[" * 2000 + "]" * 2000}}  # fmt: skip
    cluster.kube.request("POST", f"{NADS}/{tenant}/network-attachment-definitions", deep)
    cluster.nads.add((tenant, "deep"))
    conf = cluster.conf(range="10.121.0.0/24", node_slice_size="/28")
    cluster.nad("net", conf)
    a = cluster.node("a")
    once = run_controller(cluster.controller_config, "all", "--once", f"--namespace={cluster.namespace}")
    assert once.returncode == 0 and "Traceback" not in once.stderr, once.stderr
    assert a in cluster.slices(conf["name"])
    invalid = [e for e in events(cluster.kube, tenant) if e["reason"] == "InvalidNodeSliceConfig"]
    assert invalid and "spec.config is not JSON" in invalid[0]["message"], invalid
    cluster.add(conf, a, "pod-a")
    schedule = tmp_path / "cron"
    schedule.write_text("@every 1s\n")
    log = tmp_path / "all.log"
    cmd = [CONTROLLER, "all", f"--kubeconfig={cluster.controller_config}", f"--namespace={cluster.namespace}",
           "--metrics-address=127.0.0.1", "--metrics-port=0", "--lease-duration=4", "--renew-deadline=3",
           "--retry-period=1", f"--cron-file={schedule}"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: log.read_text().count("reconcile: released") >= 2, 30, "two reconcile passes")
        pool = f"{a}-{cluster.slices(conf['name'])[a].replace('/', '-')}"
        status = lambda: cluster.kube.objects(cluster.namespace, "ippools")[pool].get("status") or {}  # noqa: E731
        wait_for(lambda: status().get("held") == 1, 20, "pool-usage writing the node pool's status")
        late = cluster.node("late")
        wait_for(lambda: cluster.slices(conf["name"]).get(late), 20, f"node-slice giving {late} a slice")
    finally:
        stop_process(proc, 10)
    assert proc.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()


def test_a_broken_nad_edited_again_and_again_is_remembered_once_and_warned_of_per_version(cluster: Cluster) -> None:
    """What node-slice remembers of warnings given is one entry per broken NAD (not one per version: a tenant
    editing one would grow the controller's memory without bound), dropped with the NAD."""
    lines: list[str] = []
    ctx = Context(load_credentials(str(cluster.controller_config)), cluster.namespace, log=lines.append)
    controller = NodeSliceController(ctx)
    bad = cluster.conf(name=f"bad-{cluster.tag}", range="10.122.0.0/24", node_slice_size="/40")
    cluster.nad("bad", bad)
    for version in range(20):
        controller.sync()
        controller.sync()  # nothing new: not warned of again
        cluster.update_nad("bad", {**bad, "cniVersion": f"0.{version}.0"})  # a new resourceVersion, still broken
    controller.sync()
    warned = [line for line in lines if line.startswith(f"node-slice: {cluster.namespace}/bad: ")]
    assert len(warned) == 21, warned
    assert controller.reported == set() and len(controller.nads_reported) == 1  # (it was one per version)
    cluster.delete_nad("bad")
    controller.sync()
    assert controller.nads_reported == {}


def test_a_networks_series_go_with_it(cluster: Cluster) -> None:
    """Networks are named by tenants and come and go for months: every series labelled with one (the counters
    too, not only the gauges) goes once its NodeSlicePool is gone; and a count of nothing (no slice freed)
    makes no series."""
    node = cluster.node("a")
    ctx = Context(credentials=load_credentials(str(cluster.controller_config)), namespace=cluster.namespace)
    controller = NodeSliceController(ctx)
    networks = [f"tenant-{cluster.tag}-{n}" for n in range(3)]
    ranges = [f"10.121.{16 * n}.0/20" for n in range(3)]  # 256 slices each: enough for every node of the cluster
    confs = [cluster.conf(net, range=cidr, node_slice_size="/28") for net, cidr in zip(networks, ranges, strict=True)]
    for n, conf in enumerate(confs):
        cluster.nad(f"n{n}", conf)

    def series() -> list[str]:
        lines = ctx.registry.render().splitlines()
        return [
            line for line in lines if line.startswith("whereabouts_node_slice") and any(n in line for n in networks)
        ]

    controller.sync()
    controller.sync()  # nothing changed: nothing counted
    found = series()
    for network in networks:
        assert f'whereabouts_node_slice_assignments_total{{network="{network}"}}' in "\n".join(found)
    assert not [line for line in found if "releases_total" in line or "exhausted_total" in line], found
    cluster.add(confs[0], node, "pod")  # the node's IPPool of the first network, emptied again
    run_cni("DEL", confs[0], container_id="pod", env={"NODENAME": node})
    for n in range(3):
        cluster.delete_nad(f"n{n}")
    controller.sync()  # retires them: the NodeSlicePools and their empty IPPools deleted
    assert all(cluster.slice_pool(network) is None for network in networks)
    assert f'whereabouts_node_slice_ippools_deleted_total{{network="{networks[0]}"}} 1.0' in series()  # seen once
    controller.sync()
    assert series() == []
