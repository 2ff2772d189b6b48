"""Pod cleanup on a real kube-apiserver: a deleted pod's allocations go within seconds, deletions made while
no cleanup ran are found by listing (Go #546), `--node` limits the watch, and a pod recreated under the same
name keeps what it holds."""

from __future__ import annotations

import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from leak_harness import Harness

from kube_objects import delete_pod
from kube_server import KubeAPIServer
from support import stop_process
from whereabouts.controller.health import Health
from whereabouts.controller.podcleanup import PodCleanup

POOL = "10.90.0.0-24"


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Harness:
    return Harness(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def allocate(bed: Harness, *names: str, node: str = "") -> dict[str, str]:
    """A pod per name, each given an address by the real plugin; name -> pool offset."""
    conf = bed.conf("10.90.0.0/24")
    offsets = {}
    for name in names:
        bed.pod(name, node=node)
        address = bed.add(conf, name, f"ctr-{name}")
        offsets[name] = address.split("/")[0].rsplit(".", 1)[1]
    return offsets


def wait_released(bed: Harness, offset: str, timeout: float = 10) -> float:
    """Seconds until the pool no longer holds `offset`."""
    started = time.monotonic()
    while offset in bed.allocations().get(POOL, {}):
        assert time.monotonic() - started < timeout, f"offset {offset} still held after {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_once_releases_pods_deleted_while_no_cleanup_ran(bed: Harness) -> None:
    offsets = allocate(bed, "p1", "p2", "p3")
    delete_pod(bed.kube, bed.pods_ns, "p1")
    delete_pod(bed.kube, bed.pods_ns, "p3")
    done = bed.run("pod-cleanup")
    assert bed.held() == {(POOL, offsets["p2"], "ctr-p2")}
    assert set(bed.reservations()) == {f"10.90.0.{offsets['p2']}"}
    assert "pod-cleanup: sweep released 2 allocation(s) and 2 reservation(s)" in done.stderr


def test_long_running_releases_a_deleted_pods_allocation_within_seconds(bed: Harness) -> None:
    offsets = allocate(bed, "live", "doomed")
    with bed.running("pod-cleanup") as controller:
        controller.wait_for("pod-cleanup: watching pod deletions on all nodes")
        assert bed.held() == {(POOL, offsets["live"], "ctr-live"), (POOL, offsets["doomed"], "ctr-doomed")}
        delete_pod(bed.kube, bed.pods_ns, "doomed")
        took = wait_released(bed, offsets["doomed"])
        assert took < 5, f"released {took:.1f}s after the deletion"
        assert bed.held() == {(POOL, offsets["live"], "ctr-live")}
        assert set(bed.reservations()) == {f"10.90.0.{offsets['live']}"}
        controller.wait_for(f"released 10.90.0.{offsets['doomed']} in IPPool {POOL}")
        metrics = controller.metrics()
    assert 'whereabouts_pod_cleanup_released_total{kind="allocation"} 1.0' in metrics
    assert 'whereabouts_pod_cleanup_released_total{kind="reservation"} 1.0' in metrics


def test_restart_finds_deletions_made_while_it_was_down(bed: Harness) -> None:
    """Go #546: a cleanup that only watches misses what happened while it was stopped."""
    offsets = allocate(bed, "live", "missed")
    with bed.running("pod-cleanup", name="first") as controller:
        controller.wait_for("watching pod deletions")
    delete_pod(bed.kube, bed.pods_ns, "missed")  # no cleanup is running
    with bed.running("pod-cleanup", name="second") as controller:
        controller.wait_for("watching pod deletions")  # the sweep ran before the watch
        assert bed.held() == {(POOL, offsets["live"], "ctr-live")}
        assert "sweep released 1 allocation(s)" in controller.text()


def test_node_scoped_cleanup_does_not_act_on_other_nodes_deletions(bed: Harness) -> None:
    other = bed.new_node("n2")
    mine = allocate(bed, "mine-live", "mine-doomed")
    theirs = allocate(bed, "theirs-doomed", node=other)
    with bed.running("pod-cleanup", f"--node={bed.node}") as controller:
        controller.wait_for(f"watching pod deletions on node {bed.node}")
        delete_pod(bed.kube, bed.pods_ns, "theirs-doomed")
        delete_pod(bed.kube, bed.pods_ns, "mine-doomed")  # after: once it is released, the other was seen
        assert wait_released(bed, mine["mine-doomed"]) < 5
        time.sleep(1)
        expected = {(POOL, mine["mine-live"], "ctr-mine-live"), (POOL, theirs["theirs-doomed"], "ctr-theirs-doomed")}
        assert bed.held() == expected
        assert "theirs-doomed" not in controller.text()


def test_a_long_sweep_stays_alive_while_it_makes_progress(bed: Harness) -> None:
    """A sweep beat only before it started: 1,500 leaked entries took 136 s, past the 120 s allowance, and the
    kubelet killed the controller mid-sweep (and again after each restart). Each item released beats: the
    loop's longest silence is one item (or the first lists), not the sweep."""
    leaked = 100
    pool = {str(n): {"id": f"ctr-{n}", "podref": f"{bed.pods_ns}/gone-{n}", "ifname": "net1"}
            for n in range(1, leaked + 1)}  # fmt: skip
    bed.create_entries("10.90.1.0-24", "10.90.1.0/24", pool)
    for n in range(1, leaked + 1):
        bed.create_reservation(f"10.90.1.{n}", f"ctr-{n}", f"{bed.pods_ns}/gone-{n}")
    beats: list[float] = []

    class Listening(Health):
        def beat(self, name: str, allowance: float | None = None) -> None:
            beats.append(time.monotonic())

    ctx = bed.context(health=Listening())
    started = time.monotonic()
    report = PodCleanup(ctx).sync()
    ended = time.monotonic()
    assert len(report.released) == leaked and len(report.released_reservations) == leaked, report.summary()
    assert len(beats) >= leaked, f"{len(beats)} beats in a sweep of {leaked} items"
    moments = [started, *beats, ended]
    longest = max(later - earlier for earlier, later in pairwise(moments))
    assert longest < (ended - started) / 4, f"silent for {longest:.2f}s of a {ended - started:.2f}s sweep"


def test_deleted_pod_recreated_under_the_same_name_keeps_its_address(bed: Harness) -> None:
    """A StatefulSet pod recreated before the deletion is handled: its ADD adopts the old address (same
    pod and interface), so releasing by name would free a live address."""
    offsets = allocate(bed, "web-0")
    delete_pod(bed.kube, bed.pods_ns, "web-0")
    bed.pod("web-0")
    ctx = bed.context()
    report = PodCleanup(ctx).release_pod(ctx.client(), f"{bed.pods_ns}/web-0")
    assert report.released == [] and report.released_reservations == []
    assert bed.held() == {(POOL, offsets["web-0"], "ctr-web-0")}
    assert any(f"pod {bed.pods_ns}/web-0 exists" in line for line in bed.logs)


def test_expired_watch_lists_again_and_finds_what_it_missed(bed: Harness) -> None:
    """A watch resuming from a version the API server can no longer replay gets 410 Gone (here: the server
    restarted, and its watch cache starts at the current version): it lists again and finds the deletion."""
    offsets = allocate(bed, "live", "missed")
    cleanup = PodCleanup(bed.context())
    cleanup.sync()
    delete_pod(bed.kube, bed.pods_ns, "missed")
    restart_apiserver(bed.kube)  # the deletion is history its new watch cache cannot replay
    cleanup.watch_timeout = 2
    stop = threading.Event()
    thread = threading.Thread(target=cleanup.follow, args=(stop,))
    thread.start()
    try:
        wait_released(bed, offsets["missed"])
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()
    assert any("watch expired (410 Gone); listing again" in line for line in bed.logs), bed.logs
    assert bed.held() == {(POOL, offsets["live"], "ctr-live")}


def restart_apiserver(kube: KubeAPIServer) -> None:
    """Stop the session's kube-apiserver by its PID and start it again on the same port and etcd."""
    stop_process(kube.proc, 15)
    kube.start()
