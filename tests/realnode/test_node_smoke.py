"""The real node itself: busybox pods from a Deployment on the reference bridge + host-local, as a kubelet runs them.

Proves the test infrastructure before anything of ours runs on it: pods reach Running with addresses from the
range, reach each other over the node's bridge, and scaled to 0 every sandbox stops (so every CNI DEL ran).
"""

from __future__ import annotations

import os
import time
from ipaddress import ip_address, ip_network

import pytest

from realnode.configs import POD_SUBNET, busybox_deployment
from realnode.node import RealNode

pytestmark = [pytest.mark.realnode, pytest.mark.skipif(os.geteuid() != 0, reason="a real node needs root")]


def test_busybox_deployment_on_bridge_and_host_local(real_node: RealNode) -> None:
    started = time.monotonic()
    real_node.apply(busybox_deployment("smoke", 3))
    pods = real_node.wait_pods("default", "app=smoke", 3)
    to_running = time.monotonic() - started
    print(f"\nbring-up {real_node.timings['bring-up']:.1f} s; 3 pods Running {to_running:.1f} s after apply")

    addresses = [pod["status"]["podIP"] for pod in pods]
    assert len(set(addresses)) == 3
    assert all(ip_address(address) in ip_network(POD_SUBNET) for address in addresses)
    names = [pod["metadata"]["name"] for pod in pods]
    assert addresses[0] in real_node.kubectl("exec", names[0], "--", "ip", "-4", "addr", "show", "eth0")
    for source, target in ((0, 1), (1, 2)):
        out = real_node.kubectl("exec", names[source], "--", "ping", "-c1", "-W5", addresses[target])
        assert "1 packets received" in out, out

    started = time.monotonic()
    real_node.kubectl("scale", "deployment", "smoke", "--replicas=0")
    real_node.wait_pods_gone("default", "app=smoke")
    real_node.wait_no_tasks()
    print(f"scaled to 0, no containerd tasks left, in {time.monotonic() - started:.1f} s")
    leases = real_node.base / "host-local" / "wa-test"
    assert not [p.name for p in leases.iterdir() if p.name[0].isdigit()], "host-local still holds addresses: no DEL"
    real_node.kubectl("delete", "deployment", "smoke")
