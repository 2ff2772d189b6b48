"""Whereabouts installed as users install it, on the real node, with real pods made by the kubelet.

The image is built here as a docker-archive tar (scripts/build-image.sh) and imported; `kubectl apply -k`
installs an overlay of deploy/base that only says where this node keeps its CNI dirs and how pods reach the
API server (it advertises 127.0.0.1: no Service endpoints). The node's CNI config is the reference `bridge`
plugin with `ipam.type: whereabouts` on the kubernetes datastore, through the flat file install-cni writes.
Before the install the cluster looks as the Go plugin left it: its CRDs, and an IPPool with addresses held.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from realnode.configs import (
    BUSYBOX_IMAGE,
    POD_BRIDGE,
    POD_SUBNET,
    bridge_host_local,
    busybox_deployment,
    busybox_statefulset,
)
from realnode.node import RealNode, pod_ready, wait_for
from realnode.processes import stop_standin
from whereabouts.node.relay import note_of

pytestmark = [pytest.mark.realnode, pytest.mark.skipif(os.geteuid() != 0, reason="a real node needs root")]

REPO = Path(__file__).resolve().parents[2]
RANGE, GATEWAY = "10.198.0.0/24", "10.198.0.1"
POOL = "10.198.0.0-24"
BRIDGE = "wa-deploy0"
GROUP = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/kube-system"
GO_HELD = {"2": "go-a", "3": "go-b", "6": "go-c"}  # offsets the Go plugin handed out before the switch
GO_NODE = "go-node"  # where the Go plugin's pods run (a Node object only: no kubelet of it here)
HOST_DIRS = (Path("/run/whereabouts"), Path("/var/lib/cni/whereabouts"))  # the DaemonSet's hostPath dirs


def build_image() -> tuple[Path, str]:
    out = subprocess.run(["bash", str(REPO / "scripts/build-image.sh")], check=True, capture_output=True, text=True)
    tar = Path(out.stdout.strip().splitlines()[-1])
    with tarfile.open(tar) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    return tar, manifest[0]["RepoTags"][0]


def go_crds(directory: Path) -> Path:
    """The Go plugin's CRDs: the same schemas as ours without what we added (the atomic map of allocations,
    the optional nodeName of a free slice)."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in sorted((REPO / "deploy/base/crds").glob("*.yaml")):
        crd = yaml.safe_load(source.read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        spec.get("spec", {}).get("properties", {}).get("allocations", {}).pop("x-kubernetes-map-type", None)
        items = spec.get("status", {}).get("properties", {}).get("allocations", {}).get("items")
        if items:
            items["required"] = ["nodeName", "sliceRange"]
        (directory / source.name).write_text(yaml.safe_dump(crd))
    return directory


def overlay(directory: Path, node: RealNode, tag: str) -> Path:
    """deploy/base as this node needs it: its CNI dirs, the API server on loopback, the image built here, a
    service-account token the test can rotate, the reconciler every minute, quick leader election."""
    directory.mkdir(parents=True, exist_ok=True)
    api = [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
           {"name": "KUBERNETES_SERVICE_PORT", "value": str(node.port)}]  # fmt: skip
    ds = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/1/value", "value": str(node.cni_bin_dir)},
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/2/value", "value": str(node.cni_conf_dir)},
        *({"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": v} for v in api),
        {"op": "replace", "path": "/spec/template/spec/containers/0/volumeMounts/0/mountPath",
         "value": str(node.cni_bin_dir)},
        {"op": "replace", "path": "/spec/template/spec/containers/0/volumeMounts/1/mountPath",
         "value": str(node.cni_conf_dir)},
        {"op": "replace", "path": "/spec/template/spec/volumes/0/hostPath/path", "value": str(node.cni_bin_dir)},
        {"op": "replace", "path": "/spec/template/spec/volumes/1/hostPath/path", "value": str(node.cni_conf_dir)},
        {"op": "add", "path": "/spec/template/spec/automountServiceAccountToken", "value": False},
        {"op": "add", "path": "/spec/template/spec/volumes/-",
         "value": {"name": "token", "secret": {"secretName": "whereabouts-token"}}},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
         "value": {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}},
    ]  # fmt: skip
    command = ["whereabouts-controller", "all", "--skip", "pod-cleanup", "--cron-file", "/cron-schedule/config",
               "--identity", "$(POD_NAME)", "--metrics-port", "0", "--lease-duration", "6", "--renew-deadline", "4",
               "--retry-period", "1"]  # fmt: skip
    controller = [
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},  # pods cannot reach the API here
        *({"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": v} for v in api),
        {"op": "replace", "path": "/spec/template/spec/containers/0/command", "value": command},
        {"op": "remove", "path": "/spec/template/spec/containers/0/livenessProbe"},  # port 0: two on one host
        {"op": "remove", "path": "/spec/template/spec/containers/0/readinessProbe"},
        {"op": "remove", "path": "/spec/template/spec/containers/0/ports"},
    ]  # fmt: skip
    config = [{"op": "replace", "path": "/data/cron-expression", "value": "* * * * *"}]
    token = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
             "metadata": {"name": "whereabouts-token", "namespace": "kube-system",
                          "annotations": {"kubernetes.io/service-account.name": "whereabouts"}}}  # fmt: skip
    for name, ops in (("ds.yaml", ds), ("controller.yaml", controller), ("config.yaml", config)):
        (directory / name).write_text(yaml.safe_dump(ops))
    (directory / "token.yaml").write_text(yaml.safe_dump(token))
    name, _, version = tag.rpartition(":")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "bases": [os.path.relpath(REPO / "deploy/base", directory)],
        "resources": ["token.yaml"],
        "images": [{"name": "localhost/whereabouts", "newName": name, "newTag": version}],
        "patchesJson6902": [
            {"target": {"group": "apps", "version": "v1", "kind": "DaemonSet", "name": "whereabouts"},
             "path": "ds.yaml"},
            {"target": {"group": "apps", "version": "v1", "kind": "Deployment", "name": "whereabouts-controller"},
             "path": "controller.yaml"},
            {"target": {"version": "v1", "kind": "ConfigMap", "name": "whereabouts-config"}, "path": "config.yaml"},
        ],
    }  # fmt: skip
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def network(node: RealNode, **extra: Any) -> dict[str, Any]:
    """The node's network: `extra` ipam keys (e.g. sticky) on top of the plain config."""
    ipam = {"type": "whereabouts", "range": RANGE, "gateway": GATEWAY,
            "configuration_path": str(node.cni_conf_dir / "whereabouts.d"), **extra}  # fmt: skip
    plugin = {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "ipam": ipam}
    return {"cniVersion": "0.4.0", "name": "wa-deploy", "plugins": [plugin]}


