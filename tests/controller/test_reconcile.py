"""The reconciler on a real kube-apiserver: leaks released (in every kind of pool, both directions between
pools and reservations), the Go reconciler's failures not repeated, Events, metrics, dry run, leader gating,
and every write guarded by what was read."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from leak_harness import GROUP_PATH, Harness

from kube_objects import create_nad, delete_node, delete_pod, events, set_pod_phase
from kube_server import KubeAPIServer
from support import run_cni
from whereabouts.controller.leaks import plan
from whereabouts.controller.reconcile import Applier, Reconciler, observe
from whereabouts.errors import TryAgainLater
from whereabouts.kube.resources import ATTACHMENT_LABEL, attachment_label
from whereabouts.model import Owner


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Harness:
    return Harness(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def reasons(bed: Harness, namespace: str, reason: str) -> list[tuple[str, str]]:
    """(kind, name) of the objects that got an Event with `reason`."""
    found = [e["involvedObject"] for e in events(bed.kube, namespace) if e["reason"] == reason]
    return sorted((o["kind"], o["name"]) for o in found)


def test_releases_deleted_pods_allocations_and_keeps_live_ones(bed: Harness) -> None:
    conf = bed.conf("10.70.0.0/24")
    bed.pod("live")
    bed.pod("gone")
    assert bed.add(conf, "live", "ctr-live") == "10.70.0.1/24"
    assert bed.add(conf, "gone", "ctr-gone") == "10.70.0.2/24"
    delete_pod(bed.kube, bed.pods_ns, "gone")
    done = bed.run("reconcile")
    assert bed.held() == {("10.70.0.0-24", "1", "ctr-live")}
    assert set(bed.reservations()) == {"10.70.0.1"}  # the entry first, then its reservation
    assert f"released 10.70.0.2 in IPPool 10.70.0.0-24 (container ctr-gone net1, pod {bed.pods_ns}/gone)" in done.stderr
    assert reasons(bed, bed.pools_ns, "ReleasedAllocation") == [("IPPool", "10.70.0.0-24")]  # the pod is gone
    assert reasons(bed, bed.pools_ns, "ReleasedReservation") == [("OverlappingRangeIPReservation", "10.70.0.2")]
    bed.pod("next")
    assert bed.add(conf, "next", "ctr-next") == "10.70.0.2/24"  # free again


def test_fresh_allocation_before_network_status_is_kept(bed: Harness) -> None:
    """Go #162/#207: the Go reconciler took a fresh address without a network-status annotation for a leak
    and handed it out twice. Liveness here is the pod object, never the annotation."""
    conf = bed.conf("10.71.0.0/24")
    bed.pod("fresh", phase="Pending")  # Multus has not written network-status yet
    assert bed.add(conf, "fresh", "ctr-fresh") == "10.71.0.1/24"
    done = bed.run("reconcile")
    assert "released 0 allocation(s) and 0 reservation(s)" in done.stderr
    assert bed.held() == {("10.71.0.0-24", "1", "ctr-fresh")} and set(bed.reservations()) == {"10.71.0.1"}
    bed.pod("other")
    assert bed.add(conf, "other", "ctr-other") == "10.71.0.2/24"  # not handed out twice


def test_recreated_statefulset_pod_keeps_both_entries_when_nothing_says_which_is_stale(bed: Harness) -> None:
    """Go #176: the Go plugin gave a recreated StatefulSet pod a second address and its reconciler freed
    the wrong one. While a pod of that name exists, both stay (reported); once it is gone, both go."""
    web = bed.pod("web-0")
    bed.create_pool("10.72.0.0-24", "10.72.0.0/24", {"1": ("ctr-old", web, "net1"), "2": ("ctr-new", web, "net1")})
    bed.create_reservation("10.72.0.1", "ctr-old", web)
    bed.create_reservation("10.72.0.2", "ctr-new", web)
    done = bed.run("reconcile")
    assert bed.held() == {("10.72.0.0-24", "1", "ctr-old"), ("10.72.0.0-24", "2", "ctr-new")}
    assert "net1 also held under container(s) ctr-new: cannot tell which is stale" in done.stderr
    delete_pod(bed.kube, bed.pods_ns, "web-0")
    bed.run("reconcile")
    assert bed.held() == set() and bed.reservations() == {}


def test_recreated_pod_that_adopted_its_address_keeps_it(bed: Harness) -> None:
    conf = bed.conf("10.73.0.0/24")
    bed.pod("web-0")
    address = bed.add(conf, "web-0", "ctr-old")
    delete_pod(bed.kube, bed.pods_ns, "web-0")  # its DEL never ran
    bed.pod("web-0")
    assert bed.add(conf, "web-0", "ctr-new") == address  # the plugin lets the recreated pod adopt it
    bed.run("reconcile")
    assert bed.held() == {("10.73.0.0-24", "1", "ctr-new")}
    assert bed.reservations()["10.73.0.1"]["spec"]["containerid"] == "ctr-new"


def test_pods_on_a_deleted_or_notready_node_are_kept_while_the_pod_exists(bed: Harness) -> None:
    conf = bed.conf("10.74.0.0/24")
    doomed, sick = bed.new_node("doomed"), bed.new_node("sick", ready=False)
    bed.pod("orphan", node=doomed)
    bed.pod("stuck", node=sick)
    bed.add(conf, "orphan", "ctr-orphan")
    bed.add(conf, "stuck", "ctr-stuck")
    delete_node(bed.kube, doomed)
    done = bed.run("reconcile")
    assert bed.held() == {("10.74.0.0-24", "1", "ctr-orphan"), ("10.74.0.0-24", "2", "ctr-stuck")}
    assert f"its node {doomed} is gone" in done.stderr and f"its node {sick} is NotReady" in done.stderr


def test_terminating_pod_is_kept_for_its_del(bed: Harness) -> None:
    conf = bed.conf("10.75.0.0/24")
    bed.pod("leaving")
    bed.add(conf, "leaving", "ctr-leaving")
    delete_pod(bed.kube, bed.pods_ns, "leaving", grace=300)  # no kubelet here: it stays terminating
    done = bed.run("reconcile")
    assert bed.held() == {("10.75.0.0-24", "1", "ctr-leaving")}
    assert f"pod {bed.pods_ns}/leaving is terminating" in done.stderr


def test_finished_pod_is_released_with_an_event_on_the_pod(bed: Harness) -> None:
    conf = bed.conf("10.76.0.0/24")
    bed.pod("job")
    bed.add(conf, "job", "ctr-job")
    set_pod_phase(bed.kube, bed.pods_ns, "job", "Succeeded")
    bed.run("reconcile")
    assert bed.held() == set() and bed.reservations() == {}
    assert reasons(bed, bed.pods_ns, "ReleasedAllocation") == [("Pod", "job")]
    assert reasons(bed, bed.pods_ns, "ReleasedReservation") == [("Pod", "job")]


def test_every_kind_of_pool_and_both_directions_between_pools_and_reservations(bed: Harness) -> None:
    """network_name pools, node-slice pools (with and without a network), lone reservations, and pool
    entries whose reservation is missing, as crashed calls and the Go plugin leave them."""
    live_a, live_b, gone = bed.pod("a"), bed.pod("b"), f"{bed.pods_ns}/gone"
    blue = {"5": ("ctr-g1", gone, "net1"), "6": ("ctr-a", live_a, "net1"), "7": ("ctr-b", live_b, "net1")}
    bed.create_pool("blue-10.77.0.0-24", "10.77.0.0/24", blue)
    bed.create_reservation("blue-10.77.0.5", "ctr-g1", gone)
    bed.create_reservation("blue-10.77.0.6", "ctr-a", live_a)  # 7 has none: recreated, as its pod is live
    bed.create_pool(
        "node1-10.78.0.0-26", "10.78.0.0/26", {"5": ("ctr-g2", gone, "net1"), "6": ("ctr-g3", gone, "net1")}
    )
    bed.create_reservation("10.78.0.5", "ctr-g2", gone)  # 6 has none, and its pod is gone: released
    bed.create_pool("blue-node1-10.79.0.0-26", "10.79.0.0/26", {"5": ("ctr-g4", gone, "net1")})
    bed.create_reservation("blue-10.79.0.5", "ctr-g4", gone)
    bed.create_reservation("10.80.0.9", "ctr-g5", gone)  # no pool entry, pod gone: released
    bed.create_reservation("10.80.0.10", "ctr-a", live_a, "net2")  # no pool entry, live pod, young: kept
    done = bed.run("reconcile")
    assert bed.held() == {("blue-10.77.0.0-24", "6", "ctr-a"), ("blue-10.77.0.0-24", "7", "ctr-b")}, done.stderr
    reservations = bed.reservations()
    assert set(reservations) == {"blue-10.77.0.6", "blue-10.77.0.7", "10.80.0.10"}
    repaired = reservations["blue-10.77.0.7"]
    assert repaired["spec"] == {"containerid": "ctr-b", "podref": live_b, "ifname": "net1", "state": "held",
                                "address": "10.77.0.7"}  # fmt: skip
    labels = repaired["metadata"]["labels"]
    assert labels[ATTACHMENT_LABEL] == attachment_label(Owner("ctr-b", "net1"))
    assert (labels["subnet_24"], labels["whereabouts.cni.cncf.io/network"]) == ("10.77.0.0", "blue")
    assert "an ADD may be between its two writes" in done.stderr
    assert reasons(bed, bed.pods_ns, "RecreatedReservation") == [("Pod", "b")]


def test_dry_run_reports_and_writes_nothing(bed: Harness) -> None:
    gone = f"{bed.pods_ns}/gone"
    bed.create_pool("10.81.0.0-24", "10.81.0.0/24", {"5": ("ctr-g", gone, "net1")})
    bed.create_reservation("10.81.0.5", "ctr-g", gone)
    bed.create_reservation("10.81.0.9", "ctr-crashed", gone)
    done = bed.run("reconcile", "--dry-run")
    assert "(dry run) would release 10.81.0.5 in IPPool 10.81.0.0-24" in done.stderr
    assert "(dry run) would release OverlappingRangeIPReservation 10.81.0.9" in done.stderr
    assert "would release 1 allocation(s) and 2 reservation(s)" in done.stderr
    assert bed.held() == {("10.81.0.0-24", "5", "ctr-g")}
    assert set(bed.reservations()) == {"10.81.0.5", "10.81.0.9"}
    assert reasons(bed, bed.pools_ns, "ReleasedAllocation") == []


def test_metrics(bed: Harness) -> None:
    conf = bed.conf("10.82.0.0/24")
    bed.pod("live")
    bed.pod("gone")
    bed.add(conf, "live", "ctr-live")
    bed.add(conf, "gone", "ctr-gone")
    delete_pod(bed.kube, bed.pods_ns, "gone")
    ctx = bed.context()
    Reconciler(ctx).run_once()
    metrics = ctx.registry.metrics
    assert metrics["whereabouts_pool_capacity"].value(pool="10.82.0.0-24") == 254
    assert metrics["whereabouts_pool_allocated"].value(pool="10.82.0.0-24") == 1
    assert metrics["whereabouts_leaks_released_total"].value(kind="allocation") == 1
    assert metrics["whereabouts_leaks_released_total"].value(kind="reservation") == 1
    assert metrics["whereabouts_reconcile_runs_total"].value(result="ok") == 1
    assert "whereabouts_reconcile_duration_seconds_count 1.0" in ctx.registry.render()
    denied = bed.context()
    denied.namespace = "default"  # the controller's Role is not bound there: the run fails
    reconciler = Reconciler(denied)
    with pytest.raises(TryAgainLater):
        reconciler.run_once()
    assert denied.registry.metrics["whereabouts_reconcile_runs_total"].value(result="error") == 1


def test_pool_capacity_counts_what_the_network_config_keeps_out(bed: Harness) -> None:
    """The gateway is never handed out, nor are excluded addresses or those outside range_start/range_end:
    a pool a NetworkAttachmentDefinition configures has that many fewer to give."""
    conf = bed.conf("10.82.1.0/24", gateway="10.82.1.1", exclude=["10.82.1.240/28"], range_end="10.82.1.249")
    create_nad(bed.kube, bed.pods_ns, "capacity", conf)
    bed.pod("live")
    bed.add(conf, "live", "ctr-live")
    bed.create_pool("10.82.2.0-24", "10.82.2.0/24", {})  # no NAD says more than its range
    ctx = bed.context()
    Reconciler(ctx).run_once()
    metrics = ctx.registry.metrics
    # the window .1-.249, less the gateway .1 and the excluded .240-.249
    assert metrics["whereabouts_pool_capacity"].value(pool="10.82.1.0-24") == 249 - 1 - 10
    assert metrics["whereabouts_pool_capacity"].value(pool="10.82.2.0-24") == 254


def test_a_replica_that_lost_its_lease_writes_nothing(bed: Harness) -> None:
    gone = f"{bed.pods_ns}/gone"
    bed.create_pool("10.83.0.0-24", "10.83.0.0/24", {"5": ("ctr-g", gone, "net1")})
    report = Reconciler(bed.context(may_act=lambda: False)).run_once()
    assert report.stopped and report.released == []
    assert bed.held() == {("10.83.0.0-24", "5", "ctr-g")}
    assert any("not the leader any more" in line for line in bed.logs)


def test_release_is_guarded_by_the_entry_it_was_decided_on(bed: Harness) -> None:
    """Between the read and the write, a recreated pod adopted the address (and was deleted in turn): the
    stale decision's guarded patch fails and takes nothing."""
    conf = bed.conf("10.84.0.0/24")
    bed.pod("web-0")
    bed.add(conf, "web-0", "ctr-old")
    delete_pod(bed.kube, bed.pods_ns, "web-0")
    ctx = bed.context()
    client = ctx.client()
    reading = observe(client)
    planned = plan(reading.observed, now=time.time())
    assert [r.entry.owner.container_id for r in planned.releases] == ["ctr-old"]
    bed.pod("web-0")
    bed.add(conf, "web-0", "ctr-new")  # adopts 10.84.0.1
    delete_pod(bed.kube, bed.pods_ns, "web-0")  # gone again: the fresh GET cannot save it, the guard must
    report = Applier(ctx, client, source="test", released=Reconciler(ctx).metrics.released).apply(
        planned, reading.pools
    )
    assert report.released == [] and len(report.skipped) == 1
    assert bed.held() == {("10.84.0.0-24", "1", "ctr-new")}
    assert bed.reservations()["10.84.0.1"]["spec"]["containerid"] == "ctr-new"


