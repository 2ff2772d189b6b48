"""Running beside the Go plugin on a real kube-apiserver, its objects written as it writes them: reservations
of every Go version (v0.7 and later record no container ID, 0.5 and earlier no interface) released by our DEL,
and a reservation of ours that the Go plugin's DEL deletes by name (after its own ADD lost the address to us)
recreated by the node daemon instead of being handed out twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_server import KubeAPIServer
from support import netconf, run_cni, running_daemon

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"


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

