"""The install manifests: the kustomize base and the example overlay build with the kubectl the tests use,
the overlay moves everything (RBAC subjects included) into its namespace and swaps the image, and the API
server accepts every object of the base (a server-side dry run: nothing is created)."""

from __future__ import annotations

import subprocess

import yaml

from kube_server import REPO, KubeAPIServer


def build(kube: KubeAPIServer, path: str) -> list[dict]:
    out = subprocess.run([str(kube.tools / "kubectl"), "kustomize", str(REPO / path)], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_base_has_every_part_of_the_install(kube: KubeAPIServer) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in build(kube, "deploy/base")}
    assert {("CustomResourceDefinition", f"{p}.whereabouts.cni.cncf.io")
            for p in ("ippools", "overlappingrangeipreservations", "nodeslicepools")} <= kinds  # fmt: skip
    assert {("ServiceAccount", "whereabouts"), ("ServiceAccount", "whereabouts-controller"),
            ("DaemonSet", "whereabouts"), ("Deployment", "whereabouts-controller"),
            ("ConfigMap", "whereabouts-config")} <= kinds  # fmt: skip


def test_example_overlay_moves_everything_into_its_namespace(kube: KubeAPIServer) -> None:
    docs = build(kube, "deploy/overlays/example")
    namespaced = [d for d in docs if d["kind"] not in ("CustomResourceDefinition", "ClusterRole",
                                                       "ClusterRoleBinding", "Namespace")]  # fmt: skip
    assert {d["metadata"].get("namespace") for d in namespaced} == {"whereabouts"}
    subjects = [s for d in docs if d["kind"].endswith("Binding") for s in d["subjects"]]
    assert {s["namespace"] for s in subjects} == {"whereabouts"}
    images = {c["image"] for d in docs if d["kind"] in ("DaemonSet", "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {"registry.example.com/whereabouts:0.1.0"}


def test_the_api_server_accepts_the_base(kube: KubeAPIServer) -> None:
    out = kube.kubectl("apply", "-k", str(REPO / "deploy/base"), "--dry-run=server")
    assert "daemonset.apps/whereabouts" in out and "deployment.apps/whereabouts-controller" in out
