"""kubectl-whereabouts on a real etcd: pools the plugin wrote, planted faults found and the safe ones repaired, and
with a kubeconfig beside the store, pods judged alive or gone in Kubernetes (entries of gone pods released,
a live pod's address refused)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from bed import Bed
from tool import Ran, run_tool

from etcd_server import EtcdServer
from kube_server import KubeAPIServer
from support import netconf, run_cni
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.store.etcd import EtcdStore
from whereabouts.store.etcd_gateway import EtcdGateway, parse_endpoint

POOL = PoolKey("", "10.76.0.0/24")


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Bed:
    return Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def etcd_conf(etcd: EtcdServer, prefix: str, tmp_path: Path, **ipam: Any) -> dict[str, Any]:
    return netconf(tmp_path, etcd_host=etcd.url, etcd_prefix=prefix, **ipam)


def add(conf: dict[str, Any], namespace: str, pod: str, container: str, args: str = "") -> str:
    cni_args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}{args}"
    done = run_cni("ADD", conf, container_id=container, ifname="net1", cni_args=cni_args)
    assert done.returncode == 0, done.stdout
    return done.addresses()[0]


def tool(etcd: EtcdServer, prefix: str, *args: str) -> Ran:
    return run_tool("--etcd", etcd.url, "--etcd-prefix", prefix, *args)


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def test_pools_who_has_and_show_on_etcd(etcd: EtcdServer, etcd_prefix: str, tmp_path: Path) -> None:
    conf = etcd_conf(etcd, etcd_prefix, tmp_path, range="10.75.0.0/24")
    blue = etcd_conf(etcd, etcd_prefix, tmp_path, range="10.75.0.0/24", network_name="blue")
    assert add(conf, "ns", "a", "ctr-a") == "10.75.0.1/24"
    assert add(conf, "ns", "b", "ctr-b") == "10.75.0.2/24"
    assert add(blue, "ns", "c", "ctr-c") == "10.75.0.1/24"  # another network: its own domain
    listed = json.loads(tool(etcd, etcd_prefix, "pools", "-o", "json").ok().stdout)["items"]
    assert [(p["network"], p["pool"], p["held"]) for p in listed] == [("", "10.75.0.0-24", 2),
                                                                      ("blue", "blue-10.75.0.0-24", 1)]  # fmt: skip
    holders = json.loads(tool(etcd, etcd_prefix, "who-has", "10.75.0.1", "-o", "json").ok().stdout)["items"]
    assert [(h["network"], h["container"], h["podStatus"]) for h in holders] == [("", "ctr-a", "?"),
                                                                                 ("blue", "ctr-c", "?")]  # fmt: skip
    shown = tool(etcd, etcd_prefix, "show", "-n", "ns", "b").ok().stdout.splitlines()
    assert shown[1].split()[:5] == ["10.75.0.2", "-", "ns/b", "net1", "ctr-b"]
    release = tool(etcd, etcd_prefix, "release", "10.75.0.1")
    assert release.returncode == 2 and "10.75.0.1 is held in networks '', 'blue': say which with --network" in (
        release.stderr
    )


def test_check_with_pods_in_kubernetes_repairs_only_the_safe_ones(
    etcd: EtcdServer, etcd_prefix: str, bed: Bed, tmp_path: Path
) -> None:
    conf = etcd_conf(etcd, etcd_prefix, tmp_path, range="10.76.0.0/24")
    bed.pod("web")
    bed.pod("web2")
    assert add(conf, bed.pods_ns, "web", "ctr-web") == "10.76.0.1/24"
    assert add(conf, bed.pods_ns, "gone", "ctr-gone") == "10.76.0.2/24"  # no such pod in Kubernetes
    assert add(conf, bed.pods_ns, "web2", "ctr-web2") == "10.76.0.3/24"
    narrow = etcd_conf(etcd, etcd_prefix, tmp_path, range="10.76.0.0/25", enable_overlapping_ranges=False)
    assert add(narrow, bed.pods_ns, "web", "ctr-dup", ";IP=10.76.0.1") == "10.76.0.1/25"  # held twice
    store = EtcdStore(EtcdGateway([parse_endpoint(etcd.url, tls=False)]), prefix=etcd_prefix)
    try:
        with store.transaction([POOL], overlapping=True) as txn:
            version = txn.snapshot.pools[POOL].version
            third = txn.snapshot.pools[POOL].allocations[ip("10.76.0.3")]
            changes = (Change(POOL, 4, ip("10.76.0.3"), None, third),  # the entry only: a lone reservation
                       Change(POOL, 4, ip("10.76.7.7"), Owner("ctr-out", "net1", f"{bed.pods_ns}/web")))  # fmt: skip
            assert txn.commit(ChangeSet(changes, ((POOL, version),), False))
    finally:
        store.close()
    args = ("--etcd", etcd.url, "--etcd-prefix", etcd_prefix, "--kubeconfig", str(bed.admin))
    found = run_tool(*args, "check", "-o", "json")
    assert found.returncode == 1
    assert {(f["kind"], f["what"], f["repair"]) for f in json.loads(found.stdout)["items"]} == {
        ("duplicate", "10.76.0.1", ""),
        ("gone-pod", "10.76.0.2", "release"),
        ("orphan-reservation", "10.76.0.3", "release"),
        ("outside-range", "10.76.7.7", ""),
    }
    live = run_tool(*args, "release", "10.76.0.1", "--network", "")
    assert live.returncode == 1 and f"pod {bed.pods_ns}/web exists" in live.stderr
    repaired = run_tool(*args, "check", "--repair")
    assert repaired.returncode == 1 and "after repair: 2 problem(s) left" in repaired.stdout
    assert f"released 10.76.0.2 (container ctr-gone net1, pod {bed.pods_ns}/gone)" in repaired.stdout
    assert f"released the reservation of 10.76.0.3 (container ctr-web2 net1, pod {bed.pods_ns}/web2)" in (
        repaired.stdout
    )
    bed.pod("next")
    assert add(conf, bed.pods_ns, "next", "ctr-next") == "10.76.0.2/24"
    assert add(conf, bed.pods_ns, "next2", "ctr-next2") == "10.76.0.3/24"  # no longer blocked by the lone reservation
