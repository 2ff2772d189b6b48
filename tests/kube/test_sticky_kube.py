"""Sticky addresses on a real kube-apiserver, the parts only the Kubernetes datastore has: IPAMClaims (KubeVirt's
persistent IPs), node slices, and the one object per held or retained address that `kubectl get ip` lists.
Each case runs in process and through the node daemon. The datastore-independent cases are in
tests/cni/test_cni_sticky.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_fast_ipam import write_slice_pool

from kube_objects import create_pod, ensure_namespace
from kube_server import KubeAPIServer
from support import CNIResult, netconf, run_cni, running_daemon, served_through

CLAIMS = "/apis/k8s.cni.cncf.io/v1alpha1/namespaces/{}/ipamclaims"


@pytest.fixture(scope="module")
def node_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sock = str(tmp_path_factory.mktemp("node-daemon") / "plugin.sock")
    with running_daemon(sock):
        yield sock


@pytest.fixture(params=["in-process", "daemon"], autouse=True)
def served(request: pytest.FixtureRequest) -> Iterator[str]:
    sock = request.getfixturevalue("node_daemon") if request.param == "daemon" else ""
    with served_through(sock):
        yield request.param


def conf(tmp_path: Path, kubeconfig: Path, **ipam: Any) -> dict[str, Any]:
    return netconf(tmp_path, kubernetes={"kubeconfig": str(kubeconfig)}, **ipam)


def call(command: str, config: dict[str, Any], container: str, pod: str, namespace: str, **kw: Any) -> CNIResult:
    args = f"IgnoreUnknown=true;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}"
    env = {"NODENAME": kw.pop("node", "n1"), **kw.pop("env", {})}
    return run_cni(command, config, container_id=container, cni_args=args, env=env, **kw)


def add(config: dict[str, Any], container: str, pod: str, namespace: str, **kw: Any) -> str:
    result = call("ADD", config, container, pod, namespace, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    (address,) = result.addresses()
    return str(address)


def delete(config: dict[str, Any], container: str, pod: str, namespace: str, **kw: Any) -> None:
    result = call("DEL", config, container, pod, namespace, **kw)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def create_claim(kube: KubeAPIServer, namespace: str, name: str, network: str, interface: str) -> None:
    body = {"apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"network": network, "interface": interface}}  # fmt: skip
    kube.request("POST", CLAIMS.format(namespace), body)


def claim(kube: KubeAPIServer, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.request("GET", CLAIMS.format(namespace) + "/" + name)
    assert isinstance(obj, dict)
    return obj


def launcher(kube: KubeAPIServer, namespace: str, name: str, claim_name: str, node: str = "n1") -> None:
    """A virt-launcher-like pod: its network-selection element names the VM's claim (as KubeVirt writes it)."""
    element = {"name": "tenantnet", "namespace": namespace, "interface": "net1", "ipam-claim-reference": claim_name}
    create_pod(kube, namespace, name, node=node, networks=json.dumps([element]))


def reservations(kube: KubeAPIServer, namespace: str) -> dict[str, dict[str, Any]]:
    """address -> spec of its per-address object."""
    return {o["spec"]["address"]: o for o in kube.objects(namespace, "overlappingrangeipreservations").values()}


