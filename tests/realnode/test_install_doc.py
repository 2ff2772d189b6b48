"""docs/install.md, followed as written on the real node, whose CNI dirs are k3s's (none of the usual paths).

Each command run here is a `<!-- doc-test: NAME -->` block of the page, taken from the page at run time, so the
page cannot drift from what works: the image built and imported, the API server's ConfigMap (this node's
host-network pods cannot reach the API through the `kubernetes` Service: no kube-proxy), the k3s line of the
apply block, the wait, the network config of step 4 as the node's CNI config, then ten pods on it; then the
uninstall block, after what the page says to do first, and a check that the node is clean but for what the
page lists as left on purpose. The shell gets what a user's has: kubectl and ctr on PATH, KUBECONFIG and
CONTAINERD_ADDRESS for this node, API_HOST and API_PORT.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_server import REPO
from realnode.configs import POD_BRIDGE, POD_SUBNET, bridge_host_local, busybox_deployment
from realnode.node import REFERENCE_PLUGINS, RealNode, wait_for
from realnode.processes import stop_standin

pytestmark = [pytest.mark.realnode, pytest.mark.skipif(os.geteuid() != 0, reason="a real node needs root")]

DOC = REPO / "docs" / "install.md"
BLOCK = re.compile(r"<!-- doc-test: ([\w-]+) -->\n```\w+\n(.*?)```", re.DOTALL)
HOST_DIRS = (Path("/run/whereabouts"), Path("/var/lib/cni/whereabouts"))  # the DaemonSet's own hostPath dirs
INSTALLED = ("whereabouts-controller", "whereabouts", "whereabouts-controller-pools", "whereabouts-node-agent",
             "whereabouts-plugin", "whereabouts-plugin-sticky", "whereabouts-config")  # fmt: skip
PODS = 10


def doc_blocks() -> dict[str, str]:
    blocks = dict(BLOCK.findall(DOC.read_text()))
    assert {"image", "api-server", "apply", "wait", "network", "uninstall"} <= set(blocks), sorted(blocks)
    return blocks


def k3s_dirs() -> tuple[Path, Path]:
    """(bin, conf) as deploy/overlays/k3s moves them."""
    ops = yaml.safe_load((REPO / "deploy/overlays/k3s/cni-dirs.yaml").read_text())
    paths = {op["path"]: op["value"] for op in ops if op["op"] == "replace"}
    return Path(paths["/spec/template/spec/volumes/0/hostPath/path"]), Path(
        paths["/spec/template/spec/volumes/1/hostPath/path"]
    )


class Shell:
    """Runs the page's commands as a user's shell would, in a clone of the repository."""

    def __init__(self, node: RealNode) -> None:
        self.env = {
            **os.environ,
            "PATH": f"{node.tools}:{os.environ['PATH']}",
            "KUBECONFIG": str(node.admin_kubeconfig),
            "CONTAINERD_ADDRESS": str(node.containerd_socket),
            "API_HOST": "127.0.0.1",
            "API_PORT": str(node.port),
        }
        self.timings: dict[str, float] = {}

    def run(self, name: str, script: str, timeout: float = 600) -> str:
        started = time.monotonic()
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
        self.timings[name] = time.monotonic() - started
        assert done.returncode == 0, f"docs/install.md, block {name}:\n{script}\n{done.stdout}\n{done.stderr}"
        return done.stdout


def the_k3s_line(block: str) -> str:
    (line,) = [line for line in block.splitlines() if "deploy/overlays/k3s" in line]
    return line


def test_install_md_as_written_on_a_k3s_layout_node_then_uninstalled(real_node: RealNode) -> None:
    node, blocks, shell = real_node, doc_blocks(), Shell(real_node)
    bin_dir, conf_dir = k3s_dirs()
    assert (node.cni_bin_dir, node.cni_conf_dir) == (bin_dir, conf_dir), "the session node keeps CNI where k3s does"
    existed = {path: path.exists() for path in HOST_DIRS}
    try:
        install(node, shell, blocks, bin_dir, conf_dir)
        pods_on_the_documented_network(node, blocks)
        uninstall(node, shell, blocks)
        assert_clean(node, bin_dir, conf_dir)
        print(f"\ninstall.md timings: {', '.join(f'{k} {v:.1f} s' for k, v in shell.timings.items())}")
    finally:
        node.kubectl("delete", "deployment", "doc-pods", "--ignore-not-found", "--wait=true")
        node.kubectl("delete", "-k", str(REPO / "deploy/base"), "-l", "whereabouts.cni.cncf.io/uninstall!=keep",
                     "--ignore-not-found", "--wait=true")  # fmt: skip
        node.kubectl("-n", "kube-system", "delete", "configmap", "whereabouts-api-server", "--ignore-not-found")
        wait_for("the DaemonSet's pod gone", lambda: not daemon_pods(node), 120)
        node.write_cni_config(
            bridge_host_local(bridge=POD_BRIDGE, subnet=POD_SUBNET, data_dir=node.base / "host-local")
        )
        stop_standin(HOST_DIRS[0])  # one a call started while no daemon listened: stopped by its pid
        for path, was in existed.items():
            if not was:
                shutil.rmtree(path, ignore_errors=True)


def install(node: RealNode, shell: Shell, blocks: dict[str, str], bin_dir: Path, conf_dir: Path) -> None:
    shell.run("image", blocks["image"])
    shell.run("api-server", blocks["api-server"])
    shell.run("apply", the_k3s_line(blocks["apply"]))
    shell.run("wait", blocks["wait"])
    # The controller's pods cannot reach the API server from this node's pod network (it listens on the host's
    # loopback: test_deploy.py runs them on the host network). Gone now, their DELs go to the CNI config they
    # were made with, the node's own: no host-local lease is left behind for the next test.
    node.kubectl("-n", "kube-system", "scale", "deployment", "whereabouts-controller", "--replicas=0")
    node.wait_pods_gone("kube-system", "app.kubernetes.io/component=controller")
    flat_file = conf_dir / "whereabouts.d" / "whereabouts.conf"
    assert json.loads(flat_file.read_text())["datastore"] == "kubernetes"
    launcher = (bin_dir / "whereabouts-python").read_text()
    assert repr(str(flat_file)) in launcher, "the launcher tells the plugin where the flat file is"
    relay = (bin_dir / "whereabouts").read_bytes()
    assert f"WHEREABOUTS_FLAT_FILE={flat_file}\0".encode() in relay, "and the compiled relay tells the daemon"


def pods_on_the_documented_network(node: RealNode, blocks: dict[str, str]) -> None:
    """Step 4's config as the node's CNI config (no datastore key, no configuration_path), ten pods on it."""
    conf = json.loads(blocks["network"])
    ipam = conf["plugins"][0]["ipam"]
    node.write_cni_config(conf)
    started = time.monotonic()
    node.apply(busybox_deployment("doc-pods", PODS))
    pods = node.wait_pods("default", "app=doc-pods", PODS, timeout=300)
    print(f"\n{PODS} pods Running {time.monotonic() - started:.1f} s after apply, on install.md's network")
    addresses = [p["status"]["podIP"] for p in pods]
    assert len(set(addresses)) == PODS
    assert all(ip_address(a) in ip_network(ipam["range"]) and a != ipam["gateway"] for a in addresses), addresses
    held = allocations(node, ipam["range"])
    assert {f"default/{p['metadata']['name']}" for p in pods} <= {entry["podref"] for entry in held.values()}
    names = [p["metadata"]["name"] for p in pods]
    out = node.kubectl("exec", names[0], "--", "ping", "-c1", "-W5", addresses[-1])
    assert "1 packets received" in out, out


def uninstall(node: RealNode, shell: Shell, blocks: dict[str, str]) -> None:
    """What the page says to do first (delete the pods on the network, then the config naming it), then its
    uninstall block."""
    node.kubectl("delete", "deployment", "doc-pods", "--wait=true")
    node.wait_pods_gone("default", "app=doc-pods")
    range_ = json.loads(blocks["network"])["plugins"][0]["ipam"]["range"]
    wait_for("every address released by the DELs", lambda: not allocations(node, range_), 60)
    node.write_cni_config(bridge_host_local(bridge=POD_BRIDGE, subnet=POD_SUBNET, data_dir=node.base / "host-local"))
    shell.run("uninstall", blocks["uninstall"])
    wait_for("the DaemonSet's pod gone", lambda: not daemon_pods(node), 120)
    assert pool_exists(node, range_), "left on purpose: the pools"


def assert_clean(node: RealNode, bin_dir: Path, conf_dir: Path) -> None:
    assert sorted(os.listdir(bin_dir)) == sorted(os.listdir(REFERENCE_PLUGINS)), "only the node's own plugins"
    assert [p.name for p in conf_dir.iterdir()] == ["10-wa-test.conflist"], "only the node's own CNI config"
    for path in HOST_DIRS:  # left on purpose, empty: the DaemonSet's mount points
        assert not path.exists() or not os.listdir(path), (path, os.listdir(path))
    for kind, name in (("daemonset", "whereabouts"), ("deployment", "whereabouts-controller")):
        assert not node.kubectl("-n", "kube-system", "get", kind, name, "--ignore-not-found", "-o", "name")
    leftovers = node.kubectl("get", "clusterroles,clusterrolebindings", "-o", "name")
    assert not [line for line in leftovers.splitlines() if line.split("/")[1] in INSTALLED], leftovers
    crds = node.kubectl("get", "crd", "-o", "name")
    assert "ippools.whereabouts.cni.cncf.io" in crds, "left on purpose: the CRDs"


def daemon_pods(node: RealNode) -> list[dict[str, Any]]:
    return node.pods("kube-system", "app.kubernetes.io/component=node")


def pool_name(range_: str) -> str:
    return range_.replace("/", "-")


def pool_exists(node: RealNode, range_: str) -> bool:
    return bool(node.kubectl("-n", "kube-system", "get", "ippools.whereabouts.cni.cncf.io", pool_name(range_),
                             "--ignore-not-found", "-o", "name"))  # fmt: skip


def allocations(node: RealNode, range_: str) -> dict[str, dict[str, str]]:
    if not pool_exists(node, range_):
        return {}
    obj = node.get("-n", "kube-system", "ippools.whereabouts.cni.cncf.io", pool_name(range_))
    return obj["spec"].get("allocations") or {}
