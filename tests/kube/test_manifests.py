"""The install manifests: the kustomize base and the overlays build with the kubectl the tests use, the
example overlay moves everything (RBAC subjects included) into its namespace and swaps the image, the k3s and
OpenShift overlays move the CNI dirs, the documented uninstall keeps the pools, the API
server accepts every object of the base (a server-side dry run: nothing is created), and the controller's
schedule ConfigMap, present or not, with either key or both, gives a pod that starts on the right schedule."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_server import REPO, KubeAPIServer
from whereabouts.controller.cron import Schedule
from whereabouts.node import install


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


# The schedule's ConfigMap as the controller Deployment mounts it, for each way a cluster may hold it: none at
# all, the Go plugin's key, OpenShift's key, both, and the base's own. (expected schedule, ConfigMap data)
CONFIGMAPS = [
    ("30 4 * * *", None),
    ("*/5 * * * *", {"cron-expression": "*/5 * * * *"}),
    ("@hourly", {"reconciler_cron_expression": "@hourly"}),
    ("@hourly", {"cron-expression": "*/5 * * * *", "reconciler_cron_expression": "@hourly"}),
    ("30 4 * * *", {"other-key": "x"}),
]


@pytest.mark.parametrize(("expected", "data"), CONFIGMAPS, ids=["no-configmap", "go-key", "openshift-key", "both",
                                                                 "neither-key"])  # fmt: skip
def test_the_controller_starts_and_reads_the_schedule_whatever_the_configmap_holds(
    kube: KubeAPIServer, tmp_path: Path, expected: str, data: dict[str, str] | None
) -> None:
    deployment = next(d for d in build(kube, "deploy/base") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "cron-schedule"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "cron-schedule"]
    project(volume["configMap"], data, tmp_path)
    command = container["command"]
    files = [command[i + 1] for i, arg in enumerate(command) if arg == "--cron-file"]
    assert files and all(f.startswith(mount["mountPath"] + "/") for f in files), "the schedule files are mounted"
    local = [str(tmp_path / f.removeprefix(mount["mountPath"] + "/")) for f in files]
    assert Schedule(local).current().text == expected


def test_the_base_configmap_gives_the_default_schedule(kube: KubeAPIServer, tmp_path: Path) -> None:
    docs = build(kube, "deploy/base")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "whereabouts-config")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "cron-schedule"]
    project(volume["configMap"], configmap["data"], tmp_path)
    assert Schedule([str(tmp_path / "reconciler_cron_expression"), str(tmp_path / "config")]).current().text == (
        "30 4 * * *"
    )


def project(source: dict[str, Any], data: dict[str, str] | None, directory: Path) -> None:
    """What the kubelet writes for a configMap volume (pkg/volume/configmap's makePayload): every key, or the
    listed `items`; a missing ConfigMap, or a listed key it lacks, fails the pod's start unless `optional`."""
    if data is None:
        assert source.get("optional") is True, "without the ConfigMap the pod would not start"
        return
    for item in source.get("items") or [{"key": key, "path": key} for key in data]:
        if item["key"] not in data:
            assert source.get("optional") is True, f"without the key {item['key']} the pod would not start"
            continue
        (directory / item["path"]).write_text(data[item["key"]])


# Where each layout keeps CNI: (kustomization, bin dir, conf dir). The overlays must move the DaemonSet's mount,
# not add one: install-cni writes the paths it sees, and the plugin on the host must find them there.
LAYOUTS = [
    ("deploy/base", "/opt/cni/bin", "/etc/cni/net.d"),
    ("deploy/overlays/k3s", "/var/lib/rancher/k3s/data/current/bin", "/var/lib/rancher/k3s/agent/etc/cni/net.d"),
    ("deploy/overlays/openshift", "/var/lib/cni/bin", "/etc/kubernetes/cni/net.d"),
]


@pytest.mark.parametrize(("path", "bin_dir", "conf_dir"), LAYOUTS, ids=[p.rpartition("/")[2] for p, _, _ in LAYOUTS])
def test_each_layout_mounts_its_cni_dirs_at_their_host_paths_and_tells_install_cni(
    kube: KubeAPIServer, path: str, bin_dir: str, conf_dir: str
) -> None:
    base = daemonset(build(kube, "deploy/base"))["spec"]["template"]["spec"]
    pod = daemonset(build(kube, path))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert (env["CNI_BIN_DIR"], mounts["cni-bin"], host["cni-bin"]) == (bin_dir, bin_dir, bin_dir)
    assert (env["CNI_CONF_DIR"], mounts["cni-conf"], host["cni-conf"]) == (conf_dir, conf_dir, conf_dir)
    assert len(container["volumeMounts"]) == len(base["containers"][0]["volumeMounts"]), "moved, not added"
    assert len(pod["volumes"]) == len(base["volumes"])
    assert len(set(mounts.values())) == len(mounts)


@pytest.mark.parametrize("path", ["deploy/overlays/k3s", "deploy/overlays/openshift"])
def test_the_api_server_accepts_each_layout(kube: KubeAPIServer, path: str) -> None:
    out = kube.kubectl("apply", "-k", str(REPO / path), "--dry-run=server")
    assert "daemonset.apps/whereabouts" in out


@pytest.mark.parametrize("path", ["deploy/base", "deploy/overlays/example", "deploy/overlays/k3s"])
def test_the_documented_uninstall_deletes_all_but_the_crds_and_the_pools_namespace(
    kube: KubeAPIServer, path: str
) -> None:
    """docs/install.md's `kubectl delete -k ... -l 'whereabouts.cni.cncf.io/uninstall!=keep'`: the pools are kept
    (deleting a CRD, or the namespace they live in, would delete every pool), everything else goes."""
    out = kube.kubectl("delete", "-k", str(REPO / path), "-l", "whereabouts.cni.cncf.io/uninstall!=keep",
                       "--dry-run=client")  # fmt: skip
    deleted = {(line.split(".")[0].split()[0], line.split('"')[1]) for line in out.splitlines() if "deleted" in line}
    everything = {(d["kind"].lower(), d["metadata"]["name"]) for d in build(kube, path)}
    crds = ("ippools", "overlappingrangeipreservations", "nodeslicepools")
    kept = {("customresourcedefinition", f"{p}.whereabouts.cni.cncf.io") for p in crds}
    if path.endswith("example"):
        kept.add(("namespace", "whereabouts"))  # where the overlay keeps the pools
    assert deleted == everything - kept


def daemonset(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] == "DaemonSet"]
    return found