def pool(node: RealNode) -> dict[str, dict[str, str]]:
    obj = node.get("-n", "kube-system", "ippools.whereabouts.cni.cncf.io", POOL)
    return obj["spec"].get("allocations") or {}


def ours(node: RealNode) -> dict[str, dict[str, str]]:
    return {k: v for k, v in pool(node).items() if k not in GO_HELD}


def reservations(node: RealNode) -> set[str]:
    items = node.get("-n", "kube-system", "overlappingrangeipreservations.whereabouts.cni.cncf.io")["items"]
    return {item["metadata"]["name"] for item in items}


def daemon_pod(node: RealNode, *, wait: bool = False) -> dict[str, Any]:
    """The DaemonSet's pod on this node (the Go plugin's node gets one too, that never runs). With `wait`,
    none yet is an empty pod (the DaemonSet controller may not have made it yet: a probe waits for it)."""
    pods = [p for p in node.pods("kube-system", "app.kubernetes.io/component=node")
            if p["spec"].get("nodeName") == node.node_name]  # fmt: skip
    if wait and not pods:
        return {}
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def scale(node: RealNode, name: str, replicas: int) -> list[dict[str, Any]]:
    node.kubectl("scale", "deployment", name, f"--replicas={replicas}")
    if replicas:
        return node.wait_pods("default", f"app={name}", replicas)
    node.wait_pods_gone("default", f"app={name}")
    return []