def test_pod_recreated_after_the_list_is_seen_by_the_fresh_get(bed: Harness) -> None:
    conf = bed.conf("10.85.0.0/24")
    bed.pod("web-0")
    bed.add(conf, "web-0", "ctr-a")
    delete_pod(bed.kube, bed.pods_ns, "web-0")
    ctx = bed.context()
    client = ctx.client()
    reading = observe(client)
    planned = plan(reading.observed, now=time.time())
    assert len(planned.releases) == 1
    bed.pod("web-0")  # recreated before the write; its ADD may adopt the address any moment
    report = Applier(ctx, client, source="test", released=Reconciler(ctx).metrics.released).apply(
        planned, reading.pools
    )
    assert report.released == []
    assert any(f"pod {bed.pods_ns}/web-0 exists" in k.reason for k in report.kept)
    assert bed.held() == {("10.85.0.0-24", "1", "ctr-a")}


def test_lone_reservation_is_reread_against_the_pools_before_it_is_deleted(bed: Harness) -> None:
    """The plugin writes the reservation, then the pool entry: a lone reservation may gain its entry
    between the read and the write."""
    gone = f"{bed.pods_ns}/gone"
    bed.create_reservation("10.86.0.5", "ctr-g", gone)
    ctx = bed.context()
    client = ctx.client()
    reading = observe(client)
    planned = plan(reading.observed, now=time.time())
    assert [r.reservation.name for r in planned.reservation_releases] == ["10.86.0.5"]
    bed.create_pool("10.86.0.0-24", "10.86.0.0/24", {"5": ("ctr-g", gone, "net1")})  # the entry lands
    report = Applier(ctx, client, source="test", released=Reconciler(ctx).metrics.released).apply(
        planned, reading.pools
    )
    assert report.released_reservations == []
    assert set(bed.reservations()) == {"10.86.0.5"}