def test_the_api_server_configmap_is_optional_and_reaches_every_container(kube: KubeAPIServer) -> None:
    """docs/install.md step 2: clusters whose host-network pods cannot use the `kubernetes` Service say where the
    API server is in whereabouts-api-server; without that ConfigMap the pods start as before."""
    for doc in build(kube, "deploy/base"):
        if doc["kind"] in ("DaemonSet", "Deployment"):
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert {"configMapRef": {"name": "whereabouts-api-server", "optional": True}} in container["envFrom"]


@pytest.mark.parametrize("path", [p for p, _, _ in LAYOUTS], ids=[p.rpartition("/")[2] for p, _, _ in LAYOUTS])
def test_install_cni_serves_metrics_on_the_port_the_daemonset_declares(
    kube: KubeAPIServer, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DaemonSet declares the port `metrics`, gives install-cni the pod's IP (the node's: host network) and
    that port, and tells a Prometheus that discovers pods by annotation where to scrape; health stays local."""
    template = daemonset(build(kube, path))["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WHEREABOUTS_METRICS_ADDRESS"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"]) == env["WHEREABOUTS_METRICS_PORT"]["value"]
    for name, value in (("WHEREABOUTS_METRICS_ADDRESS", "10.0.0.7"), ("WHEREABOUTS_METRICS_PORT", None)):
        monkeypatch.setenv(name, value or env[name]["value"])  # what the kubelet sets
    args = install.parser().parse_args([])
    assert (args.metrics_address, args.metrics_port) == ("10.0.0.7", port["containerPort"])
    assert container["livenessProbe"]["httpGet"]["host"] == args.health_address == "127.0.0.1"
    assert container["livenessProbe"]["httpGet"]["port"] == args.health_port != args.metrics_port


def test_the_controller_is_scraped_where_it_serves_its_metrics(kube: KubeAPIServer) -> None:
    (deployment,) = [d for d in build(kube, "deploy/base") if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    command = container["command"]
    served = int(command[command.index("--metrics-port") + 1])
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port["containerPort"]) == str(served)