@pytest.mark.parametrize("knob", [{"sticky": "claim"}, {"allowPersistentIPs": True}], ids=["sticky", "persistent"])
def test_claim_status_written_and_a_migration_target_shares_the_address(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, knob: dict[str, Any]
) -> None:
    ns = kube_namespace
    ensure_namespace(kube, ns)
    config = conf(tmp_path, plugin_kubeconfig, range="10.50.0.0/28", **{k: v for k, v in knob.items() if k == "sticky"})
    if "allowPersistentIPs" in knob:  # KubeVirt's knob, at the top of the NAD's config
        config = {**config, "allowPersistentIPs": True}
    create_claim(kube, ns, "vm1.tenantnet", "tenantnet", "net1")
    launcher(kube, ns, "virt-launcher-vm1-a", "vm1.tenantnet")
    address = add(config, "la", "virt-launcher-vm1-a", ns, ifname="net1")
    assert address == "10.50.0.1/28"
    status = claim(kube, ns, "vm1.tenantnet")["status"]
    assert status["ips"] == [address] and status["ownerPod"] == "virt-launcher-vm1-a"
    # live migration: the target pod starts while the source still runs, and gets the claim's address
    launcher(kube, ns, "virt-launcher-vm1-b", "vm1.tenantnet", node="n2")
    assert add(config, "lb", "virt-launcher-vm1-b", ns, ifname="net1", node="n2") == address
    assert claim(kube, ns, "vm1.tenantnet")["status"]["ips"] == [address]
    delete(config, "la", "virt-launcher-vm1-a", ns, ifname="net1")  # the source goes: the address stays
    assert add(config, "other", "plain-pod", ns, ifname="net1") == "10.50.0.2/28"  # no claim: an ordinary one
    delete(config, "lb", "virt-launcher-vm1-b", ns, ifname="net1", node="n2")  # the VM stops: kept for its claim
    assert reservations(kube, ns)["10.50.0.1"]["spec"]["state"] == "retained"
    assert add(config, "other2", "plain-pod-2", ns, ifname="net1") == "10.50.0.3/28"
    launcher(kube, ns, "virt-launcher-vm1-c", "vm1.tenantnet", node="n3")
    assert add(config, "lc", "virt-launcher-vm1-c", ns, ifname="net1", node="n3") == address  # the VM restarts


