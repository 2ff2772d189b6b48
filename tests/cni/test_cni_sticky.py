"""Sticky addresses through the executable (docs/sticky.md), on every datastore, in process and via the daemon.

A sticky network keeps an address for its key (the pod's name, the interface's MAC) after the DEL: nobody else
gets it, and the key's next ADD, from any container and any node, gets it back. Fixed reservations keep an
address for one pod or MAC from everyone else. The Kubernetes-only parts (IPAMClaims, node slices, the
per-address objects) are in tests/kube/test_sticky_kube.py.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cni_helpers import failed, held
from datastores import KubernetesDatastore

from support import CNIResult, netconf, run_cni


def pod_args(pod: str, mac: str = "") -> str:
    args = f"IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME={pod}"
    return f"{args};MAC={mac}" if mac else args


def call(command: str, conf: dict[str, Any], container: str, pod: str, node: str = "n1", **kw: Any) -> CNIResult:
    return run_cni(command, conf, container_id=container, cni_args=pod_args(pod, kw.pop("mac", "")),
                   env={"NODENAME": node}, **kw)  # fmt: skip


def add(conf: dict[str, Any], container: str, pod: str, node: str = "n1", **kw: Any) -> str:
    """ADD of one pod that must succeed: its one address, without the prefix."""
    result = call("ADD", conf, container, pod, node, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    (address,) = result.addresses()
    return str(address).split("/")[0]


def delete(conf: dict[str, Any], container: str, pod: str, node: str = "n1", **kw: Any) -> None:
    result = call("DEL", conf, container, pod, node, **kw)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def with_mac(conf: dict[str, Any], mac: str) -> dict[str, Any]:
    """The config as Multus passes it with the `mac` capability."""
    return {**conf, "runtimeConfig": {"mac": mac}}


def holders(tmp_path: Any) -> dict[str, str]:
    """address -> the container ID its entry records (held or retained)."""
    return {address: container for address, container, _ in held(tmp_path)}


def test_pod_key_gets_its_address_back_on_another_node_after_churn(tmp_path):
    conf = netconf(tmp_path, range="10.40.0.0/26", sticky="pod")
    plain = {**netconf(tmp_path, range="10.40.0.0/26"), "name": "plainnet"}  # the same range, sticky off
    assert add(conf, "old", "web-0") == "10.40.0.1"
    delete(conf, "old", "web-0")
    assert holders(tmp_path) == {"10.40.0.1": "old"}  # retained: its entry stays
    failed(call("CHECK", conf, "old", "web-0"), 104)  # the DEL is done: the old container holds nothing
    delete(conf, "old", "web-0")  # a repeated DEL does not release it either

    def come_and_go(i: int) -> str:
        network = conf if i % 2 else plain
        address = add(network, f"other-{i}", f"other-{i}", node=f"n{i % 3}")
        delete(network, f"other-{i}", f"other-{i}", node=f"n{i % 3}")
        return address

    with ThreadPoolExecutor(max_workers=4) as pool:
        churned = list(pool.map(come_and_go, range(50)))
    assert "10.40.0.1" not in churned
    retained = {address for i, address in enumerate(churned) if i % 2}
    assert len(retained) == 25  # each sticky pod's address stays its own
    assert add(plain, "late", "late") not in {"10.40.0.1", *retained}  # picks pass over retained addresses
    assert add(conf, "new", "web-0", node="n2") == "10.40.0.1"  # a new container ID, another node
    delete(conf, "old", "web-0")  # the old container's late DEL: the address is the new one's now
    assert holders(tmp_path)["10.40.0.1"] == "new"
    assert call("CHECK", conf, "new", "web-0", node="n2").returncode == 0


def test_mac_key_follows_the_mac_whatever_the_pod_is_called(tmp_path):
    conf = netconf(tmp_path, range="10.41.0.0/28", sticky="mac")
    assert add(with_mac(conf, "02:00:00:00:00:0A"), "a", "vm-a") == "10.41.0.1"
    delete(with_mac(conf, "02:00:00:00:00:0A"), "a", "vm-a")
    assert add(conf, "x", "vm-x", mac="02:00:00:00:00:0b") == "10.41.0.2"  # another MAC: not the retained one
    # renamed, the MAC now from CNI_ARGS and written another way: the same interface
    assert add(conf, "b", "vm-b", mac="02-00-00-00-00-0a") == "10.41.0.1"
    delete(conf, "b", "vm-b")  # a DEL without the MAC: the entry keeps the key it was recorded with
    assert add(with_mac(conf, "02:00:00:00:00:0a"), "c", "vm-c") == "10.41.0.1"
    before = held(tmp_path)
    error = failed(call("ADD", conf, "d", "vm-d"), 7)
    assert "MAC" in error["msg"] and "sticky mac" in error["msg"], error
    assert held(tmp_path) == before


def test_retention_passes_then_another_key_gets_the_address(tmp_path, backend):
    """MAC keys lapse on the next ADD once the retention has passed, on every datastore; pod keys too where no
    reconciler looks for the pod (local, etcd). On Kubernetes a pod's address waits for the reconciler."""
    macs = netconf(tmp_path, range="10.42.0.0/29", sticky="mac", sticky_retention="3s", network_name="macs")
    pods = netconf(tmp_path, range="10.42.1.0/29", sticky="pod", sticky_retention="3s", network_name="pods")
    add(macs, "a", "vm-a", mac="02:00:00:00:00:01")
    add(pods, "a", "web-0")
    delete(macs, "a", "vm-a", mac="02:00:00:00:00:01")
    delete(pods, "a", "web-0")
    assert add(macs, "b", "vm-b", mac="02:00:00:00:00:02") == "10.42.0.2"  # within the retention: kept
    assert add(pods, "b", "web-1") == "10.42.1.2"
    time.sleep(3.1)
    assert add(macs, "c", "vm-c", mac="02:00:00:00:00:03") == "10.42.0.1"  # released on the way
    on_kubernetes = isinstance(backend, KubernetesDatastore)
    assert add(pods, "c", "web-2") == ("10.42.1.3" if on_kubernetes else "10.42.1.1")
    assert add(macs, "a2", "vm-a", mac="02:00:00:00:00:01") == "10.42.0.3"  # its address is gone: a new one