def wait_released(node: RealNode) -> None:
    """The kubelet's DELs (one per sandbox it tore down) leave none of our addresses held."""
    wait_for("every address of ours released", lambda: not ours(node), 60)


def seed_go_world(node: RealNode, tmp: Path) -> None:
    """What a cluster that ran the Go plugin has: its CRDs, its pool with three addresses held by pods that
    exist (on another node, whose kubelet does not run here: its pods tolerate that, so neither the pod GC
    nor eviction removes them), and their reservations."""
    node.kubectl("apply", "-f", str(go_crds(tmp / "go-crds")))
    node.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    node.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": GO_NODE}})
    node.kubectl("create", "namespace", "go-world")
    wait_for("go-world's default ServiceAccount", lambda: node.get("-n", "go-world", "serviceaccount", "default"), 60)
    for name in GO_HELD.values():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "go-world"},
               "spec": {"nodeName": GO_NODE, "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "c", "image": BUSYBOX_IMAGE}]}}  # fmt: skip
        node.apply(pod)
    allocations = {k: {"id": f"ctr-{v}", "podref": f"go-world/{v}", "ifname": "eth0"} for k, v in GO_HELD.items()}
    node.apply({"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                "metadata": {"name": POOL, "namespace": "kube-system"},
                "spec": {"range": RANGE, "allocations": allocations}})  # fmt: skip
    for offset, name in GO_HELD.items():
        node.apply(
            {
                "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
                "kind": "OverlappingRangeIPReservation",
                "metadata": {"name": f"10.198.0.{offset}", "namespace": "kube-system"},
                "spec": {"containerid": f"ctr-{name}", "podref": f"go-world/{name}", "ifname": "eth0"},
            }
        )


@pytest.fixture(scope="module")
def installed(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    node, tmp = real_node, tmp_path_factory.mktemp("deploy")
    existed = {path: path.exists() for path in HOST_DIRS}
    try:
        tar, tag = build_image()
        node.import_image(tar)
        seed_go_world(node, tmp)
        node.write_cni_config(network(node))
        started = time.monotonic()
        node.kubectl("apply", "-k", str(overlay(tmp / "overlay", node, tag)))
        wait_for("install-cni ready", lambda: _ready(daemon_pod(node, wait=True)), 180)
        node.timings["install"] = time.monotonic() - started
        print(f"\napply -k to install-cni ready: {node.timings['install']:.1f} s ({tag})")
        yield node
    finally:
        uninstall(node, existed)


def uninstall(node: RealNode, existed: dict[Path, bool]) -> None:
    """Take down what the tests and the install made, before the node itself goes (its teardown would
    find DaemonSet pods on a node no kubelet runs, and the host's hostPath dirs)."""
    # pods bound to a node no kubelet runs never finish a graceful deletion (the Go plugin's pods, and the
    # DaemonSet's pod there): the node goes first, so that nothing is scheduled there again
    node.kubectl("delete", "node", GO_NODE, "--ignore-not-found")
    node.kubectl("delete", "pods", "-A", f"--field-selector=spec.nodeName={GO_NODE}", "--grace-period=0", "--force")
    node.kubectl("delete", "deployments", "--all", "-n", "default", "--wait=true")
    node.wait_pods_gone("default")
    node.kubectl("delete", "deployment", "whereabouts-controller", "-n", "kube-system", "--ignore-not-found")
    node.kubectl("delete", "daemonset", "whereabouts", "-n", "kube-system", "--ignore-not-found")
    wait_for("the DaemonSet pod gone", lambda: not node.pods("kube-system", "app.kubernetes.io/name=whereabouts"), 120)
    node.write_cni_config(bridge_host_local(bridge=POD_BRIDGE, subnet=POD_SUBNET, data_dir=node.base / "host-local"))
    stop_standin(HOST_DIRS[0])  # one a call started while no daemon listened: stopped by its pid
    for path, was in existed.items():
        if not was:
            shutil.rmtree(path, ignore_errors=True)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def test_install_cni_puts_the_plugin_and_its_files_on_the_host(installed: RealNode) -> None:
    node = installed
    launcher = node.cni_bin_dir / "whereabouts-python"  # the compiled relay is `whereabouts`, execing this one
    first = launcher.read_text().splitlines()[0]
    bundle = Path(first[2:].split()[0]).parents[1]
    assert bundle.parent == node.cni_bin_dir / "whereabouts.d" and (bundle / "VERSION").exists()
    version = (bundle / "VERSION").read_text().strip()
    assert f"(bundle {version}), installed by" in note_of((node.cni_bin_dir / "whereabouts").read_bytes())
    files = node.cni_conf_dir / "whereabouts.d"
    flat = json.loads((files / "whereabouts.conf").read_text())
    assert flat["datastore"] == "kubernetes" and flat["kubernetes"]["kubeconfig"] == str(
        files / "whereabouts.kubeconfig"
    )
    assert (files / "nodename").read_text().strip() == node.node_name
    assert (files / "whereabouts.kubeconfig").stat().st_mode & 0o777 == 0o600
    kubeconfig = json.loads((files / "whereabouts.kubeconfig").read_text())  # JSON: read without PyYAML
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{node.port}"
    # the installed plugin runs on the host with nothing from the host's Python
    out = subprocess.run([str(bundle / "bin/python3.11"), "-IS", "-c", "import sys, ssl; print(sys.prefix)"],
                         capture_output=True, text=True, check=True, env={})  # fmt: skip
    assert out.stdout.strip() == str(bundle)


def test_the_installed_plugin_starts_a_stand_in_from_its_bundle_while_no_daemon_listens(installed: RealNode) -> None:
    """The plugin as installed on the host (the compiled relay, the bundle's own Python with -IS): with nobody
    listening on its socket it serves the call and starts the stand-in daemon from the bundle, which serves the
    next call (docs/install.md). A socket dir of the test's own: the DaemonSet's daemon keeps serving."""
    node, run = installed, Path(tempfile.mkdtemp(prefix="standin-", dir="/tmp"))
    try:
        ipam = {
            "type": "whereabouts",
            "range": "10.199.0.0/29",
            "datastore": "local",
            "local_data_dir": str(run),
            "configuration_path": str(run / "none"),
            "log_file": str(run / "calls.log"),
            "log_level": "verbose",
        }
        conf = json.dumps({"cniVersion": "1.0.0", "name": "standin", "ipam": ipam})
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x",
               "CNI_PATH": "/x", "WHEREABOUTS_SOCKET": str(run / "p.sock"), "WHEREABOUTS_STANDIN": "30"}  # fmt: skip

        def add(container: str) -> str:
            done = subprocess.run([str(node.cni_bin_dir / "whereabouts")], input=conf, capture_output=True, text=True,
                                  env={**env, "CNI_CONTAINERID": container}, timeout=60)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            return str(json.loads(done.stdout)["ips"][0]["address"])

        first = add("s1")
        pidfile = run / "p.sock.standin.pid"
        listening, log = run / "p.sock.standin", run / "p.sock.standin.log"
        try:
            wait_for("the stand-in", lambda: listening.exists() and pidfile.read_text().strip().isdigit(), 30)
        except TimeoutError as error:
            raise AssertionError(f"no stand-in: {log.read_text() if log.exists() else 'no log'}") from error
        pid = int(pidfile.read_text())
        second = add("s2")
        assert first != second and f"pid={pid} ADD" in (run / "calls.log").read_text()  # the stand-in served it
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert command[0].startswith(bytes(node.cni_bin_dir / "whereabouts.d")) and b"-I" in command, command
    finally:
        stop_standin(run, "p.sock")
        shutil.rmtree(run, ignore_errors=True)


def test_twenty_pods_get_distinct_addresses_reach_each_other_and_release_them(installed: RealNode) -> None:
    node = installed
    started = time.monotonic()
    node.apply(busybox_deployment("twenty", 20))
    pods = node.wait_pods("default", "app=twenty", 20, timeout=300)
    took = time.monotonic() - started
    print(f"\n20 pods Running {took:.1f} s after apply")
    addresses = [p["status"]["podIP"] for p in pods]
    assert len(set(addresses)) == 20
    assert all(ip_address(a) in ip_network(RANGE) and a != GATEWAY for a in addresses)
    held = ours(node)
    base = int(ip_network(RANGE).network_address)
    assert {str(ip_address(base + int(k))) for k in held} == set(addresses)
    assert {v["podref"] for v in held.values()} == {f"default/{p['metadata']['name']}" for p in pods}
    assert {k: v["podref"] for k, v in pool(node).items() if k in GO_HELD} == {
        k: f"go-world/{v}" for k, v in GO_HELD.items()
    }, "the Go plugin's allocations are honoured, untouched"
    names = [p["metadata"]["name"] for p in pods]
    for source, target in ((0, 1), (5, 17), (19, 2)):
        out = node.kubectl("exec", names[source], "--", "ping", "-c1", "-W5", addresses[target])
        assert "1 packets received" in out, out
    scale(node, "twenty", 0)
    wait_released(node)
    assert reservations(node) == {f"10.198.0.{k}" for k in GO_HELD}
    node.kubectl("delete", "deployment", "twenty")


def test_killing_the_daemonset_pod_mid_run_loses_nothing(installed: RealNode) -> None:
    node = installed
    node.apply(busybox_deployment("churn", 0))
    before = daemon_pod(node)
    container = before["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    node.kubectl("scale", "deployment", "churn", "--replicas=12")
    time.sleep(1.0)  # pods are being set up now
    node.ctr("task", "kill", "--signal", "SIGKILL", container)  # kill -9: no clean hand-over
    pods = node.wait_pods("default", "app=churn", 12, timeout=300)
    assert len({p["status"]["podIP"] for p in pods}) == 12
    wait_for("the DaemonSet pod back", lambda: _ready(daemon_pod(node)) and _restarts(daemon_pod(node)) > 0, 120)
    # the reservations hold the addresses; the pool entries the killed daemon owed, its successor writes
    wait_for("the pool to mirror the 12 addresses", lambda: len(ours(node)) == 12, 60)
    scale(node, "churn", 0)
    wait_released(node)  # nothing leaked
    node.kubectl("delete", "deployment", "churn")


def _restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", []))


def test_token_rotation_rewrites_the_hosts_kubeconfig_and_the_plugin_keeps_working(installed: RealNode) -> None:
    """A new token for the plugin's service account replaces the one the DaemonSet pod has mounted (the token
    controller mints it in a Secret of its own; the mounted Secret takes its value), which makes the old token
    invalid at once: install-cni must rewrite the host's kubeconfig for the plugin to keep working."""
    node = installed
    kubeconfig = node.cni_conf_dir / "whereabouts.d" / "whereabouts.kubeconfig"
    old = _token(kubeconfig)
    node.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "whereabouts-token-next", "namespace": "kube-system",
                             "annotations": {"kubernetes.io/service-account.name": "whereabouts"}}})  # fmt: skip
    minted = wait_for("a new token minted", lambda: _secret_token(node, "whereabouts-token-next"), 60)
    patch = json.dumps({"data": {"token": base64.b64encode(minted.encode()).decode()}})
    node.kubectl("patch", "secret", "whereabouts-token", "-n", "kube-system", "--type=merge", f"--patch={patch}")
    started = time.monotonic()
    wait_for("the old token refused", lambda: _refused(node, old), 60)  # it names a Secret that holds another now
    wait_for("the host's kubeconfig rewritten", lambda: _token(kubeconfig) == minted, 120)
    print(f"\nkubeconfig rewritten {time.monotonic() - started:.1f} s after the token changed")
    node.apply(busybox_deployment("after-rotation", 3))
    pods = node.wait_pods("default", "app=after-rotation", 3, timeout=180)
    assert len({p["status"]["podIP"] for p in pods}) == 3
    scale(node, "after-rotation", 0)
    wait_released(node)
    node.kubectl("delete", "deployment", "after-rotation")


