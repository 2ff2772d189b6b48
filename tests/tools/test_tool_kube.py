"""kubectl-whereabouts on a real kube-apiserver: pools the plugin wrote and pools in the Go plugin's format, pods
judged alive or gone, planted faults found and the safe ones repaired by the reconciler's own plan, guarded
releases, and Fast IPAM's node slices."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from bed import Bed, write_slice_pool
from tool import TOOL, run_tool

from kube_objects import create_nad
from kube_server import KubeAPIServer
from support import run_cni


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Bed:
    return Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def items(bed: Bed, *args: str) -> list[dict]:
    done = bed.tool(*args, "-o", "json").ok()
    found: list[dict] = json.loads(done.stdout)["items"]
    return found


def test_pools_written_by_the_plugin_and_by_the_go_plugin(bed: Bed) -> None:
    conf = bed.conf("10.70.0.0/24")
    bed.pod("web-0")
    assert bed.add(conf, "web-0", "ctr-web") == "10.70.0.1/24"
    bed.add(conf, "gone", "ctr-gone")  # a pod that never existed here
    go = bed.pod("go-0")
    bed.go_pool("go-10.71.0.0-24", "10.71.0.0/24", {"5": ("ctr-go", go, "net1")})
    bed.go_reservation("go-10.71.0.5", "ctr-go", go)
    pools = {(p["network"], p["range"]): (p["held"], p["free"]) for p in items(bed, "pools")}
    assert pools == {("", "10.70.0.0/24"): (2, 252), ("go", "10.71.0.0/24"): (1, 253)}
    (web,) = items(bed, "who-has", "10.70.0.1")
    assert (web["pod"], web["container"], web["ifname"], web["node"], web["podStatus"]) == (
        f"{bed.pods_ns}/web-0",
        "ctr-web",
        "net1",
        "node-a",
        "Running",
    )
    assert web["since"].endswith("Z")  # when its reservation was made
    (go_entry,) = items(bed, "who-has", "10.71.0.5")
    assert (go_entry["network"], go_entry["pod"], go_entry["podStatus"]) == ("go", go, "Running")
    assert go_entry["since"].endswith("Z")  # a Go reservation's name read back to its network and address
    (gone,) = items(bed, "show", "gone")  # the context's namespace: the pods'
    assert (gone["address"], gone["podStatus"]) == ("10.70.0.2", "Gone")
    table = bed.tool("show", "-A").ok().stdout
    assert table.splitlines()[0].split() == ["ADDRESS", "NETWORK", "POD", "IFNAME", "CONTAINER", "STATE", "NODE",
                                             "SINCE", "POD-STATUS"]  # fmt: skip
    assert len(table.splitlines()) == 4


def test_check_finds_planted_faults_and_repairs_only_the_safe_ones(bed: Bed) -> None:
    conf = bed.conf("10.72.0.0/24")
    bed.pod("web")
    bed.pod("gone")
    assert bed.add(conf, "web", "ctr-web") == "10.72.0.1/24"
    assert bed.add(conf, "gone", "ctr-gone") == "10.72.0.2/24"
    assert bed.errors() == []
    bed.delete_pod("gone")  # an entry of a deleted pod
    bed.go_reservation("10.72.0.50", "ctr-orphan", f"{bed.pods_ns}/never")  # an orphan reservation
    dup = bed.pod("dup")  # the same address in an overlapping pool of the network
    bed.go_pool("10.72.0.0-25", "10.72.0.0/25", {"1": ("ctr-dup", dup, "net1")})
    out = bed.pod("out")  # an address outside its pool's range
    bed.go_pool("10.73.0.0-24", "10.73.0.0/24", {"300": ("ctr-out", out, "net1")})
    found = bed.tool("check", "-o", "json")
    assert found.returncode == 1
    kinds = {(f["kind"], f["what"], f["repair"]) for f in json.loads(found.stdout)["items"] if f["severity"] == "error"}
    assert kinds == {
        ("gone-pod", "10.72.0.2", "release"),
        ("orphan-reservation", "OverlappingRangeIPReservation 10.72.0.50", "release"),
        ("duplicate", "10.72.0.1", ""),
        ("outside-range", "10.73.1.44", ""),
    }
    repaired = bed.tool("check", "--repair")
    assert repaired.returncode == 1, repaired.stdout  # the duplicate and the entry outside its range stay
    assert "after repair: 2 problem(s) left" in repaired.stdout
    assert f"released 10.72.0.2 in IPPool 10.72.0.0-24 (container ctr-gone net1, pod {bed.pods_ns}/gone)" in (
        repaired.stdout
    )
    assert bed.held() == {("10.72.0.0-24", "1", "ctr-web"), ("10.72.0.0-25", "1", "ctr-dup"),
                          ("10.73.0.0-24", "300", "ctr-out")}  # fmt: skip
    assert bed.reservations() == {"10.72.0.1"}
    bed.pod("next")
    assert bed.add(conf, "next", "ctr-next") == "10.72.0.2/24"


def test_release_refuses_a_live_pods_address_and_frees_a_gone_ones(bed: Bed) -> None:
    conf = bed.conf("10.74.0.0/24")
    bed.pod("live")
    bed.pod("gone")
    assert bed.add(conf, "live", "ctr-live") == "10.74.0.1/24"
    assert bed.add(conf, "gone", "ctr-gone") == "10.74.0.2/24"
    refused = bed.tool("release", "10.74.0.1")
    assert refused.returncode == 1 and f"pod {bed.pods_ns}/live exists (Running)" in refused.stderr
    assert ("10.74.0.0-24", "1", "ctr-live") in bed.held()
    bed.delete_pod("gone")
    dry = bed.tool("release", "--pod", f"{bed.pods_ns}/gone", "--dry-run").ok()
    assert (
        dry.stdout.startswith("(dry run) would release 10.74.0.2") and f"pod {bed.pods_ns}/gone not found" in dry.stdout
    )
    assert bed.reservations() == {"10.74.0.1", "10.74.0.2"}
    bed.tool("release", "10.74.0.2").ok()
    assert bed.held() == {("10.74.0.0-24", "1", "ctr-live")} and bed.reservations() == {"10.74.0.1"}
    bed.pod("new")
    assert bed.add(conf, "new", "ctr-new") == "10.74.0.2/24"  # the freed address goes to the next ADD
    forced = bed.tool("release", "10.74.0.1", "--force").ok()
    assert "forced (pod" in forced.stdout and ("10.74.0.0-24", "1", "ctr-live") not in bed.held()
    bed.go_pool("go-10.74.1.0-24", "10.74.1.0/24", {"5": ("ctr-go", f"{bed.pods_ns}/old", "net1")})  # the Go plugin's
    bed.go_reservation("go-10.74.1.5", "ctr-go", f"{bed.pods_ns}/old")
    bed.tool("release", "10.74.1.5").ok()
    assert not any(pool == "go-10.74.1.0-24" for pool, _, _ in bed.held()) and "go-10.74.1.5" not in bed.reservations()


def test_node_slices_shown_per_node_and_checked_against_their_nad(bed: Bed) -> None:
    config = {"cniVersion": "1.0.0", "name": f"{bed.pools_ns}-sl", "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": "10.90.0.0/24", "node_slice_size": "/26"}}  # fmt: skip
    create_nad(bed.kube, bed.pods_ns, "sliced", config)
    try:
        _check_slices(bed, str(config["name"]))
    finally:  # NADs are read cluster-wide: other tests' checks must not see this one
        bed.kube.request(
            "DELETE", f"/apis/k8s.cni.cncf.io/v1/namespaces/{bed.pods_ns}/network-attachment-definitions/sliced"
        )


def _check_slices(bed: Bed, name: str) -> None:
    slices = [("n1", "10.90.0.0/26"), ("n2", "10.90.0.64/26"), ("", "10.90.0.128/26"), ("", "10.90.0.192/26")]
    write_slice_pool(bed.kube, bed.pools_ns, name, "10.90.0.0/24", "/26", slices)
    conf = bed.conf("10.90.0.0/24", node_slice_size="/26")
    conf["name"] = name
    bed.pod("a")
    assert bed.add(conf, "a", "ctr-a", node="n1") == "10.90.0.1/24"
    rows = {(p["range"], p["node"]): (p["held"], p["free"], p["config"]) for p in items(bed, "pools")}
    nad = f"NAD {bed.pods_ns}/sliced"
    assert rows == {("10.90.0.0/26", "n1"): (1, 62, nad), ("10.90.0.64/26", "n2"): (0, 64, nad)}
    assert bed.errors() == []
    write_slice_pool(bed.kube, bed.pools_ns, name, "10.90.0.0/24", "/27", [("n1", "10.90.0.0/27")])
    found = [f for f in json.loads(bed.tool("check", "-o", "json").stdout)["items"] if name in f["what"] + f["detail"]]
    assert [(f["kind"], f["what"], f["severity"]) for f in found] == [
        ("slice-mismatch", f"NodeSlicePool {name}", "error"),
        ("slice-mismatch", "IPPool n1-10.90.0.0-26", "warning"),
    ]
    assert f"NAD(s) {bed.pods_ns}/sliced slice 10.90.0.0/24 in /26 slices, but it slices" in found[0]["detail"]


def test_context_and_nad_select_what_is_read(bed: Bed) -> None:
    """--context picks a context of a kubeconfig whose CA path is relative to it; --nad reads the network's
    ranges (its window, its exclude) from a NetworkAttachmentDefinition."""
    assert bed.kube.tls is not None
    (bed.tmp_path / "ca.crt").write_bytes(Path(bed.kube.tls.ca).read_bytes())
    (bed.tmp_path / "multi").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\n"
        f"clusters:\n- name: real\n  cluster: {{server: '{bed.kube.url}', certificate-authority: ca.crt}}\n"
        "- name: nowhere\n  cluster: {server: 'https://127.0.0.1:1'}\n"
        f"users:\n- name: admin\n  user: {{token: {bed.kube.admin_token}}}\n"
        "contexts:\n- name: elsewhere\n  context: {cluster: nowhere, user: admin}\n"
        f"- name: here\n  context: {{cluster: real, user: admin, namespace: {bed.pods_ns}}}\n"
    )
    config = {"cniVersion": "1.0.0", "name": "ctx", "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": "10.91.0.0/24", "exclude": ["10.91.0.0/28"]}}  # fmt: skip
    create_nad(bed.kube, bed.pods_ns, "ctx-net", config)  # slices nothing: harmless to other tests' checks
    bed.pod("a")
    assert bed.add(bed.conf("10.91.0.0/24", exclude=["10.91.0.0/28"]), "a", "ctr-a") == "10.91.0.16/24"
    base = ("--kubeconfig", str(bed.tmp_path / "multi"), "--pool-namespace", bed.pools_ns)
    unreachable = run_tool(*base, "pools")
    assert unreachable.returncode == 1 and "127.0.0.1:1" in unreachable.stderr
    done = run_tool(*base, "--context", "here", "--nad", "ctx-net", "pools", "-o", "json").ok()
    (pool,) = json.loads(done.stdout)["items"]
    assert (pool["held"], pool["excluded"], pool["free"], pool["config"]) == (1, 17, 238, f"NAD {bed.pods_ns}/ctx-net")
    shown = run_tool(*base, "--context", "here", "show", "a").ok()  # the context's namespace is the pods'
    assert "10.91.0.16" in shown.stdout


def test_check_under_churn_finds_nothing_and_repairs_nothing(bed: Bed) -> None:
    """Pods' addresses added and deleted all along: a call between its two writes is no leak (check reports no
    error, --repair releases nothing), and pools and who-has keep answering."""
    conf = bed.conf("10.92.0.0/24")
    for name in ("c0", "c1", "c2"):
        bed.pod(name)
    stop = threading.Event()
    rounds = [0]

    def churn() -> None:
        while not stop.is_set():
            for name in ("c0", "c1", "c2"):
                container = f"{name}-{rounds[0]}"
                bed.add(conf, name, container)
                args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={bed.pods_ns};K8S_POD_NAME={name}"
                assert run_cni("DEL", conf, container_id=container, ifname="net1", cni_args=args).returncode == 0
            rounds[0] += 1

    bed.pod("steady")
    assert bed.add(conf, "steady", "steady") == "10.92.0.1/24"
    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        for _ in range(3):
            done = bed.tool("check", "-o", "json")
            assert done.returncode == 0, done.stdout
            assert all(f["severity"] == "warning" for f in json.loads(done.stdout)["items"]), done.stdout
        repaired = bed.tool("check", "--repair", "-o", "json")
        assert repaired.returncode == 0 and json.loads(repaired.stdout)["repairs"] == [], repaired.stdout
        assert items(bed, "who-has", "10.92.0.1")[0]["container"] == "steady"
        assert items(bed, "pools")[0]["range"] == "10.92.0.0/24"
    finally:
        stop.set()
        worker.join(60)
    assert rounds[0] >= 2  # the churn ran alongside
    assert ("10.92.0.0-24", "1", "steady") in bed.held()


def test_kubectl_runs_it_as_a_plugin(bed: Bed) -> None:
    """`kubectl whereabouts ...`: kubectl finds kubectl-whereabouts on the PATH and hands it the arguments."""
    conf = bed.conf("10.93.0.0/24")
    bed.pod("a")
    bed.add(conf, "a", "ctr-a")
    env = {**os.environ, "PATH": f"{Path(TOOL).parent}:{os.environ['PATH']}", "HOME": str(bed.tmp_path)}
    kubectl = str(bed.kube.tools / "kubectl")
    listed = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert TOOL in listed.stdout
    done = subprocess.run([kubectl, "whereabouts", "--kubeconfig", str(bed.admin), "--pool-namespace", bed.pools_ns,
                           "who-has", "10.93.0.1"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[:5] == ["10.93.0.1", "-", f"{bed.pods_ns}/a", "net1", "ctr-a"]


def test_check_reads_go_reservations_that_record_no_container_id_as_their_entries(bed: Bed) -> None:
    """A Go plugin v0.7 or later writes its reservations without a container ID: `check` reported each as a
    duplicate (the entry one container, its reservation "another"). One naming another interface still is."""
    pod = bed.pod("go-0")
    bed.go_pool("10.74.0.0-24", "10.74.0.0/24", {"1": ("ctr-1", pod, "net1"), "2": ("ctr-2", pod, "net2"),
                                                 "3": ("ctr-3", pod, "net3")})  # fmt: skip
    bed.go_reservation("10.74.0.1", "ctr-1", pod)  # v0.6
    for name, ifname in (("10.74.0.2", "net2"), ("10.74.0.3", "net9")):  # v0.7
        obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
               "metadata": {"name": name}, "spec": {"podref": pod, "ifname": ifname}}  # fmt: skip
        bed.kube.request("POST", f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{bed.pools_ns}/"
                         "overlappingrangeipreservations", obj)  # fmt: skip
    found = bed.tool("check", "-o", "json")
    errors = [f for f in json.loads(found.stdout)["items"] if f["severity"] == "error"]
    assert [(f["kind"], f["what"].split()[0]) for f in errors] == [("duplicate", "10.74.0.3")], found.stdout
