"""Kubernetes object names: the config's names are checked once, at parse time, with the kubernetes datastore;
the node's name when its slice is used; the node-slice controller skips networks it could not name."""

from __future__ import annotations

import json

import pytest

from whereabouts.config import parse_ipam
from whereabouts.controller.nads import read_nads
from whereabouts.errors import InvalidConfig
from whereabouts.model import SlicePool
from whereabouts.names import is_namespace, is_object_name
from whereabouts.nodeslice import node_pool_ranges

KUBE = {"type": "whereabouts", "kubernetes": {"kubeconfig": "/etc/k.kubeconfig"}, "range": "10.0.0.0/24"}
SLICED = {**KUBE, "node_slice_size": "/26"}

NAMES = [
    ("blue", True),
    ("blue-net.prod", True),
    ("0a", True),
    ("a" * 253, True),
    ("a" * 254, False),
    ("Blue", False),
    ("-blue", False),
    ("blue-", False),
    ("blue.", False),
    ("a..b", False),
    ("a.-b", False),
    ("blue_net", False),
    ("blue net", False),
    ("blue\r\nX", False),
    ("../x", False),
    ("", False),
]


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=[repr(n)[:20] for n, _ in NAMES])
def test_object_names_are_dns_1123_subdomains(name: str, valid: bool) -> None:
    assert is_object_name(name) is valid


def test_namespaces_are_dns_1123_labels() -> None:
    assert is_namespace("kube-system") and is_namespace("a" * 63)
    assert not any(is_namespace(n) for n in ("a" * 64, "a.b", "..", "A", "a/b", ""))


@pytest.mark.parametrize(
    ("ipam", "netconf_name", "key"),
    [
        ({**KUBE, "network_name": "Blue"}, "net", "network_name"),
        ({**KUBE, "network_name": "blue\r\nDELETE /x HTTP/1.1"}, "net", "network_name"),
        ({**KUBE, "network_name": "n" * 240}, "net", "network_name"),  # reservations would pass 253
        ({**KUBE, "range": "::/64"}, "net", "range"),  # '--64': the Go plugin's name, but no object name
        ({**SLICED, "network_name": "blue-"}, "net", "network_name"),  # names the NodeSlicePool itself
        ({**SLICED}, "Test Net", "name"),  # the NodeSlicePool is named after the network config's name
    ],
    ids=["uppercase", "crlf", "too-long", "v6-range-alone", "slice-pool-network-name", "slice-pool-name"],
)
def test_the_config_names_no_invalid_object(ipam: dict, netconf_name: str, key: str) -> None:
    with pytest.raises(InvalidConfig, match=f"^invalid {key} "):
        parse_ipam(ipam, netconf_name)


def test_names_are_data_in_the_other_datastores() -> None:
    local = {"type": "whereabouts", "range": "10.0.0.0/24", "network_name": "Blue Net"}
    assert parse_ipam(local).network_name == "Blue Net"
    assert parse_ipam({**KUBE, "network_name": "blue-"}).network_name == "blue-"  # 'blue--10.0.0.0-24' is fine


class SliceStore:
    """What node_pool_ranges reads: one NodeSlicePool, giving `node` a slice."""

    def __init__(self, node: str) -> None:
        self.reads = 0
        self.pool = SlicePool("10.0.0.0/24", "/26", ((node, "10.0.0.64/26"),), "NodeSlicePool ns/net")

    def slice_pool(self, name: str) -> SlicePool:
        self.reads += 1
        return self.pool

    def where(self, name: str) -> str:
        return f"NodeSlicePool ns/{name}"


@pytest.mark.parametrize("node", ["Worker_1", "worker\r\nX", "../w"], ids=["underscore", "crlf", "dot-dot"])
def test_a_node_name_that_makes_no_object_name(node: str) -> None:
    cfg = parse_ipam({**SLICED, "ipRanges": [{"range": "10.1.0.0/24"}]}, "net")
    store = SliceStore(node)
    with pytest.raises(InvalidConfig, match=r"^invalid node name "):
        node_pool_ranges(cfg, store, node, required=True)
    assert [r.key.cidr for r in node_pool_ranges(cfg, store, node, required=False)] == ["10.1.0.0/24"]
    assert store.reads == 0  # a DEL goes on with the other ranges


def test_a_node_slice_pool_name_past_253_characters() -> None:
    cfg = parse_ipam({**SLICED, "network_name": "n" * 200}, "net")
    node = "w" * 60  # a node name of its own is fine, '<network_name>-<node>-<slice>' is not
    with pytest.raises(InvalidConfig, match=r"^invalid node name "):
        node_pool_ranges(cfg, SliceStore(node), node, required=True)
    assert node_pool_ranges(cfg, SliceStore("w1"), "w1", required=True)[0].key.name == f"{'n' * 200}-w1-10.0.0.64-26"


def test_the_controller_skips_a_network_it_cannot_name() -> None:
    def nad(name: str, ipam: dict) -> dict:
        config = {"cniVersion": "1.0.0", "name": "net", "type": "bridge", "ipam": ipam}
        return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"config": json.dumps(config)}}  # fmt: skip

    found = read_nads([nad("bad", {**SLICED, "network_name": "Blue"}), nad("good", {**SLICED, "network_name": "b"})])
    assert [n.name for n in found.sliced.values()] == ["b"]
    assert [p.reason for p in found.problems] == ["InvalidNodeSliceConfig"] and "network_name" in found.problems[
        0
    ].message