def _refused(node: RealNode, token: str) -> bool:
    try:
        node.apiserver.request("GET", f"{GROUP}/ippools", token=token)  # type: ignore[union-attr]
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    return False


def _secret_token(node: RealNode, name: str) -> str:
    data = node.get("-n", "kube-system", "secret", name).get("data") or {}
    return base64.b64decode(data["token"]).decode() if data.get("token") else ""


def _token(kubeconfig: Path) -> str:
    doc = yaml.safe_load(kubeconfig.read_text())
    return doc["users"][0]["user"]["token"]


def test_the_controller_elects_one_leader_and_releases_a_leak(installed: RealNode) -> None:
    node = installed
    pods = node.wait_pods("kube-system", "app.kubernetes.io/component=controller", 2, timeout=180)
    names = {p["metadata"]["name"] for p in pods}

    def holder() -> str:
        lease = node.get("-n", "kube-system", "lease", "whereabouts-controller")
        return lease["spec"].get("holderIdentity") or ""

    leader = wait_for("a leader", lambda: holder() or None, 60)
    assert leader.split("_")[0] in names, (leader, names)
    leak = {"op": "add", "path": "/spec/allocations/200",
            "value": {"id": "ctr-ghost", "podref": "default/ghost", "ifname": "eth0"}}  # fmt: skip
    node.kubectl("patch", "-n", "kube-system", "ippools.whereabouts.cni.cncf.io", POOL, "--type=json",
                 f"--patch={json.dumps([leak])}")  # fmt: skip
    assert "200" in pool(node)
    started = time.monotonic()
    wait_for("the reconciler releases the leaked address", lambda: "200" not in pool(node), 150)
    print(f"\nleaked address released {time.monotonic() - started:.1f} s after it was leaked (cron * * * * *)")
    assert set(GO_HELD) <= set(pool(node)), "live pods' addresses are never freed (the Go pods exist)"
    assert holder() == leader or holder().split("_")[0] in names