def test_fixed_reservation_only_ever_goes_to_its_key(tmp_path):
    reservations = [{"address": "10.43.0.1", "pod": "ns/db-0"}, {"address": "10.43.0.2", "mac": "02:00:00:00:00:07"}]
    conf = netconf(tmp_path, range="10.43.0.0/28", reservations=reservations)
    assert add(conf, "w1", "web-1") == "10.43.0.3"  # the two lowest free addresses are reserved
    for ip, key in (("10.43.0.1", "pod:ns/db-0"), ("10.43.0.2", "mac:02:00:00:00:00:07")):
        request = {**conf, "runtimeConfig": {"ips": [ip]}}
        error = failed(call("ADD", request, "w2", "web-2"), 102)
        assert f"reserved for {key}" in error["msg"], error
    assert add(conf, "d1", "db-0") == "10.43.0.1"
    assert add(conf, "m1", "vm-1", mac="02:00:00:00:00:07") == "10.43.0.2"
    delete(conf, "d1", "db-0")  # sticky is off: its entry goes, the reservation stays
    assert add(conf, "w3", "web-3") == "10.43.0.4"
    assert add(conf, "d2", "db-0", node="n2") == "10.43.0.1"
    assert sorted(holders(tmp_path).items()) == [
        ("10.43.0.1", "d2"), ("10.43.0.2", "m1"), ("10.43.0.3", "w1"), ("10.43.0.4", "w3")
    ]  # fmt: skip


def test_exhausted_range_counts_held_and_retained_addresses(tmp_path):
    conf = netconf(tmp_path, range="10.44.0.0/29", sticky="pod")  # six hosts
    for i in range(6):
        add(conf, f"c{i}", f"web-{i}")
    delete(conf, "c0", "web-0")
    delete(conf, "c3", "web-3")
    error = failed(call("ADD", conf, "c6", "web-6"), 101)
    assert "6 held, of which 2 retained" in error["msg"], error
    assert add(conf, "c3b", "web-3") == "10.44.0.4"


