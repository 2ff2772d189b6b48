"""Running beside the Go plugin on a real kube-apiserver, its objects written as it writes them: reservations
of every Go version (v0.7 and later record no container ID, 0.5 and earlier no interface) released by our DEL,
and a reservation of ours that the Go plugin's DEL deletes by name (after its own ADD lost the address to us)
recreated by the node daemon instead of being handed out twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_objects import create_pod, delete_pod
from kube_server import KubeAPIServer
from support import netconf, run_cni, running_daemon

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"
PODS = "go-beside"


def go_objects(kube: KubeAPIServer, namespace: str, cidr: str, name: str, entries: dict[str, Any]) -> None:
    """An IPPool and its reservations as the Go plugin writes them: `entries` offset -> (the pool entry's
    container ID, podref, ifname; the reservation's spec, as that Go version writes it)."""
    allocations = {offset: {"id": cid, "podref": pod, "ifname": ifname}
                   for offset, (cid, pod, ifname, _) in entries.items()}  # fmt: skip
    pool = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"range": cidr, "allocations": allocations}}  # fmt: skip
    kube.request("POST", f"{GROUP_PATH}/{namespace}/ippools", pool)
    base = cidr.rsplit(".", 1)[0]
    for offset, (_, _, _, spec) in entries.items():
        obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
               "metadata": {"name": f"{base}.{offset}"}, "spec": spec}  # fmt: skip
        kube.request("POST", f"{GROUP_PATH}/{namespace}/overlappingrangeipreservations", obj)


@pytest.fixture(params=["in process", "daemon"])
def daemon_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "in process":
        yield {}
        return
    sock = str(tmp_path / "plugin.sock")
    with running_daemon(sock, log=tmp_path / "daemon.log"):
        yield {"WHEREABOUTS_SOCKET": sock}


def test_del_releases_the_reservations_go_plugins_wrote_without_a_container_id_or_interface(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    """Pods the Go plugin attached, deleted after this plugin took its place: each DEL releases the pool entry
    and its reservation, whichever Go version wrote it (before: a reservation naming no container or no
    interface was left behind, its address blocked for good). One naming another container is left alone."""
    go_objects(kube, kube_namespace, "10.97.0.0/24", "10.97.0.0-24", {
        "1": ("go-1", "ns/p1", "net1", {"podref": "ns/p1", "ifname": "net1"}),  # v0.7 and later
        "2": ("go-2", "ns/p2", "net1", {"containerid": "go-2", "podref": "ns/p2"}),  # 0.5 and earlier
        "3": ("go-3", "ns/p3", "net1", {"podref": "ns/p3"}),  # neither
        "4": ("go-4", "ns/p4", "net1", {"containerid": "other", "podref": "ns/p4", "ifname": "net1"}),
        "5": ("go-5", "ns/p5", "net1", {"podref": "ns/p5", "ifname": "net2"}),
    })  # fmt: skip
    conf = netconf(tmp_path, kubernetes={"kubeconfig": str(plugin_kubeconfig)}, range="10.97.0.0/24")
    for n in range(1, 6):
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p{n}"
        done = run_cni("DEL", conf, container_id=f"go-{n}", ifname="net1", cni_args=args, env=daemon_env)
        assert done.returncode == 0, done.stdout + done.stderr
    assert set(kube.objects(kube_namespace, "overlappingrangeipreservations")) == {"10.97.0.4", "10.97.0.5"}


def test_a_reservation_the_go_plugins_del_deletes_under_a_held_address_is_recreated(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The Go plugin's ADD that lost an address to us (its reservation's create refused) fails, and its DEL
    deletes the reservation by name: ours. The daemon, which did not release it and whose attachment still
    holds the address, keeps it in its copy and creates it again: the next ADD does not get it (before: freed in
    the copy, handed out twice). Once the pod is gone (the reconciler's case), a deletion stands; so does this
    plugin's own DEL."""
    sock = str(tmp_path / "plugin.sock")
    conf = netconf(tmp_path, kubernetes={"kubeconfig": str(plugin_kubeconfig)}, range="10.98.0.0/24")
    env = {"WHEREABOUTS_SOCKET": sock}
    reservations = f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations"

    def add(pod: str) -> str:
        create_pod(kube, PODS, pod, node="node-a")
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={PODS};K8S_POD_NAME={pod}"
        done = run_cni("ADD", conf, container_id=f"ctr-{pod}", ifname="net1", cni_args=args, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.addresses()[0]

    def reserved(name: str, wait: float = 10.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + wait
        while (found := kube.objects(kube_namespace, "overlappingrangeipreservations").get(name)) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        return found

    with running_daemon(sock, log=tmp_path / "daemon.log"):
        assert add("a") == "10.98.0.1/24"
        kube.request("DELETE", f"{reservations}/10.98.0.1")  # as the Go plugin's DEL does: by name, no condition
        time.sleep(1.0)  # the daemon's watch has seen it
        assert add("b") == "10.98.0.2/24", "an address held twice"
        back = reserved("10.98.0.1")
        assert back is not None and back["spec"]["containerid"] == "ctr-a"
        assert "recreated" in (tmp_path / "daemon.log").read_text()

        delete_pod(kube, PODS, "b")  # gone: the reconciler releases its address, and that stands
        kube.request("DELETE", f"{reservations}/10.98.0.2")
        time.sleep(1.0)
        assert reserved("10.98.0.2", wait=1.0) is None
        assert add("c") == "10.98.0.2/24"

        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={PODS};K8S_POD_NAME=a"
        assert run_cni("DEL", conf, container_id="ctr-a", ifname="net1", cni_args=args, env=env).returncode == 0
        time.sleep(1.0)
        assert reserved("10.98.0.1", wait=1.0) is None  # its own DEL: not recreated


def test_a_restarted_daemon_keeps_a_live_pods_entry_whose_reservation_the_go_plugin_deleted(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The Go plugin's DEL deletes our reservation by name while no daemon watches (a rolling update): the
    restarted daemon's comparison finds our entry without its reservation. A daemon killed mid-DEL leaves the
    same, so the entry was removed and the live pod's address handed to the next ADD (held twice); the entry
    is removed only once its pod is gone."""
    sock = str(tmp_path / "plugin.sock")
    conf = netconf(tmp_path, kubernetes={"kubeconfig": str(plugin_kubeconfig)}, range="10.98.0.0/24")
    reservations = f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations"

    def add(pod: str) -> str:
        create_pod(kube, PODS, pod, node="node-a")
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={PODS};K8S_POD_NAME={pod}"
        done = run_cni("ADD", conf, container_id=f"ctr-{pod}", ifname="net1", cni_args=args,
                       env={"WHEREABOUTS_SOCKET": sock})  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.addresses()[0]

    def entries() -> dict[str, Any]:
        pool = kube.objects(kube_namespace, "ippools").get("10.98.0.0-24") or {}
        return (pool.get("spec") or {}).get("allocations") or {}

    with running_daemon(sock, log=tmp_path / "daemon1.log"):
        assert add("left-a") == "10.98.0.1/24"
        deadline = time.monotonic() + 10
        while "1" not in entries():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    kube.request("DELETE", f"{reservations}/10.98.0.1")  # pod left-a lives and still uses 10.98.0.1
    with running_daemon(sock, log=tmp_path / "daemon2.log"):
        assert add("left-b") == "10.98.0.2/24"  # the first call serving the pool starts its comparison
        time.sleep(3.0)  # (more than a mirror round)
        assert "1" in entries()
        assert add("left-c") == "10.98.0.3/24"