def test_claim_that_does_not_exist_is_code_7_and_holds_nothing(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    ns = kube_namespace
    config = conf(tmp_path, plugin_kubeconfig, range="10.51.0.0/28", sticky="claim")
    launcher(kube, ns, "virt-launcher-vm2-a", "vm2.tenantnet")
    result = call("ADD", config, "la", "virt-launcher-vm2-a", ns, ifname="net1")
    assert result.json["code"] == 7 and f"{ns}/vm2.tenantnet" in result.json["msg"], result.stdout
    assert kube.objects(ns, "overlappingrangeipreservations") == {}
    assert all(not p["spec"].get("allocations") for p in kube.mirrored_pools(ns).values())


def test_kubectl_get_ip_lists_the_held_and_retained_addresses_of_a_subnet(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    ns = kube_namespace
    config = conf(tmp_path, plugin_kubeconfig, range="10.52.0.0/24", sticky="pod", network_name="blue")
    other = conf(tmp_path, plugin_kubeconfig, range="10.53.0.0/24")  # another subnet: not listed
    for i in range(3):
        add(config, f"c{i}", f"web-{i}", ns, node=f"n{i}")
    add(other, "x", "elsewhere", ns)
    delete(config, "c1", "web-1", ns, node="n1")
    # a discovery cache of its own: one written before the CRDs were served would not know the short name
    kubectl = lambda *args: kube.kubectl(f"--cache-dir={tmp_path / 'kubectl-cache'}", "get", "ip", "-n", ns, *args)  # noqa: E731
    listed = kubectl("-l", "subnet_24=10.52.0.0", "-o", "json")
    items = json.loads(listed)["items"]
    assert sorted(i["spec"]["address"] for i in items) == ["10.52.0.1", "10.52.0.2", "10.52.0.3"]
    labels = {i["spec"]["address"]: i["metadata"]["labels"] for i in items}
    assert labels["10.52.0.2"]["whereabouts.cni.cncf.io/state"] == "retained"
    assert labels["10.52.0.1"]["whereabouts.cni.cncf.io/state"] == "held"
    assert labels["10.52.0.1"]["whereabouts.cni.cncf.io/network"] == "blue"
    assert labels["10.52.0.1"]["whereabouts.cni.cncf.io/pod-namespace"] == ns
    assert labels["10.52.0.1"]["whereabouts.cni.cncf.io/pod-name"] == "web-0"
    assert labels["10.52.0.1"]["whereabouts.cni.cncf.io/node"] == "n0"
    assert labels["10.52.0.1"]["whereabouts.cni.cncf.io/sticky"] == "pod"
    retained = kubectl("-l", "whereabouts.cni.cncf.io/state=retained", "-o", "name")
    assert retained.split() == [f"overlappingrangeipreservation.whereabouts.cni.cncf.io/{_name('blue', 2)}"]
    table = kubectl("-l", "subnet_24=10.52.0.0").splitlines()
    assert table[0].split() == ["NAME", "ADDRESS", "STATE", "OWNER", "NODE", "AGE"]
    rows = {row.split()[1]: row.split()[2:5] for row in table[1:]}
    assert rows == {"10.52.0.1": ["held", f"{ns}/web-0", "n0"], "10.52.0.2": ["retained", f"{ns}/web-1", "n1"],
                    "10.52.0.3": ["held", f"{ns}/web-2", "n2"]}  # fmt: skip
    assert add(config, "c1b", "web-1", ns, node="n5") == "10.52.0.2/24"  # back, and held again, on its new node
    labels = kube.objects(ns, "overlappingrangeipreservations")[_name("blue", 2)]["metadata"]["labels"]
    assert (labels["whereabouts.cni.cncf.io/state"], labels["whereabouts.cni.cncf.io/node"]) == ("held", "n5")


def _name(network: str, host: int) -> str:
    return f"{network}-10.52.0.{host}"


def test_sticky_pod_records_its_controller_for_the_reconciler(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    ns = kube_namespace
    ensure_namespace(kube, ns)
    owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "0b5e-uid", "controller": True}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm-uid"}  # not the controller
    pod = {"metadata": {"name": "db-0", "namespace": ns, "ownerReferences": [other, owner]},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip
    kube.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    config = conf(tmp_path, plugin_kubeconfig, range="10.55.0.0/28", sticky="pod")
    add(config, "a", "db-0", ns)
    delete(config, "a", "db-0", ns)
    (entry,) = kube.mirrored_pools(ns)["10.55.0.0-28"]["spec"]["allocations"].values()
    assert entry["controller"] == "apps/v1/StatefulSet/db/0b5e-uid" and entry["retained"] > 0
    spec = kube.objects(ns, "overlappingrangeipreservations")["10.55.0.1"]["spec"]
    assert (spec["controller"], spec["state"], spec["sticky"]) == (
        entry["controller"],
        "retained",
        f"pod:{ns}/db-0/eth0",
    )


def test_retained_address_comes_back_on_another_nodes_slice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    ns = kube_namespace
    slices = [("n1", "10.54.0.0/28"), ("n2", "10.54.0.16/28")]
    write_slice_pool(kube, ns, "testnet", "10.54.0.0/27", "/28", slices)
    config = conf(tmp_path, plugin_kubeconfig, range="10.54.0.0/27", node_slice_size="/28", sticky="pod")
    assert add(config, "old", "db-0", ns, node="n1") == "10.54.0.1/27"
    delete(config, "old", "db-0", ns, node="n1")
    assert add(config, "x", "web-0", ns, node="n1") == "10.54.0.2/27"  # n1's slice passes over it
    assert add(config, "new", "db-0", ns, node="n2") == "10.54.0.1/27"  # from n1's slice, on n2
    assert add(config, "y", "web-1", ns, node="n2") == "10.54.0.16/27"
    delete(config, "old", "db-0", ns, node="n1")  # the old container's late DEL changes nothing
    held = kube.mirrored_pools(ns)["n1-10.54.0.0-28"]["spec"]["allocations"]["1"]
    assert (held["id"], held.get("retained"), held.get("node")) == ("new", None, "n2")
    delete(config, "new", "db-0", ns, node="n2")
    assert add(config, "newer", "db-0", ns, node="n1") == "10.54.0.1/27"  # and back to the first node


@pytest.mark.parametrize("unwritten", ["entry", "pool"])
def test_retained_address_on_another_slice_is_found_by_its_reservation_before_the_pool_says(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, unwritten: str
) -> None:
    """A node daemon writes the pool entry a moment after the reservation (the pool is its mirror), and creates a
    slice's IPPool with its first mirror round: a lookup that goes from the IPPools to the sticky key's address
    would miss it on another node's slice meanwhile."""
    ns = kube_namespace
    slices = [("n1", "10.56.0.0/28"), ("n2", "10.56.0.16/28")]
    write_slice_pool(kube, ns, "testnet", "10.56.0.0/27", "/28", slices)
    config = conf(tmp_path, plugin_kubeconfig, range="10.56.0.0/27", node_slice_size="/28", sticky="pod")
    assert add(config, "old", "db-0", ns, node="n1") == "10.56.0.1/27"
    delete(config, "old", "db-0", ns, node="n1")
    kube.mirrored_pools(ns)
    path = f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{ns}/ippools/n1-10.56.0.0-28"
    if unwritten == "entry":  # as if the mirror had not written it yet
        kube.request_patch(path, {"spec": {"allocations": {"1": None}}})
    else:  # as if the mirror had not created the slice's IPPool yet
        kube.request("DELETE", path)
    assert add(config, "new", "db-0", ns, node="n2") == "10.56.0.1/27"  # by its retained reservation


def test_a_claim_is_the_pods_namespaces_whatever_namespace_its_element_names(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The element's `namespace` is the NAD's: a pod of another namespace naming a VM's claim there finds no
    such claim in its own (code 7) and takes nothing; a VM attaching a NAD of another namespace uses its own."""
    ns, evil = kube_namespace, kube_namespace + "-evil"
    for namespace in (ns, evil):
        ensure_namespace(kube, namespace)
    config = conf(tmp_path, plugin_kubeconfig, range="10.57.0.0/28", sticky="claim")
    create_claim(kube, ns, "vm1.tenantnet", "tenantnet", "net1")
    launcher(kube, ns, "virt-launcher-vm1", "vm1.tenantnet")  # its element names its own namespace
    assert add(config, "vm", "virt-launcher-vm1", ns, ifname="net1") == "10.57.0.1/28"
    stolen = {"name": "tenantnet", "namespace": ns, "interface": "net1", "ipam-claim-reference": "vm1.tenantnet"}
    create_pod(kube, evil, "thief", node="n2", networks=json.dumps([stolen]))
    result = call("ADD", config, "thief", "thief", evil, ifname="net1", node="n2")
    assert result.json["code"] == 7 and f"{evil}/vm1.tenantnet" in result.json["msg"], result.stdout
    assert claim(kube, ns, "vm1.tenantnet")["status"] == {"ips": ["10.57.0.1/28"], "ownerPod": "virt-launcher-vm1"}
    assert {a: o["spec"]["containerid"] for a, o in reservations(kube, ns).items()} == {"10.57.0.1": "vm"}
    # a VM whose NAD lives in another namespace: the claim KubeVirt made beside the VM
    create_claim(kube, ns, "vm2.tenantnet", "tenantnet", "net1")
    element = {"name": "tenantnet", "namespace": "nads", "interface": "net1", "ipam-claim-reference": "vm2.tenantnet"}
    create_pod(kube, ns, "virt-launcher-vm2", node="n1", networks=json.dumps([element]))
    assert add(config, "vm2", "virt-launcher-vm2", ns, ifname="net1") == "10.57.0.2/28"
    assert reservations(kube, ns)["10.57.0.2"]["spec"]["sticky"] == f"claim:{ns}/vm2.tenantnet"
    assert claim(kube, ns, "vm2.tenantnet")["status"]["ips"] == ["10.57.0.2/28"]


def test_an_element_naming_no_claim_borrows_none(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The pod's only claim is another network's when this network's element names none; an empty reference
    names none either."""
    ns = kube_namespace
    ensure_namespace(kube, ns)
    neta = {**conf(tmp_path, plugin_kubeconfig, range="10.58.0.0/28", sticky="claim", network_name="a"), "name": "a"}
    netb = {**conf(tmp_path, plugin_kubeconfig, range="10.59.0.0/28", sticky="claim", network_name="b"), "name": "b"}
    netc = {**conf(tmp_path, plugin_kubeconfig, range="10.60.0.0/28", sticky="claim", network_name="c"), "name": "c"}
    create_claim(kube, ns, "vm1.a", "a", "net1")
    elements = [{"name": "a", "ipam-claim-reference": "vm1.a"}, {"name": "b"},
                {"name": "c", "ipam-claim-reference": ""}]  # fmt: skip
    create_pod(kube, ns, "virt-launcher-vm1", node="n1", networks=json.dumps(elements))
    assert add(neta, "vm", "virt-launcher-vm1", ns, ifname="net1") == "10.58.0.1/28"
    assert add(netb, "vm", "virt-launcher-vm1", ns, ifname="net2") == "10.59.0.1/28"
    assert add(netc, "vm", "virt-launcher-vm1", ns, ifname="net3") == "10.60.0.1/28"
    stuck = {a: o["spec"].get("sticky", "") for a, o in reservations(kube, ns).items()}
    assert stuck == {"10.58.0.1": f"claim:{ns}/vm1.a", "10.59.0.1": "", "10.60.0.1": ""}
    assert claim(kube, ns, "vm1.a")["status"]["ips"] == ["10.58.0.1/28"]