def test_a_statefulset_on_a_sticky_network_gets_its_addresses_back(installed: RealNode) -> None:
    """sticky: pod (docs/sticky.md): a StatefulSet's pods deleted and recreated, then the StatefulSet scaled to 0
    and back, each pod has its old address again, although other pods of the network started in between, a
    reconcile pass ran while it was scaled to 0, and without sticky the lowest free addresses (theirs) go to
    whoever asks first."""
    node = installed
    node.write_cni_config(network(node, sticky="pod"))
    try:
        node.apply(busybox_deployment("squat", 0))
        node.apply(busybox_statefulset("sticky", 5))
        first = _addresses(node.wait_pods("default", "app=sticky", 5, timeout=300))
        assert len(set(first.values())) == 5
        _assert_recorded_for_their_keys(node, first)

        uids = {p["metadata"]["uid"] for p in node.pods("default", "app=sticky")}
        node.kubectl("delete", "pods", "-l", "app=sticky", "--wait=false")
        node.kubectl("scale", "deployment", "squat", "--replicas=3")  # the freed addresses are theirs to take
        again = wait_for("5 recreated pods Running", lambda: _recreated(node, uids), 300)
        assert _addresses(again) == first, "a recreated pod gets its address back"
        _assert_apart(node, "squat", 3, first)

        node.kubectl("scale", "statefulset", "sticky", "--replicas=0")
        node.wait_pods_gone("default", "app=sticky")
        _wait_retained(node, set(first.values()))
        passes = _reconcile_passes(node)
        wait_for("a reconcile pass while scaled to 0", lambda: _reconcile_passes(node) > passes, 150, interval=2)
        node.kubectl("scale", "deployment", "squat", "--replicas=6")
        _assert_apart(node, "squat", 6, first)
        node.kubectl("scale", "statefulset", "sticky", "--replicas=5")
        back = _addresses(node.wait_pods("default", "app=sticky", 5, timeout=300))
        assert back == first, "scaled back within the retention, each pod has its old address"
    finally:
        _unstick(node)


