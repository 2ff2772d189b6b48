"""Fast IPAM on a real kube-apiserver: the plugin allocates from its node's slice, as the NodeSlicePool says.

The NodeSlicePools here are written by the test, in the Go controller's format, so that each case controls
the slices exactly; tests/controller/test_nodeslice.py has the controller write them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kube_server import KubeAPIServer
from support import netconf, run_cni

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"


def slice_conf(tmp_path: Path, kubeconfig: Path, cni_version: str = "1.0.0", **ipam: object) -> dict:
    """A network config named 'testnet' (its NodeSlicePool's name unless network_name says otherwise)."""
    return netconf(tmp_path, cni_version, kubernetes={"kubeconfig": str(kubeconfig)}, **ipam)


def write_slice_pool(
    kube: KubeAPIServer, namespace: str, name: str, cidr: str, size: str, listing: list[tuple[str, str]]
) -> None:
    """A NodeSlicePool as the Go controller writes it: spec, then status through its subresource."""
    path = f"{GROUP_PATH}/{namespace}/nodeslicepools"
    current = kube.objects(namespace, "nodeslicepools").get(name)
    body = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"range": cidr, "sliceSize": size}}  # fmt: skip
    if current is None:
        obj = kube.request("POST", path, body)
    else:
        obj = kube.request("PUT", f"{path}/{name}", {**current, "spec": body["spec"]})
    assert isinstance(obj, dict)
    # free slices without nodeName: this test API server turns "" into null (deploy/base/crds/nodeslicepools.yaml)
    obj["status"] = {"allocations": [{"nodeName": node, "sliceRange": cidr} if node else {"sliceRange": cidr}
                                     for node, cidr in listing]}  # fmt: skip
    kube.request("PUT", f"{path}/{name}/status", obj)