def test_a_config_of_the_same_name_with_sticky_off_leaves_retained_addresses_alone(tmp_path):
    """A config of the same name with sticky off (the NAD copied into another namespace, or the network's
    being turned off) proves no key gone: its ADDs pass over the retained addresses, which the keys get back
    (on Kubernetes the reconciler releases them once no NAD of the name has sticky on any more)."""
    conf = netconf(tmp_path, range="10.45.0.0/28", sticky="pod")
    add(conf, "a", "web-0")
    add(conf, "b", "web-1")
    delete(conf, "a", "web-0")
    assert add(conf, "c", "web-2") == "10.45.0.3"
    plain = netconf(tmp_path, range="10.45.0.0/28")  # the same network config name, sticky off
    assert add(plain, "d", "web-3") == "10.45.0.4"
    assert holders(tmp_path) == {"10.45.0.1": "a", "10.45.0.2": "b", "10.45.0.3": "c", "10.45.0.4": "d"}
    assert add(conf, "a2", "web-0", node="n2") == "10.45.0.1"


def test_a_mac_set_by_a_pod_of_another_namespace_takes_nothing(tmp_path):
    """Any pod may put any MAC in its network-selection element: a MAC key takes over only its own namespace's
    entries, so a copied MAC gets an ordinary address and the owner keeps its own, held or retained."""
    conf = with_mac(netconf(tmp_path, range="10.52.0.0/28", sticky="mac"), "02:00:00:00:00:01")

    def thief(container: str) -> CNIResult:
        args = "IgnoreUnknown=true;K8S_POD_NAMESPACE=evil;K8S_POD_NAME=thief"
        return run_cni("ADD", conf, container_id=container, cni_args=args, env={"NODENAME": "n2"})

    assert add(conf, "vm", "vm-a") == "10.52.0.1"
    assert thief("t1").addresses() == ["10.52.0.2/28"]
    assert call("CHECK", conf, "vm", "vm-a").returncode == 0  # still the VM's
    delete(conf, "vm", "vm-a")
    assert thief("t2").addresses() == ["10.52.0.2/28"]  # nor once retained: its namespace's entry of the MAC
    assert add(conf, "vm2", "vm-a-launcher", node="n3") == "10.52.0.1"  # the VM's namespace: back
    assert holders(tmp_path) == {"10.52.0.1": "vm2", "10.52.0.2": "t2"}


def test_retained_address_is_kept_from_an_overlapping_range_of_the_network(tmp_path):
    """Another network config of the same network_name, its range overlapping: the network-wide record of the
    retained address keeps it off that range's picks too."""
    sticky = netconf(tmp_path, range="10.49.0.0/28", sticky="pod", network_name="shared")
    wider = {**netconf(tmp_path, range="10.49.0.0/27", network_name="shared"), "name": "widenet"}
    assert add(sticky, "a", "db-0") == "10.49.0.1"
    delete(sticky, "a", "db-0")
    assert add(wider, "w", "web-0") == "10.49.0.2"
    assert add(sticky, "b", "db-0", node="n2") == "10.49.0.1"


def test_every_range_of_a_dual_stack_pod_comes_back(tmp_path):
    conf = netconf(tmp_path, ipRanges=[{"range": "10.50.0.0/28"}, {"range": "fd50::/120"}], sticky="pod")
    result = call("ADD", conf, "a", "db-0")
    assert result.addresses() == ["10.50.0.1/28", "fd50::1/120"], result.stdout
    delete(conf, "a", "db-0")
    assert call("ADD", conf, "x", "web-0").addresses() == ["10.50.0.2/28", "fd50::2/120"]
    assert call("ADD", conf, "b", "db-0", node="n2").addresses() == ["10.50.0.1/28", "fd50::1/120"]


