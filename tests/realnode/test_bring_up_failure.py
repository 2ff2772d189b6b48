"""A bring-up that fails halfway (everything running, kubelet included) still tears down completely.

Runs before the session's `real_node` exists (files run in name order): one node per machine at a time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realnode.configs import POD_SUBNET, bridge_host_local
from realnode.host import HostSnapshot, cgroup_dirs, mount_points
from realnode.node import PAUSE_TAR, RealNode, node_tools

pytestmark = [pytest.mark.realnode, pytest.mark.skipif(os.geteuid() != 0, reason="a real node needs root")]


class Injected(Exception):
    pass


class NodeFailingAtReady(RealNode):
    def wait_node_ready(self, timeout: float = 120) -> None:
        raise Injected("the node never turned Ready")


def test_failed_bring_up_leaves_nothing_behind(tmp_path: Path) -> None:
    if RealNode.active is not None:
        pytest.skip("the session's real node is up; one node per machine at a time")
    before = HostSnapshot.take()
    conf = bridge_host_local(bridge="wa-fail0", subnet=POD_SUBNET, data_dir=tmp_path / "host-local")
    node = NodeFailingAtReady(tmp_path, node_tools(), cni_config=conf, images=(PAUSE_TAR,))
    with pytest.raises(Injected):
        node.start()
    assert set(node.procs) == {"kube-controller-manager", "kube-scheduler", "containerd", "kubelet"}
    assert all(proc.poll() is not None for proc in node.procs.values())
    assert node.apiserver is not None and node.apiserver.proc is not None and node.apiserver.proc.poll() is not None
    assert not [point for point in mount_points() if point.startswith(str(tmp_path))]
    assert not cgroup_dirs()
    after = HostSnapshot.take()
    assert (after.links, after.watched, after.sysctls, after.propagation) == (
        before.links, before.watched, before.sysctls, before.propagation)  # fmt: skip
    assert RealNode.active is None