def add(conf: dict, node: str, container: str, **kwargs: object) -> list[str]:
    result = run_cni("ADD", conf, container_id=container, env={"NODENAME": node}, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout
    return result.addresses()


def allocations(kube: KubeAPIServer, namespace: str) -> dict[str, dict[str, str]]:
    """IPPool name -> {offset: container id}."""
    pools = kube.objects(namespace, "ippools")
    return {name: {k: v["id"] for k, v in p["spec"]["allocations"].items()} for name, p in pools.items()}


def test_allocates_only_inside_its_nodes_slice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    slices = [("n1", "10.90.0.0/26"), ("n2", "10.90.0.64/26"), ("", "10.90.0.128/26"), ("n3", "10.90.0.192/26")]
    write_slice_pool(kube, kube_namespace, "testnet", "10.90.0.0/24", "/26", slices)
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.90.0.0/24", node_slice_size="/26", gateway="10.90.0.1")
    result = run_cni("ADD", conf, container_id="a", env={"NODENAME": "n2"})
    # the slice's first address is an ordinary host; the prefix is the whole range's; the gateway as configured
    assert result.json["ips"] == [{"address": "10.90.0.64/24", "gateway": "10.90.0.1"}], result.stdout
    assert add(conf, "n2", "b") == ["10.90.0.65/24"]
    assert add(conf, "n1", "c") == ["10.90.0.2/24"]  # .0 is the range's network, .1 the gateway
    assert add(conf, "n3", "d") == ["10.90.0.192/24"]
    assert allocations(kube, kube_namespace) == {
        "n2-10.90.0.64-26": {"0": "a", "1": "b"},  # the Go plugin's names and offsets (from the slice)
        "n1-10.90.0.0-26": {"2": "c"},
        "n3-10.90.0.192-26": {"0": "d"},
    }
    assert kube.objects(kube_namespace, "ippools")["n2-10.90.0.64-26"]["spec"]["range"] == "10.90.0.64/26"
    assert set(kube.objects(kube_namespace, "overlappingrangeipreservations")) == {
        "10.90.0.64", "10.90.0.65", "10.90.0.2", "10.90.0.192"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("slice_cidr", "expected"),
    [
        ("10.91.0.4/30", ["10.91.0.4", "10.91.0.5", "10.91.0.6", "10.91.0.7"]),  # all four are hosts
        ("10.91.0.0/30", ["10.91.0.1", "10.91.0.2", "10.91.0.3"]),  # .0: the range's network address
        ("10.91.0.252/30", ["10.91.0.252", "10.91.0.253", "10.91.0.254"]),  # .255: the range's broadcast
    ],
    ids=["inner-slice", "first-slice", "last-slice"],
)
def test_only_the_whole_ranges_edges_are_never_picked(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, slice_cidr: str, expected: list
) -> None:
    write_slice_pool(kube, kube_namespace, "testnet", "10.91.0.0/24", "/30", [("n1", slice_cidr)])
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.91.0.0/24", node_slice_size="30")
    got = [add(conf, "n1", f"c{i}")[0] for i in range(len(expected))]
    assert got == [f"{a}/24" for a in expected]
    full = run_cni("ADD", conf, container_id="one-too-many", env={"NODENAME": "n1"})
    assert full.json["code"] == 101 and slice_cidr.split("/")[0] in full.json["msg"], full.stdout


def test_exclude_range_start_and_range_end_apply_inside_the_slice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The Go plugin drops all three with node slices (its #666); here they narrow the node's slice."""
    write_slice_pool(kube, kube_namespace, "testnet", "10.92.0.0/24", "/26", [("n0", "10.92.0.0/26"),
                     ("n1", "10.92.0.64/26")])  # fmt: skip
    conf = slice_conf(
        tmp_path, plugin_kubeconfig, range="10.92.0.0/24", node_slice_size="/26",
        range_start="10.92.0.70", range_end="10.92.0.77", exclude=["10.92.0.72/31", "10.92.0.75"],
    )  # fmt: skip
    got = [add(conf, "n1", f"c{i}")[0] for i in range(4)]
    assert got == ["10.92.0.70/24", "10.92.0.71/24", "10.92.0.74/24", "10.92.0.76/24"]
    assert add(conf, "n1", "c4") == ["10.92.0.77/24"]
    full = run_cni("ADD", conf, container_id="c5", env={"NODENAME": "n1"})
    assert full.json["code"] == 101, full.stdout
    # n0's slice lies wholly before range_start: a clear exhaustion naming the slice, nothing written
    outside = run_cni("ADD", conf, container_id="c6", env={"NODENAME": "n0"})
    assert outside.json["code"] == 101 and "10.92.0.0/26" in outside.json["msg"], outside.stdout
    assert "n0-10.92.0.0-26" not in allocations(kube, kube_namespace)


def test_no_slice_yet_is_code_11_naming_node_and_network(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.93.0.0/24", node_slice_size="/26")
    missing = run_cni("ADD", conf, container_id="x", env={"NODENAME": "n7"})
    assert missing.json["code"] == 11, missing.stdout
    assert f"NodeSlicePool {kube_namespace}/testnet" in missing.json["msg"] and "n7" in missing.json["msg"]
    write_slice_pool(kube, kube_namespace, "testnet", "10.93.0.0/24", "/26", [("n1", "10.93.0.0/26")])
    unsliced = run_cni("ADD", conf, container_id="x", env={"NODENAME": "n7"})
    assert unsliced.json["code"] == 11, unsliced.stdout
    assert "node n7 has no slice of network testnet" in unsliced.json["msg"]
    status = {**conf, "cniVersion": "1.1.0"}
    assert run_cni("STATUS", status, env={"NODENAME": "n7"}).json["code"] == 50  # ADD could not be served
    assert run_cni("STATUS", status, env={"NODENAME": "n1"}).returncode == 0
    # the NAD changed, the controller has not re-sliced yet: wait rather than allocate from stale slices
    stale = slice_conf(tmp_path, plugin_kubeconfig, range="10.93.0.0/24", node_slice_size="/25")
    behind = run_cni("ADD", stale, container_id="x", env={"NODENAME": "n1"})
    assert behind.json["code"] == 11 and "not re-sliced yet" in behind.json["msg"], behind.stdout
    assert kube.objects(kube_namespace, "ippools") == {}
    assert kube.objects(kube_namespace, "overlappingrangeipreservations") == {}


def test_invalid_node_slice_configs_are_code_7(plugin_kubeconfig: Path, tmp_path: Path) -> None:
    local = netconf(tmp_path, range="10.94.0.0/24", node_slice_size="/26")
    result = run_cni("ADD", local, env={"NODENAME": "n1"})
    assert result.json["code"] == 7 and "kubernetes datastore" in result.json["msg"], result.stdout
    for size in ("/16", "/33", "x"):
        conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.94.0.0/24", node_slice_size=size)
        result = run_cni("ADD", conf, env={"NODENAME": "n1"})
        assert result.json["code"] == 7 and "node_slice_size" in result.json["msg"], result.stdout


def test_node_name_from_nodename_file_then_hostname(
    kube: KubeAPIServer,
    kube_namespace: str,
    plugin_kubeconfig: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NODENAME", raising=False)
    hostname = os.uname().nodename
    slices = [("from-file", "10.95.0.0/26"), (hostname, "10.95.0.64/26"), ("flat-file", "10.95.0.128/26")]
    write_slice_pool(kube, kube_namespace, "testnet", "10.95.0.0/24", "/26", slices)
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.95.0.0/24", node_slice_size="/26")
    assert run_cni("ADD", conf, container_id="h").addresses() == ["10.95.0.64/24"]  # no file: the hostname
    config_dir = tmp_path / "whereabouts.d"
    config_dir.mkdir()
    (config_dir / "nodename").write_text("from-file\n")
    in_dir = {**conf, "ipam": {**conf["ipam"], "configuration_path": str(config_dir)}}
    assert run_cni("ADD", in_dir, container_id="d").addresses() == ["10.95.0.1/24"]
    (config_dir / "whereabouts.conf").write_text("{}")
    (config_dir / "nodename").write_text("flat-file")  # configuration_path naming the flat file: its directory
    at_file = {**conf, "ipam": {**conf["ipam"], "configuration_path": str(config_dir / "whereabouts.conf")}}
    assert run_cni("ADD", at_file, container_id="f").addresses() == ["10.95.0.128/24"]
    assert add(at_file, "from-file", "e") == ["10.95.0.2/24"]  # NODENAME wins over the file


def test_uncontended_add_makes_four_requests(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    write_slice_pool(kube, kube_namespace, "testnet", "10.96.0.0/16", "/24", [("n1", "10.96.3.0/24")])
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.96.0.0/16", node_slice_size="/24")
    add(conf, "n1", "warm")
    before = len(kube.audited(namespace=kube_namespace))
    assert add(conf, "n1", "counted") == ["10.96.3.2/16"]
    verbs = [f"{e['verb']} {e['objectRef']['resource']}" for e in kube.audited(namespace=kube_namespace)[before:]]
    assert verbs == ["get nodeslicepools", "get ippools", "create overlappingrangeipreservations", "patch ippools"]


def test_del_and_check_find_the_address_after_a_re_slice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    write_slice_pool(kube, kube_namespace, "testnet", "10.97.0.0/24", "/26", [("n1", "10.97.0.64/26")])
    old = slice_conf(tmp_path, plugin_kubeconfig, "0.4.0", range="10.97.0.0/24", node_slice_size="/26")
    assert add(old, "n1", "keeps") == ["10.97.0.64/24"]
    assert add(old, "n1", "moves-on") == ["10.97.0.65/24"]
    # re-sliced into /25s: n1 now has 10.97.0.128/25, the old pool still holds its two addresses
    write_slice_pool(kube, kube_namespace, "testnet", "10.97.0.0/24", "/25", [("", "10.97.0.0/25"),
                     ("n1", "10.97.0.128/25")])  # fmt: skip
    new = slice_conf(tmp_path, plugin_kubeconfig, "0.4.0", range="10.97.0.0/24", node_slice_size="/25")
    assert add(new, "n1", "fresh") == ["10.97.0.128/24"]
    prev = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.97.0.64/24"}]}
    check = run_cni("CHECK", {**new, "prevResult": prev}, container_id="keeps", env={"NODENAME": "n1"})
    assert check.returncode == 0, check.stdout
    for container in ("keeps", "fresh"):
        assert run_cni("DEL", new, container_id=container, env={"NODENAME": "n1"}).returncode == 0
    # the NodeSlicePool gone altogether (the network's NADs were deleted): DEL still releases
    kube.request("DELETE", f"{GROUP_PATH}/{kube_namespace}/nodeslicepools/testnet")
    assert run_cni("DEL", new, container_id="moves-on", env={"NODENAME": "n1"}).returncode == 0
    assert allocations(kube, kube_namespace) == {"n1-10.97.0.64-26": {}, "n1-10.97.0.128-25": {}}
    assert kube.objects(kube_namespace, "overlappingrangeipreservations") == {}


def test_requested_address_must_lie_in_the_nodes_slice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    write_slice_pool(kube, kube_namespace, "testnet", "10.98.0.0/24", "/26", [("n1", "10.98.0.0/26"),
                     ("n2", "10.98.0.64/26")])  # fmt: skip
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.98.0.0/24", node_slice_size="/26")
    other = run_cni("ADD", conf, container_id="r1", cni_args="IgnoreUnknown=1;IP=10.98.0.70", env={"NODENAME": "n1"})
    assert other.json["code"] == 103 and "10.98.0.0/26 of node n1" in other.json["msg"], other.stdout
    mine = run_cni("ADD", conf, container_id="r2", cni_args="IgnoreUnknown=1;IP=10.98.0.9", env={"NODENAME": "n1"})
    assert mine.addresses() == ["10.98.0.9/24"]
    assert allocations(kube, kube_namespace) == {"n1-10.98.0.0-26": {"9": "r2"}}


def test_network_name_and_go_written_pools(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    write_slice_pool(kube, kube_namespace, "blue", "10.99.0.0/24", "/26", [("n1", "10.99.0.0/26")])
    entry = {"id": "go", "podref": "ns/go", "ifname": "net1"}
    go_pool = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
               "metadata": {"name": "blue-n1-10.99.0.0-26", "namespace": kube_namespace},
               "spec": {"range": "10.99.0.0/26", "allocations": {"1": entry}}}  # fmt: skip
    kube.request("POST", f"{GROUP_PATH}/{kube_namespace}/ippools", go_pool)
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="10.99.0.0/24", node_slice_size="/26", network_name="blue")
    assert add(conf, "n1", "py") == ["10.99.0.2/24"]
    assert allocations(kube, kube_namespace) == {"blue-n1-10.99.0.0-26": {"1": "go", "2": "py"}}
    assert set(kube.objects(kube_namespace, "overlappingrangeipreservations")) == {"blue-10.99.0.2"}


def test_ipv6_slice_and_a_second_range_allocated_whole(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The NodeSlicePool slices the first range (as the Go plugin's does); other ranges allocate whole."""
    write_slice_pool(kube, kube_namespace, "testnet", "fd00:99::/64", "/80", [("n1", "fd00:99::/80"),
                     ("n2", "fd00:99:0:0:1::/80")])  # fmt: skip
    conf = slice_conf(tmp_path, plugin_kubeconfig, range="fd00:99::/64", node_slice_size="/80",
                      ipRanges=[{"range": "10.100.0.0/24"}])  # fmt: skip
    assert add(conf, "n2", "a") == ["fd00:99:0:0:1::/64", "10.100.0.1/24"]
    assert add(conf, "n1", "b") == ["fd00:99::1/64", "10.100.0.2/24"]  # fd00:99:: is the range's network
    assert allocations(kube, kube_namespace) == {
        "n2-fd00-99-0-0-1---80": {"0": "a"},
        "n1-fd00-99---80": {"1": "b"},
        "10.100.0.0-24": {"1": "a", "2": "b"},
    }
    assert run_cni("DEL", conf, container_id="a", env={"NODENAME": "n2"}).returncode == 0
    assert allocations(kube, kube_namespace)["n2-fd00-99-0-0-1---80"] == {}
