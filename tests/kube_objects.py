"""Kubernetes objects the controller tests make through the API, posing as a kubelet and Multus would:
Nodes, Pods bound to them (with status and the Multus network-status annotation patched in), NADs; and a
way to run the real `whereabouts-controller` executable against them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kube_server import KubeAPIServer

CONTROLLER = (
    shutil.which("whereabouts-controller", path=os.path.dirname(sys.executable))
    or shutil.which("whereabouts-controller")
    or "whereabouts-controller"
)
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def create_node(kube: KubeAPIServer, name: str, *, ready: bool = True) -> dict:
    node = kube.request("POST", "/api/v1/nodes", {"metadata": {"name": name}})
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}]}
    kube.request_patch(f"/api/v1/nodes/{name}/status", {"status": status})
    assert isinstance(node, dict)
    return node


def delete_node(kube: KubeAPIServer, name: str) -> None:
    kube.request("DELETE", f"/api/v1/nodes/{name}")


def ensure_namespace(kube: KubeAPIServer, name: str) -> None:
    """The namespace and its `default` ServiceAccount: no controller-manager here makes it, and the
    ServiceAccount admission plugin refuses pods without it (or, with no token controller, its token)."""
    account = {"metadata": {"name": "default"}, "automountServiceAccountToken": False}
    for path, obj in (("/api/v1/namespaces", {"metadata": {"name": name}}),
                      (f"/api/v1/namespaces/{name}/serviceaccounts", account)):  # fmt: skip
        try:
            kube.request("POST", path, obj)
        except Exception as exc:
            if "409" not in str(exc):
                raise


def create_pod(
    kube: KubeAPIServer,
    namespace: str,
    name: str,
    *,
    node: str,
    phase: str = "Running",
    networks: str = "",
    network_status: list[dict] | None = None,
    controller: dict | None = None,
) -> dict:
    """A pod bound to `node`, its status patched to `phase` as the kubelet would, and (if given) the
    network-status annotation as Multus writes it after attaching; `controller` (an object as the API server
    returned it) becomes its controlling ownerReference, as a StatefulSet's pods have."""
    ensure_namespace(kube, namespace)
    annotations = {"k8s.v1.cni.cncf.io/networks": networks} if networks else {}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": annotations}
    if controller is not None:
        meta["ownerReferences"] = [owner_reference(controller)]
    pod = {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }
    created = kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    assert isinstance(created, dict)
    set_pod_phase(kube, namespace, name, phase)
    if network_status is not None:
        annotate_network_status(kube, namespace, name, network_status)
    return created


def owner_reference(obj: dict) -> dict:
    """The controlling ownerReference naming `obj`."""
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def create_statefulset(kube: KubeAPIServer, namespace: str, name: str) -> dict:
    """A StatefulSet object only: no controller-manager runs here to make its pods (tests make them)."""
    ensure_namespace(kube, namespace)
    labels = {"app": name}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    spec = {"serviceName": name, "replicas": 1, "selector": {"matchLabels": labels}, "template": template}
    body = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}, "spec": spec}
    created = kube.request("POST", f"/apis/apps/v1/namespaces/{namespace}/statefulsets", body)
    assert isinstance(created, dict)
    return created


def delete_statefulset(kube: KubeAPIServer, namespace: str, name: str) -> None:
    kube.request("DELETE", f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}")


def set_pod_phase(kube: KubeAPIServer, namespace: str, name: str, phase: str) -> None:
    kube.request_patch(f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": {"phase": phase}})


def annotate_network_status(kube: KubeAPIServer, namespace: str, name: str, status: list[dict]) -> None:
    body = {"metadata": {"annotations": {NETWORK_STATUS: json.dumps(status)}}}
    kube.request_patch(f"/api/v1/namespaces/{namespace}/pods/{name}", body)


def network_status(nad: str, interface: str, ips: list[str]) -> dict:
    """One entry of Multus's network-status annotation (`nad` is '<namespace>/<name>')."""
    return {"name": nad, "interface": interface, "ips": ips, "mac": "02:00:00:00:00:01", "default": False}


def delete_pod(kube: KubeAPIServer, namespace: str, name: str, *, grace: int = 0) -> None:
    """With grace 0 the pod is gone at once (no kubelet here to finish a graceful deletion); with more,
    it stays, terminating, with its deletionTimestamp set."""
    kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", {"gracePeriodSeconds": grace})


def create_nad(kube: KubeAPIServer, namespace: str, name: str, config: dict[str, Any]) -> dict:
    ensure_namespace(kube, namespace)
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": json.dumps(config)},
    }
    path = f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions"
    created = kube.request("POST", path, nad)
    assert isinstance(created, dict)
    return created


def events(kube: KubeAPIServer, namespace: str) -> list[dict]:
    reply = kube.request("GET", f"/api/v1/namespaces/{namespace}/events")
    assert isinstance(reply, dict)
    return reply["items"]


def controller_kubeconfig(kube: KubeAPIServer, path: Path, namespace: str) -> Path:
    """The controllers' kubeconfig: the kube-system/whereabouts-controller service account (RBAC from
    deploy/base/rbac/controller.yaml), pools in `namespace`."""
    return kube.kubeconfig(path, token=kube.controller_token, namespace=namespace)


def run_controller(kubeconfig: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed `whereabouts-controller` executable, as a CronJob or a test would run it."""
    cmd = [CONTROLLER, *args[:1], f"--kubeconfig={kubeconfig}", *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
