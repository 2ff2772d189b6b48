"""A dependency missing or down, under the long-running controllers: the API server stopped for a while and
started again (same port, same etcd), and a CRD installed only after the controller started. Each controller
says so once in its log and in /readyz, retries with backoff, releases nothing while it cannot read, and
resumes by itself (re-list, re-watch) when the dependency is back. On an API server of this module's own."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from leak_harness import Harness, Running

from kube_objects import create_nad, delete_pod
from kube_server import REPO, KubeAPIServer

pytestmark = pytest.mark.slow
POOLS = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"
NAD_CRD = "network-attachment-definitions.k8s.cni.cncf.io"
CLAIMS_CRD = "ipamclaims.k8s.cni.cncf.io"
DOWN_FOR = 45.0  # seconds the API server stays down: longer than the retries' longest wait (30 s)
LEASE = ("--lease-duration=15", "--renew-deadline=10")  # not lost to a slow renewal on a busy machine


@pytest.fixture
def bed(own_kube: KubeAPIServer, tmp_path: Path) -> Harness:
    namespace = own_kube.namespace_for_plugin(f"wa-{uuid.uuid4().hex[:10]}")
    plugin = own_kube.kubeconfig(tmp_path / "plugin.kubeconfig", token=own_kube.plugin_token,
                                 namespace=namespace, as_json=True)  # fmt: skip
    return Harness(own_kube, namespace, tmp_path, plugin)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def readyz(controller: Running) -> tuple[int, str]:
    port = re.search(r"metrics and health on [\d.]+:(\d+)", controller.text())
    assert port, controller.text()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/readyz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def slices(kube: KubeAPIServer, namespace: str, network: str) -> dict[str, str]:
    """node -> its slice, from the network's NodeSlicePool status ({} while there is none)."""
    try:
        pool = kube.request("GET", f"{POOLS}/{namespace}/nodeslicepools/{network}")
    except urllib.error.HTTPError:
        return {}
    assert isinstance(pool, dict)
    return {a["nodeName"]: a["sliceRange"] for a in pool.get("status", {}).get("allocations", []) if a.get("nodeName")}


def sliced_nad(kube: KubeAPIServer, namespace: str, network: str, cidr: str) -> None:
    config = {"cniVersion": "1.0.0", "name": network, "type": "bridge",
              "ipam": {"type": "whereabouts", "range": cidr, "node_slice_size": "/28"}}  # fmt: skip
    create_nad(kube, namespace, network, config)


@contextmanager
def api_server_down(kube: KubeAPIServer) -> Iterator[None]:
    """The API server stopped inside the block, started again after it (the same port, the same etcd)."""
    kube.stop_apiserver()
    try:
        yield
    finally:
        kube.start()


def lines(controller: Running, needle: str) -> list[str]:
    return [line for line in controller.text().splitlines() if needle in line]


def test_the_api_server_down_for_a_while_then_back(bed: Harness, own_kube: KubeAPIServer, tmp_path: Path) -> None:
    schedule = tmp_path / "cron"
    schedule.write_text("* * * * *")
    conf = bed.conf("10.97.0.0/24")
    bed.add(conf, bed.pod("p1").split("/")[1], "ctr-p1")
    network = f"down-{uuid.uuid4().hex[:8]}"
    sliced_nad(own_kube, bed.pools_ns, network, "10.98.0.0/16")
    with bed.running("all", f"--cron-file={schedule}", *LEASE) as controller:
        controller.wait_for("became leader")
        controller.wait_for("pod-cleanup: watching pod deletions")
        wait_until(lambda: bed.node in slices(own_kube, bed.pools_ns, network), 30, "the node's slice")
        assert readyz(controller) == (200, "ok\n")
        with api_server_down(own_kube):
            stopped = time.monotonic()
            wait_until(lambda: "pod-cleanup: the Kubernetes API unavailable" in readyz(controller)[1], 30, "readyz")
            wait_until(lambda: "node-slice: the Kubernetes API unavailable" in readyz(controller)[1], 30, "readyz")
            time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - stopped)))
            for component in ("pod-cleanup", "node-slice", "leader election"):
                said = lines(controller, f"{component}: the Kubernetes API unavailable")
                assert len(said) == 1, f"{component} said it {len(said)} times:\n{controller.text()}"
            assert readyz(controller)[0] == 503
        wait_until(lambda: readyz(controller) == (200, "ok\n"), 90, f"ready again:\n{controller.text()}")
        for component in ("pod-cleanup", "node-slice"):
            assert lines(controller, f"{component}: the Kubernetes API available again; resumed"), controller.text()
        delete_pod(own_kube, bed.pods_ns, "p1")  # pod cleanup watches again
        wait_until(lambda: not bed.held(), 30, "the deleted pod's address released")
        joined = bed.new_node("n2")  # the node-slice controller watches again
        wait_until(lambda: joined in slices(own_kube, bed.pools_ns, network), 30, "the joining node's slice")
        bed.create_pool("10.99.0.0-24", "10.99.0.0/24", {"5": ("ctr-leak", f"{bed.pods_ns}/ghost", "net1")})
        wait_until(lambda: not bed.held(), 90, "the reconciler runs again")
    assert bed.node in slices(own_kube, bed.pools_ns, network), "no slice was taken back"


