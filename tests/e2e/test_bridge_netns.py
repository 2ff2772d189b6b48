"""End to end with the reference `bridge` plugin: a node namespace holds the bridge, pod namespaces get veths.

The runtime's part is played by `ip netns exec <node> bridge`; bridge execs `whereabouts` from CNI_PATH for the
addresses, exactly as on a real node.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import netns
from support import PLUGIN

BRIDGE = "/usr/lib/cni/bridge"

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


@pytest.fixture
def cni_path(tmp_path: Path) -> str:
    """A CNI_PATH holding just the two plugins under test."""
    assert os.access(BRIDGE, os.X_OK), f"{BRIDGE} missing: install containernetworking-plugins"
    assert os.access(PLUGIN, os.X_OK), f"whereabouts executable {PLUGIN!r} missing: run scripts/setup.sh"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bridge").symlink_to(BRIDGE)
    (bin_dir / "whereabouts").symlink_to(os.path.abspath(PLUGIN))
    return str(bin_dir)


@pytest.fixture
def namespace() -> Iterator[Callable[[], str]]:
    """Makes fresh namespaces; all of them are deleted at teardown, whatever the test did."""
    made: list[str] = []

    def make() -> str:
        made.append(netns.unique_name())
        return netns.create(made[-1])

    yield make
    for name in made:
        netns.delete(name)
    assert not set(made) & set(netns.names())


def make_conf(tmp_path: Path, ipam: dict[str, Any]) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "e2e",
        "type": "bridge",
        "bridge": "wa-br0",
        "isGateway": True,
        "ipMasq": False,
        "ipam": {
            "type": "whereabouts",
            "local_data_dir": str(tmp_path / "data"),
            "configuration_path": str(tmp_path / "none"),
            **ipam,
        },
    }


IPV4 = {"range": "10.77.0.0/24", "gateway": "10.77.0.1"}
# bridge gives itself the first address of each subnet the result lacks a gateway for: keep fd78::1 out of the pool.
DUAL_STACK = {
    "ipRanges": [{"range": "10.78.0.0/24"}, {"range": "fd78::/64", "exclude": ["fd78::1/128"]}],
    "gateway": "10.78.0.1",
}


def add(node: str, pod: str, conf: dict[str, Any], cni_path: str) -> list[str]:
    result = netns.run_plugin(node, BRIDGE, "ADD", conf, container_id=pod, pod=pod, cni_path=cni_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return [ip["address"] for ip in result.json["ips"]]


def delete(node: str, pod: str, conf: dict[str, Any], cni_path: str) -> None:
    result = netns.run_plugin(node, BRIDGE, "DEL", conf, container_id=pod, pod=pod, cni_path=cni_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pods_get_the_lowest_free_addresses_and_reach_each_other(tmp_path, cni_path, namespace):
    node, pod_a, pod_b = namespace(), namespace(), namespace()
    conf = make_conf(tmp_path, IPV4)

    assert add(node, pod_a, conf, cni_path) == ["10.77.0.2/24"]
    assert add(node, pod_b, conf, cni_path) == ["10.77.0.3/24"]

    assert netns.addresses(pod_a) == ["10.77.0.2/24"]
    assert netns.addresses(pod_b) == ["10.77.0.3/24"]
    assert netns.ping(pod_a, "10.77.0.3")
    assert netns.ping(pod_b, "10.77.0.2")


def test_del_releases_the_address_for_the_next_pod(tmp_path, cni_path, namespace):
    node, pod_a, pod_b, pod_c = namespace(), namespace(), namespace(), namespace()
    conf = make_conf(tmp_path, IPV4)
    add(node, pod_a, conf, cni_path)
    add(node, pod_b, conf, cni_path)

    delete(node, pod_a, conf, cni_path)
    delete(node, pod_a, conf, cni_path)  # a repeated DEL succeeds too

    assert not netns.has_link(pod_a, "eth0")
    assert add(node, pod_c, conf, cni_path) == ["10.77.0.2/24"]
    assert netns.ping(pod_c, "10.77.0.3")


def test_dual_stack_pods_reach_each_other_over_both_families(tmp_path, cni_path, namespace):
    node, pod_a, pod_b = namespace(), namespace(), namespace()
    conf = make_conf(tmp_path, DUAL_STACK)

    assert add(node, pod_a, conf, cni_path) == ["10.78.0.2/24", "fd78::2/64"]
    assert add(node, pod_b, conf, cni_path) == ["10.78.0.3/24", "fd78::3/64"]

    assert netns.addresses(pod_a) == ["10.78.0.2/24", "fd78::2/64"]
    assert netns.ping(pod_a, "fd78::3")
    assert netns.ping(pod_b, "10.78.0.2")