def _addresses(pods: list[dict[str, Any]]) -> dict[str, str]:
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}


def _address(offset: str) -> str:
    return str(ip_network(RANGE).network_address + int(offset))


def _assert_recorded_for_their_keys(node: RealNode, first: dict[str, str]) -> None:
    """Each pool entry names its pod's key and the pod's controller (what proves the key gone, once deleted). The
    IPPool is a mirror written a moment after each call: its entries are waited for."""

    def mirrored() -> dict[str, dict[str, str]] | None:
        found = {_address(offset): entry for offset, entry in ours(node).items()}
        return found if set(first.values()) <= found.keys() else None

    by_address = wait_for("the pool's entries of the pods", mirrored, 30)
    sts = node.get("statefulset", "sticky")
    for name, address in first.items():
        entry = by_address[address]
        assert entry["sticky"] == f"pod:default/{name}/eth0" and not entry.get("retained"), entry
        assert entry["controller"] == f"apps/v1/StatefulSet/sticky/{sts['metadata']['uid']}", entry


def _wait_retained(node: RealNode, addresses: set[str]) -> None:
    """The kubelet's DELs may come after the pods left the API: wait for them, not for a guess."""
    try:
        wait_for("the DELs to retain every address", lambda: _retained(node) == addresses, 60)
    except TimeoutError as error:
        raise AssertionError(f"{error}: scaled to 0, every address waits for its pod; the pool: {ours(node)}") from None


