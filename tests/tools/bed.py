"""A Kubernetes test bed for the tools: the real API server, pools in the test's namespace written by the real plugin
(as the plugin's service account) or in the Go plugin's format directly, pods in a namespace of their own, and
kubectl-whereabouts run as the cluster admin (an operator's kubeconfig, its context in the pods' namespace)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tool import Ran, run_tool

from kube_objects import create_pod, delete_pod
from kube_server import KubeAPIServer
from support import netconf, run_cni

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"


@dataclass
class Bed:
    kube: KubeAPIServer
    pools_ns: str
    tmp_path: Path
    plugin_kubeconfig: Path

    def __post_init__(self) -> None:
        self.pods_ns = f"{self.pools_ns}-pods"
        self.admin = self.kube.kubeconfig(self.tmp_path / "admin.kubeconfig", token=self.kube.admin_token,
                                          namespace=self.pods_ns)  # fmt: skip

    def tool(self, *args: str) -> Ran:
        return run_tool("--kubeconfig", str(self.admin), "--pool-namespace", self.pools_ns, *args)

    def conf(self, cidr: str, **ipam: Any) -> dict[str, Any]:
        return netconf(self.tmp_path, kubernetes={"kubeconfig": str(self.plugin_kubeconfig)}, range=cidr, **ipam)

    def pod(self, name: str, node: str = "node-a") -> str:
        create_pod(self.kube, self.pods_ns, name, node=node)
        return f"{self.pods_ns}/{name}"

    def delete_pod(self, name: str) -> None:
        delete_pod(self.kube, self.pods_ns, name)

    def add(self, conf: dict[str, Any], pod: str, container: str, ifname: str = "net1", node: str = "node-a") -> str:
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.pods_ns};K8S_POD_NAME={pod}"
        done = run_cni("ADD", conf, container_id=container, ifname=ifname, cni_args=args, env={"NODENAME": node})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.addresses()[0]

    def go_pool(self, name: str, cidr: str, entries: dict[str, tuple[str, str, str]]) -> None:
        """An IPPool as the Go plugin writes it: `entries` offset -> (container ID, podref, ifname)."""
        allocations = {k: {"id": c, "podref": p, "ifname": i} for k, (c, p, i) in entries.items()}
        pool = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
                "spec": {"range": cidr, "allocations": allocations}}  # fmt: skip
        self.kube.request("POST", f"{GROUP_PATH}/{self.pools_ns}/ippools", pool)

    def go_reservation(self, name: str, containerid: str, podref: str, ifname: str = "net1") -> None:
        """An OverlappingRangeIPReservation as the Go plugin writes it: no labels, no address."""
        spec = {"containerid": containerid, "podref": podref, "ifname": ifname}
        obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
               "metadata": {"name": name}, "spec": spec}  # fmt: skip
        self.kube.request("POST", f"{GROUP_PATH}/{self.pools_ns}/overlappingrangeipreservations", obj)

    def errors(self) -> list[dict[str, Any]]:
        """What `check` finds wrong here (NADs are cluster-wide: other tests' may add warnings, never errors)."""
        done = self.tool("check", "-o", "json").ok()
        return [f for f in json.loads(done.stdout)["items"] if f["severity"] == "error"]

    def held(self) -> set[tuple[str, str, str]]:
        """(pool, offset, container ID) of every allocation."""
        pools = self.kube.objects(self.pools_ns, "ippools")
        return {(name, offset, e["id"]) for name, pool in pools.items()
                for offset, e in (pool["spec"].get("allocations") or {}).items()}  # fmt: skip

    def reservations(self) -> set[str]:
        return set(self.kube.objects(self.pools_ns, "overlappingrangeipreservations"))


def write_slice_pool(
    kube: KubeAPIServer, namespace: str, name: str, cidr: str, size: str, listing: list[tuple[str, str]]
) -> None:
    """A NodeSlicePool as the Go controller writes it: spec, then status through its subresource."""
    path = f"{GROUP_PATH}/{namespace}/nodeslicepools"
    current = kube.objects(namespace, "nodeslicepools").get(name)
    body = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"range": cidr, "sliceSize": size}}  # fmt: skip
    obj = kube.request("POST", path, body) if current is None else kube.request(
        "PUT", f"{path}/{name}", {**current, "spec": body["spec"]})  # fmt: skip
    assert isinstance(obj, dict)
    obj["status"] = {"allocations": [{"nodeName": node, "sliceRange": cidr} if node else {"sliceRange": cidr}
                                     for node, cidr in listing]}  # fmt: skip
    kube.request("PUT", f"{path}/{name}/status", obj)
