"""A bound service-account token rotated under a running `whereabouts-controller all` (the reconciler, pod
cleanup and the node-slice controller, as the Deployment runs them): the kubelet rewrites the projected token
file, the server refuses the old token, and every part keeps working. On the real API server, tokens from its
TokenRequest API, the old one revoked."""

from __future__ import annotations

import time
import urllib.error
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from leak_harness import Harness

from kube_objects import create_nad, delete_pod
from kube_server import KubeAPIServer, write_token

pytestmark = pytest.mark.slow
POOLS = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Harness:
    return Harness(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def slices(kube: KubeAPIServer, namespace: str, network: str) -> dict[str, str]:
    """node -> its slice, from the network's NodeSlicePool status ({} while there is none)."""
    try:
        pool = kube.request("GET", f"{POOLS}/{namespace}/nodeslicepools/{network}")
    except urllib.error.HTTPError:
        return {}
    assert isinstance(pool, dict)
    return {a["nodeName"]: a["sliceRange"] for a in pool.get("status", {}).get("allocations", []) if a.get("nodeName")}


def test_the_controller_keeps_working_across_a_token_rotation(
    bed: Harness, kube: KubeAPIServer, tmp_path: Path
) -> None:
    old, old_secret = kube.mint_token("whereabouts-controller")
    token = tmp_path / "token"
    write_token(token, old)
    bed.kubeconfig = kube.kubeconfig(tmp_path / "projected.kubeconfig", token_file=token, namespace=bed.pools_ns)
    schedule = tmp_path / "cron"
    schedule.write_text("* * * * *")
    conf = bed.conf("10.93.0.0/24")
    bed.add(conf, bed.pod("before").split("/")[1], "ctr-before")
    network = f"rot-{uuid.uuid4().hex[:8]}"
    sliced = {"cniVersion": "1.0.0", "name": network, "type": "bridge",
              "ipam": {"type": "whereabouts", "range": "10.94.0.0/16", "node_slice_size": "/28"}}  # fmt: skip
    create_nad(kube, bed.pools_ns, network, sliced)
    try:
        with bed.running("all", f"--cron-file={schedule}", "--lease-duration=15", "--renew-deadline=10") as controller:
            controller.wait_for("became leader")
            controller.wait_for("pod-cleanup: watching pod deletions")
            wait_until(lambda: bed.node in slices(kube, bed.pools_ns, network), 30, "the node gets its slice")
            new, _ = kube.mint_token("whereabouts-controller")
            write_token(token, new)
            kube.revoke(old, old_secret)
            assert not kube.accepts(old)
            delete_pod(kube, bed.pods_ns, "before")  # pod cleanup's watch
            released = lambda: not any(e[2] == "ctr-before" for e in bed.held())  # noqa: E731
            wait_until(released, 30, "the deleted pod's address released")
            joined = bed.new_node("n2")  # the node-slice controller's watch
            wait_until(lambda: joined in slices(kube, bed.pools_ns, network), 30, "the joining node gets a slice")
            bed.create_pool("10.96.0.0-24", "10.96.0.0/24", {"5": ("ctr-leak", f"{bed.pods_ns}/ghost", "net1")})
            wait_until(lambda: not any(e[2] == "ctr-leak" for e in bed.held()), 90, "the reconciler's next run")
            assert "is no longer leader" not in controller.text(), controller.text()
            assert " 401 " not in controller.text(), controller.text()
    finally:  # other tests of the session read every NAD (kubectl whereabouts check): take it away
        nads = f"/apis/k8s.cni.cncf.io/v1/namespaces/{bed.pools_ns}/network-attachment-definitions"
        kube.request("DELETE", f"{nads}/{network}")