def _retained(node: RealNode) -> set[str]:
    return {_address(offset) for offset, entry in ours(node).items() if entry.get("retained")}


def _recreated(node: RealNode, old: set[str]) -> list[dict[str, Any]] | None:
    pods = [p for p in node.pods("default", "app=sticky") if not p["metadata"].get("deletionTimestamp")]
    fresh = len(pods) == 5 and all(pod_ready(p) and p["metadata"]["uid"] not in old for p in pods)
    return pods if fresh else None


def _assert_apart(node: RealNode, name: str, count: int, taken: dict[str, str]) -> None:
    others = _addresses(node.wait_pods("default", f"app={name}", count, timeout=300))
    assert not set(others.values()) & set(taken.values()), (others, taken)


def _reconcile_passes(node: RealNode) -> int:
    """How many reconcile runs the controllers have logged (the leader's; a standby runs none)."""
    logs = node.kubectl("logs", "-n", "kube-system", "-l", "app.kubernetes.io/component=controller",
                        "--tail=-1", "--prefix")  # fmt: skip
    return len(re.findall(r"reconcile: (?:released|would release) \d+ allocation\(s\)", logs))


def _unstick(node: RealNode) -> None:
    """Back to the plain network, with no address of ours left held: the next ADD of the network with sticky
    off releases what the sticky one retained (a reconcile pass may get there first)."""
    node.kubectl("delete", "statefulset", "sticky", "--ignore-not-found", "--wait=true")
    node.kubectl("delete", "deployment", "squat", "--ignore-not-found", "--wait=true")
    node.wait_pods_gone("default")
    node.write_cni_config(network(node))
    node.apply(busybox_deployment("sweep", 1))
    node.wait_pods("default", "app=sweep", 1)
    node.kubectl("delete", "deployment", "sweep", "--wait=true")
    node.wait_pods_gone("default")
    wait_released(node)
