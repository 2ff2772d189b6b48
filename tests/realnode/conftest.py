"""The session's real node (../shared/REALNODE.md), for the tests that need pods made by a real kubelet.

`real_node` comes up once, as root only (skipped otherwise), with the reference `bridge` plugin and `host-local`
IPAM as its CNI config and the pause and busybox images imported. Its CNI dirs are where k3s keeps them
(`K3S_CNI_DIRS`), none of the usual paths: what is installed there must find its way without them, and
docs/install.md's k3s overlay is tested as written. A test that wants another CNI config calls
`real_node.write_cni_config(conf)` (containerd picks it up without a restart), and
`real_node.install_cni_plugin(path)` for a plugin of its own; it leaves no workloads behind for the next test.
The node stops right after the last test of this directory, not at the end of the session: the rest of the
suite runs without a kubelet, containerd and their host settings around.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from realnode.configs import POD_BRIDGE, POD_SUBNET, bridge_host_local
from realnode.node import BUSYBOX_TAR, PAUSE_TAR, RealNode, node_tools

HERE = Path(__file__).parent
RANCHER = Path("/var/lib/rancher")
K3S_CNI_DIRS = (RANCHER / "k3s/data/current/bin", RANCHER / "k3s/agent/etc/cni/net.d")  # deploy/overlays/k3s


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (kubelet, containerd, network namespaces)")
    base = tmp_path_factory.mktemp("realnode")
    if RANCHER.exists():
        pytest.fail(f"{RANCHER} exists: this machine runs k3s, or a real node's teardown failed; the node needs it")
    conf = bridge_host_local(bridge=POD_BRIDGE, subnet=POD_SUBNET, data_dir=base / "host-local")
    node = RealNode(base, node_tools(), cni_config=conf, images=(PAUSE_TAR, BUSYBOX_TAR), cni_dirs=K3S_CNI_DIRS)
    with node:
        print(f"\nreal node up in {node.timings['bring-up']:.1f} s ({base})")
        yield node


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the node once no test of this directory is left to run (at the session's end the fixture does)."""
    node = RealNode.active
    if node is None or nextitem is None:
        return
    rest = item.session.items[item.session.items.index(nextitem) :]
    if not any(Path(other.path).is_relative_to(HERE) for other in rest):
        node.stop()