def install_crd(kube: KubeAPIServer, manifest: str, name: str) -> None:
    kube.kubectl("apply", "-f", str(REPO / "tests/manifests" / manifest))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


def test_the_nad_crd_installed_late(bed: Harness, own_kube: KubeAPIServer) -> None:
    """Until NADs can be listed the node-slice controller knows no network: it must not retire the
    NodeSlicePool it made before, nor hand out slices; once they can, it resumes by itself."""
    network = f"late-{uuid.uuid4().hex[:8]}"
    sliced_nad(own_kube, bed.pools_ns, network, "10.100.0.0/16")
    bed.run("node-slice")
    assert bed.node in slices(own_kube, bed.pools_ns, network)
    own_kube.kubectl("delete", "crd", NAD_CRD, "--wait=true")  # its NADs go with it
    try:
        with bed.running("node-slice", *LEASE) as controller:
            controller.wait_for("became leader")
            controller.wait_for(f"node-slice: the resource {NAD_CRD} unavailable", timeout=30)
            status, text = readyz(controller)
            assert status == 503 and f"the resource {NAD_CRD} unavailable" in text
            joined = bed.new_node("n2")
            time.sleep(20)  # several retries
            assert len(lines(controller, f"node-slice: the resource {NAD_CRD} unavailable")) == 1, controller.text()
            assert bed.node in slices(own_kube, bed.pools_ns, network), "the NodeSlicePool was left alone"
            assert joined not in slices(own_kube, bed.pools_ns, network)
            install_crd(own_kube, "network-attachment-definitions.yaml", NAD_CRD)
            sliced_nad(own_kube, bed.pools_ns, network, "10.100.0.0/16")
            wait_until(lambda: joined in slices(own_kube, bed.pools_ns, network), 60, "the joining node's slice")
            wait_until(lambda: readyz(controller) == (200, "ok\n"), 30, "ready again")
            controller.wait_for(f"node-slice: the resource {NAD_CRD} available again; resumed")
    finally:
        install_crd(own_kube, "network-attachment-definitions.yaml", NAD_CRD)


def test_the_ipamclaim_crd_installed_late(bed: Harness, own_kube: KubeAPIServer, tmp_path: Path) -> None:
    """A retained address kept for an IPAMClaim is released only once the claim is proven gone: with the CRD
    missing nothing proves it, the reconciler says so and retries; with the CRD installed (and no such
    claim) it releases the address by itself, without waiting for its next scheduled run."""
    gone, base = f"{bed.pods_ns}/virt-launcher-vm-a", "10.101.0"
    now = int(time.time())
    entry = {"id": "c1", "podref": gone, "ifname": "net1", "sticky": f"claim:{bed.pods_ns}/vm-a.net1",
             "retained": now - 60}  # fmt: skip
    bed.create_entries("10.101.0.0-24", "10.101.0.0/24", {"1": entry})
    bed.create_reservation(f"{base}.1", "c1", gone, state="retained", sticky=entry["sticky"], retained=now - 60)
    schedule = tmp_path / "cron"
    schedule.write_text("* * * * *")
    own_kube.kubectl("delete", "crd", CLAIMS_CRD, "--wait=true")
    try:
        with bed.running("reconcile", f"--cron-file={schedule}", *LEASE) as rc:
            rc.wait_for(f"reconcile: the resource {CLAIMS_CRD} unavailable", timeout=90)
            status, text = readyz(rc)
            assert status == 503 and CLAIMS_CRD in text
            time.sleep(10)  # retries
            assert len(lines(rc, f"reconcile: the resource {CLAIMS_CRD} unavailable")) == 1, rc.text()
            assert "1" in bed.allocations()["10.101.0.0-24"], "kept while the claim cannot be read"
            install_crd(own_kube, "ipamclaims.yaml", CLAIMS_CRD)
            wait_until(lambda: not bed.allocations().get("10.101.0.0-24"), 75, f"released:\n{rc.text()}")
            rc.wait_for(f"reconcile: the resource {CLAIMS_CRD} available again; resumed")
            assert readyz(rc) == (200, "ok\n")
    finally:
        install_crd(own_kube, "ipamclaims.yaml", CLAIMS_CRD)