def test_forty_pods_recreated_at_once_each_get_their_own_address_back(tmp_path, backend):
    conf = netconf(tmp_path, range="10.46.0.0/26", sticky="pod")
    pods = [f"web-{i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = dict(zip(pods, pool.map(lambda pod: add(conf, f"{pod}-r0", pod), pods), strict=True))
        assert len(set(first.values())) == 40
        for generation in (1, 2):

            def recreate(pod: str, generation: int = generation) -> str:
                delete(conf, f"{pod}-r{generation - 1}", pod)
                return add(conf, f"{pod}-r{generation}", pod, node=f"n{generation}")

            again = dict(zip(pods, pool.map(recreate, pods), strict=True))
            assert again == first
            assert sorted(held(tmp_path)) == sorted((first[pod], f"{pod}-r{generation}", "eth0") for pod in pods)
            if isinstance(backend, KubernetesDatastore):  # one per-address object each, none left over
                objects = backend.server.objects(backend.namespace, "overlappingrangeipreservations").values()
                assert sorted(o["spec"]["containerid"] for o in objects) == sorted(f"{p}-r{generation}" for p in pods)


# One of each kind per key (tests/test_sticky.py has the rest): what matters here is the code and that no
# datastore was written.
BAD_CONFIGS = [
    ({"sticky": "bogus"}, "invalid sticky 'bogus'"),
    ({"sticky": "pod", "allowPersistentIPs": True}, "allowPersistentIPs true means sticky claim"),
    ({"sticky": "pod", "sticky_retention": "-1h"}, "invalid sticky_retention '-1h'"),
    ({"sticky": "pod", "sticky_retention": "abc"}, "invalid sticky_retention 'abc'"),
    ({"reservations": {"address": "10.47.0.5", "pod": "ns/a"}}, "invalid reservations {"),
    ({"reservations": [{"address": "10.47.0.5"}]}, "invalid reservations entry"),
    ({"reservations": [{"address": "10.99.0.5", "pod": "ns/a"}]}, "invalid reservations address '10.99.0.5'"),
    ({"reservations": [{"address": "10.47.0.5", "mac": "02:00"}]}, "invalid reservations mac '02:00'"),
    (
        {"reservations": [{"address": "10.47.0.5", "pod": "ns/a"}, {"address": "10.47.0.5", "pod": "ns/b"}]},
        "listed twice",
    ),
    (
        {"reservations": [{"address": "10.47.0.5", "pod": "ns/a"}, {"address": "10.47.0.6", "pod": "ns/a"}]},
        "listed twice",
    ),
]


@pytest.mark.parametrize(("ipam", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_sticky_config_is_code_7_naming_the_key_and_writes_nothing(tmp_path, ipam, message):
    conf = netconf(tmp_path, range="10.47.0.0/28", **ipam)
    error = failed(call("ADD", conf, "a", "web-0"), 7)
    assert message in error["msg"], error
    assert held(tmp_path) == []


def test_sticky_claim_needs_the_kubernetes_datastore(tmp_path, backend):
    for conf in (netconf(tmp_path, range="10.48.0.0/28", sticky="claim"),
                 {**netconf(tmp_path, range="10.48.0.0/28"), "allowPersistentIPs": True}):  # fmt: skip
        result = call("ADD", conf, "a", "web-0")
        if isinstance(backend, KubernetesDatastore):  # no such pod, so no claim: an ordinary address
            assert result.addresses() == ["10.48.0.1/28"], result.stdout
            continue
        error = failed(result, 7)
        assert "invalid sticky 'claim'" in error["msg"] and "kubernetes datastore" in error["msg"], error
        assert held(tmp_path) == []


def test_adds_of_one_mac_arriving_together_leave_the_other_pods_of_the_round_alone(tmp_path):
    """Through the node daemon, ADDs arriving together share one commit: two pods of one MAC among them (the later
    takes over what the earlier got) once made etcd refuse the whole commit, failing every pod of the round."""
    for network in range(3):
        conf = netconf(tmp_path, range=f"10.51.{network}.0/24", sticky="mac", network_name=f"n{network}")

        def mac_of(i: int, network: int = network) -> str:
            return f"02:00:00:00:{network:02x}:{i - i % 2 if i % 4 < 2 else i:02x}"  # 0-1, 4-5, ... share one

        def one(i: int, conf: dict[str, Any] = conf, network: int = network) -> CNIResult:
            return call("ADD", with_mac(conf, mac_of(i)), f"c{network}-{i}", f"p{i}")

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(one, range(32)))
        assert [r.returncode for r in results] == [0] * 32, [r.stdout for r in results if r.returncode]
        macs: dict[str, set[str]] = {}  # address -> the MACs it was given for
        for i, result in enumerate(results):
            for address in result.addresses():
                macs.setdefault(address, set()).add(mac_of(i))
        assert all(len(given) == 1 for given in macs.values()), macs  # no address for two MACs
        assert len(macs) >= 24  # (two calls of one MAC racing in process may each keep their own)