def test_reservation_recording_no_pod_is_the_record_with_the_mirror_off(bed: Harness) -> None:
    """kubernetes.ippool_mirror false: no pool entry is ever written, and an ADD of a runtime that is not the
    kubelet records no pod. Its reservation is the only record of the address: the reconciler, long after, must
    not release it by age (the next ADD would be given the same address)."""
    conf = bed.conf("10.89.0.0/24")
    conf["ipam"]["kubernetes"]["ippool_mirror"] = False
    first = run_cni("ADD", conf, container_id="vm-1", ifname="eth0")
    assert first.returncode == 0, first.stdout + first.stderr
    ctx = bed.context()
    client = ctx.client()
    reading = observe(client)
    planned = plan(reading.observed, now=time.time() + 10 * 120)
    assert planned.reservation_releases == []
    assert any("is the record" in k.reason for k in planned.kept), [k.reason for k in planned.kept]
    Applier(ctx, client, source="test", released=Reconciler(ctx).metrics.released).apply(planned, reading.pools)
    second = run_cni("ADD", conf, container_id="vm-2", ifname="eth0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert first.addresses() == ["10.89.0.1/24"] and second.addresses() == ["10.89.0.2/24"]


def test_entry_released_meanwhile_by_its_own_del_is_no_error(bed: Harness) -> None:
    conf = bed.conf("10.87.0.0/24")
    bed.pod("p")
    bed.add(conf, "p", "ctr-p")
    delete_pod(bed.kube, bed.pods_ns, "p")
    ctx = bed.context()
    client = ctx.client()
    reading = observe(client)
    planned = plan(reading.observed, now=time.time())
    assert len(planned.releases) == 1
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={bed.pods_ns};K8S_POD_NAME=p"
    assert run_cni("DEL", conf, container_id="ctr-p", ifname="net1", cni_args=args).returncode == 0
    report = Applier(ctx, client, source="test", released=Reconciler(ctx).metrics.released).apply(
        planned, reading.pools
    )
    assert report.released == [] and len(report.skipped) == 1
    assert bed.held() == set() and bed.reservations() == {}


def test_pool_deleted_meanwhile_is_skipped_not_a_failed_run(bed: Harness) -> None:
    gone = f"{bed.pods_ns}/gone"
    bed.create_pool("10.88.0.0-24", "10.88.0.0/24", {"5": ("ctr-g", gone, "net1")})
    ctx = bed.context()
    client = ctx.client()
    reading = observe(client)
    planned = plan(reading.observed, now=time.time())
    bed.kube.request("DELETE", f"{GROUP_PATH}/{bed.pools_ns}/ippools/10.88.0.0-24")
    report = Applier(ctx, client, source="test", released=Reconciler(ctx).metrics.released).apply(
        planned, reading.pools
    )
    assert report.released == [] and report.skipped == [f"{planned.releases[0].entry.describe()}: the pool is gone"]


def test_the_pool_gauges_are_served_from_start_up_not_from_the_first_scheduled_run(bed: Harness) -> None:
    """The default schedule runs at 04:30: until then /metrics had no pool at all."""
    bed.pod("live")
    bed.add(bed.conf("10.82.3.0/24"), "live", "ctr-live")
    with bed.running("reconcile") as controller:  # the default schedule: no run during this test
        controller.wait_for("became leader")
        wait_for(lambda: 'whereabouts_pool_allocated{pool="10.82.3.0-24"} 1' in controller.metrics(), 10)
        metrics = controller.metrics()
    assert 'whereabouts_pool_capacity{pool="10.82.3.0-24"} 254' in metrics
    assert "reconcile: released" not in controller.text() and "whereabouts_reconcile_runs_total{" not in metrics


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.1)
