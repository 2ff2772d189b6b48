"""Sticky addresses and the controllers, on a real kube-apiserver: a retained entry outlives its pod and is
released only when its key's owner is proven gone (its StatefulSet, its retention, its IPAMClaim, sticky turned
off in the NAD); a held sticky entry whose pod is gone without a DEL is retained, not released, by the
reconciler and by pod cleanup. No controller-manager runs here: StatefulSets and IPAMClaims are bare objects."""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from leak_harness import Harness

from kube_objects import create_nad, create_statefulset, delete_pod, delete_statefulset, events, owner_reference
from kube_server import REPO, KubeAPIServer
from support import run_cni
from whereabouts.controller.leaks import plan
from whereabouts.controller.reconcile import Applier, ReconcileMetrics, Reconciler, observe
from whereabouts.controller.sticky import Evidence, NetworkSticky
from whereabouts.kube.resources import STATE_LABEL

CLAIMS = "/apis/k8s.cni.cncf.io/v1alpha1"
CLAIMS_CRD = "ipamclaims.k8s.cni.cncf.io"
DAY = 24 * 3600


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Harness:
    return Harness(kube, kube_namespace, tmp_path, plugin_kubeconfig)


@pytest.fixture
def no_claims_crd(kube: KubeAPIServer) -> Iterator[None]:
    """The IPAMClaim CRD uninstalled for the test (its list endpoint 404s), installed again after it."""
    kube.kubectl("delete", "crd", CLAIMS_CRD, "--wait=true")
    _wait_until(lambda: not _served(kube, f"{CLAIMS}/ipamclaims"))
    try:
        yield
    finally:
        kube.kubectl("apply", "-f", str(REPO / "tests/manifests/ipamclaims.yaml"))
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CLAIMS_CRD}")
        _wait_until(lambda: _served(kube, f"{CLAIMS}/ipamclaims"))


def _served(kube: KubeAPIServer, path: str) -> bool:
    try:
        kube.request("GET", path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def _wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def sticky_conf(bed: Harness, cidr: str, mode: str) -> dict[str, Any]:
    """A sticky network config with a name of the test's own (the reconciler reads every NAD in the cluster)."""
    return {**bed.conf(cidr, sticky=mode), "name": f"sticky-{bed.pools_ns}"}


def retained(container: str, pod: str, key: str, *, expires: int, **extra: Any) -> dict[str, Any]:
    """A retained pool entry as a sticky DEL leaves it (written directly)."""
    entry = {"id": container, "podref": pod, "ifname": "net1", "sticky": key, "retained": int(time.time()) - 60}
    return {**entry, **({"expires": expires} if expires else {}), **extra}


def write_retained(bed: Harness, pool: str, cidr: str, entries: dict[str, dict[str, Any]]) -> None:
    """The pool and, for each entry, its reservation saying retained."""
    bed.create_entries(pool, cidr, entries)
    base = cidr.split("/")[0].rsplit(".", 1)[0]
    for offset, e in entries.items():
        fields = {k: e[k] for k in ("sticky", "retained", "expires", "controller") if k in e}
        bed.create_reservation(f"{base}.{offset}", e["id"], e["podref"], state="retained", **fields)


def offsets(bed: Harness, pool: str) -> set[str]:
    return set(bed.allocations().get(pool, {}))


def reservation_offsets(bed: Harness, base: str) -> set[str]:
    return {name.rsplit(".", 1)[1] for name in bed.reservations() if name.startswith(base + ".")}


def create_claim(bed: Harness, name: str) -> None:
    body = {"apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim", "metadata": {"name": name},
            "spec": {"network": "tenant", "interface": "net1"}}  # fmt: skip
    bed.kube.request("POST", f"{CLAIMS}/namespaces/{bed.pods_ns}/ipamclaims", body)


# -- retained entries: released only when the key's owner is proven gone ---------------------------------------


def test_retained_pod_address_waits_for_its_statefulset_and_goes_with_it(bed: Harness) -> None:
    sts = create_statefulset(bed.kube, bed.pods_ns, "web")
    bed.pod("web-0", controller=sts)
    conf = sticky_conf(bed, "10.150.0.0/24", "pod")
    assert bed.add(conf, "web-0", "ctr-1") == "10.150.0.1/24"
    bed.delete(conf, "web-0", "ctr-1")  # retained for pod:<ns>/web-0/net1
    delete_pod(bed.kube, bed.pods_ns, "web-0")  # scaled down: the pod is gone, its StatefulSet is not
    entry = bed.allocations()["10.150.0.0-24"]["1"]
    assert entry["retained"] and entry["controller"] == f"apps/v1/StatefulSet/web/{sts['metadata']['uid']}"
    assert bed.reservations()["10.150.0.1"]["spec"]["state"] == "retained"  # the DEL keeps its one object
    bed.run("reconcile")
    assert offsets(bed, "10.150.0.0-24") == {"1"} and set(bed.reservations()) == {"10.150.0.1"}
    delete_statefulset(bed.kube, bed.pods_ns, "web")
    done = bed.run("reconcile")
    assert offsets(bed, "10.150.0.0-24") == set() and bed.reservations() == {}
    assert f"its controller StatefulSet web (uid {sts['metadata']['uid']}) is gone" in done.stderr


def test_retained_pod_address_goes_once_its_retention_passed_while_the_pod_is_gone(bed: Harness) -> None:
    now = int(time.time())
    live, gone = bed.pod("a"), f"{bed.pods_ns}/gone"
    db = create_statefulset(bed.kube, bed.pods_ns, "db")
    db_ref = "apps/v1/StatefulSet/db/" + db["metadata"]["uid"]

    def key(name: str) -> str:
        return f"pod:{bed.pods_ns}/{name}/net1"

    write_retained(bed, "10.151.0.0-24", "10.151.0.0/24", {
        "1": retained("c1", live, key("a"), expires=now - 10),  # passed, but the pod exists
        "2": retained("c2", gone, key("gone"), expires=now - 10),  # passed, the pod is gone: released
        "3": retained("c3", gone, key("gone"), expires=now + DAY),  # not passed
        "4": retained("c4", gone, key("gone"), expires=now + DAY, controller="v1/ReplicationController/rc/u1"),
        "5": retained("c5", gone, key("gone"), expires=now + DAY, controller="apps/v1/StatefulSet/nosuch/u2"),
        "6": retained("c6", gone, key("gone"), expires=now + DAY, controller="apps/v1/StatefulSet/db/other-uid"),
        "7": retained("c7", gone, key("gone"), expires=now + DAY, controller=db_ref),
    })  # fmt: skip
    done = bed.run("reconcile")
    # 4: a kind the controller cannot look up proves nothing; 5: 404; 6: a StatefulSet db, but another one
    assert offsets(bed, "10.151.0.0-24") == {"1", "3", "4", "7"}, done.stderr
    assert reservation_offsets(bed, "10.151.0") == {"1", "3", "4", "7"}
    assert "its retention passed and the pod does not exist" in done.stderr


def test_retained_mac_address_goes_when_its_retention_passed(bed: Harness) -> None:
    now, gone = int(time.time()), f"{bed.pods_ns}/vm-launcher"
    write_retained(bed, "10.152.0.0-24", "10.152.0.0/24", {
        "1": retained("c1", gone, "mac:02:00:00:00:00:01", expires=now + DAY),
        "2": retained("c2", gone, "mac:02:00:00:00:00:02", expires=now - 1),
    })  # fmt: skip
    done = bed.run("reconcile")
    assert offsets(bed, "10.152.0.0-24") == {"1"} and reservation_offsets(bed, "10.152.0") == {"1"}
    assert "released 10.152.0.2 in IPPool 10.152.0.0-24" in done.stderr


def test_retained_claim_address_stays_while_its_ipamclaim_exists(bed: Harness) -> None:
    gone = f"{bed.pods_ns}/virt-launcher-vm-a"
    bed.pod("unrelated")  # makes the pods namespace
    create_claim(bed, "vm-a.net1")
    write_retained(bed, "10.153.0.0-24", "10.153.0.0/24", {
        "1": retained("c1", gone, f"claim:{bed.pods_ns}/vm-a.net1", expires=0),
        "2": retained("c2", gone, f"claim:{bed.pods_ns}/vm-b.net1", expires=0),  # no such claim
    })  # fmt: skip
    bed.run("reconcile")
    assert offsets(bed, "10.153.0.0-24") == {"1"} and reservation_offsets(bed, "10.153.0") == {"1"}
    bed.kube.request("DELETE", f"{CLAIMS}/namespaces/{bed.pods_ns}/ipamclaims/vm-a.net1")
    done = bed.run("reconcile")
    assert offsets(bed, "10.153.0.0-24") == set() and bed.reservations() == {}
    assert f"IPAMClaim {bed.pods_ns}/vm-a.net1 is gone" in done.stderr


def test_retained_claim_address_is_kept_when_ipamclaims_are_not_installed(bed: Harness, no_claims_crd: None) -> None:
    gone = f"{bed.pods_ns}/virt-launcher-vm-a"
    write_retained(bed, "10.154.0.0-24", "10.154.0.0/24", {
        "1": retained("c1", gone, f"claim:{bed.pods_ns}/vm-a.net1", expires=0),
    })  # fmt: skip
    bed.run("reconcile")
    assert offsets(bed, "10.154.0.0-24") == {"1"} and reservation_offsets(bed, "10.154.0") == {"1"}


def test_turning_sticky_off_in_the_nad_releases_retained_addresses(bed: Harness) -> None:
    now, gone = int(time.time()), f"{bed.pods_ns}/gone"
    off, on, unknown = (f"{name}-{bed.pools_ns}" for name in ("off", "on", "nonad"))
    ipam = {"type": "whereabouts", "range": "10.155.0.0/24"}
    create_nad(bed.kube, bed.pods_ns, "off", {"cniVersion": "1.0.0", "name": off, "type": "macvlan", "ipam": ipam})
    create_nad(bed.kube, bed.pods_ns, "on", {"cniVersion": "1.0.0", "name": on, "plugins": [
        {"type": "macvlan", "ipam": {**ipam, "sticky": "mac"}}]})  # fmt: skip
    write_retained(bed, "10.155.0.0-24", "10.155.0.0/24", {
        "1": retained("c1", gone, "mac:02:00:00:00:00:01", expires=now + DAY, netconf=off),
        "2": retained("c2", gone, "mac:02:00:00:00:00:02", expires=now + DAY, netconf=on),
        "3": retained("c3", gone, "mac:02:00:00:00:00:03", expires=now + DAY, netconf=unknown),
    })  # fmt: skip
    done = bed.run("reconcile")
    assert offsets(bed, "10.155.0.0-24") == {"2", "3"} and reservation_offsets(bed, "10.155.0") == {"2", "3"}
    assert f"sticky is off for network {off} in NAD(s) {bed.pods_ns}/off" in done.stderr


# -- held sticky entries of gone pods (a missed DEL): retained, not released ------------------------------------


def test_reconciler_retains_a_sticky_address_whose_pod_went_without_its_del(bed: Harness) -> None:
    sts = create_statefulset(bed.kube, bed.pods_ns, "web")
    bed.pod("web-0", controller=sts)
    conf = sticky_conf(bed, "10.156.0.0/24", "pod")
    bed.add(conf, "web-0", "ctr-1")
    delete_pod(bed.kube, bed.pods_ns, "web-0")  # no DEL ran
    dry = bed.run("reconcile", "--dry-run")
    would = f"(dry run) would retain 10.156.0.1 in IPPool 10.156.0.0-24 (container ctr-1 net1, pod {bed.pods_ns}/web-0)"
    assert would in dry.stderr
    assert "retained" not in bed.allocations()["10.156.0.0-24"]["1"]
    ctx = bed.context()
    report = Reconciler(ctx).run_once()
    assert [e.address for e in report.retained] == ["10.156.0.1"] and report.released == []
    entry = bed.allocations()["10.156.0.0-24"]["1"]
    assert entry["sticky"] == f"pod:{bed.pods_ns}/web-0/net1" and entry["id"] == "ctr-1"
    assert abs(entry["expires"] - entry["retained"] - DAY) <= 1 and abs(entry["retained"] - time.time()) < 60
    reservation = bed.reservations()["10.156.0.1"]
    assert reservation["spec"]["state"] == "retained" and reservation["spec"]["retained"] == entry["retained"]
    assert reservation["metadata"]["labels"][STATE_LABEL] == "retained"
    assert reservation["spec"]["address"] == "10.156.0.1"
    assert ctx.registry.metrics["whereabouts_sticky_retained_total"].value() == 1
    assert [e["involvedObject"]["name"] for e in events(bed.kube, bed.pools_ns) if e["reason"] == "RetainedAllocation"]
    bed.run("reconcile")  # its StatefulSet exists: kept
    assert offsets(bed, "10.156.0.0-24") == {"1"} and set(bed.reservations()) == {"10.156.0.1"}
    bed.pod("web-0", controller=sts)
    assert bed.add(conf, "web-0", "ctr-2") == "10.156.0.1/24"  # the recreated pod gets it back


def test_without_the_mirror_a_missed_del_retains_the_reservation_and_its_statefulset_releases_it(bed: Harness) -> None:
    """kubernetes.ippool_mirror false: the reservation is the record, with no pool entry behind it. Its pod gone
    without a DEL: rewritten retained (before: released, the sticky address lost); retained with no expiry (a pod
    key on Kubernetes): released once its StatefulSet is gone (before: kept for ever)."""
    sts = create_statefulset(bed.kube, bed.pods_ns, "web")
    bed.pod("web-0", controller=sts)
    conf = sticky_conf(bed, "10.159.0.0/24", "pod")
    conf["ipam"]["kubernetes"]["ippool_mirror"] = False
    assert bed.add(conf, "web-0", "ctr-1") == "10.159.0.1/24"
    assert bed.allocations() == {}  # no IPPool: the reservation alone
    delete_pod(bed.kube, bed.pods_ns, "web-0")  # no DEL ran
    ctx = bed.context()
    report = Reconciler(ctx).run_once()
    assert report.retained_reservations == ["10.159.0.1"] and report.released_reservations == []
    reservation = bed.reservations()["10.159.0.1"]
    spec, labels = reservation["spec"], reservation["metadata"]["labels"]
    assert (spec["state"], spec["containerid"], spec["address"]) == ("retained", "ctr-1", "10.159.0.1")
    assert spec["controller"] == f"apps/v1/StatefulSet/web/{sts['metadata']['uid']}"
    assert abs(spec["expires"] - spec["retained"] - DAY) <= 1 and abs(spec["retained"] - time.time()) < 60
    assert labels[STATE_LABEL] == "retained" and labels["subnet_24"] == "10.159.0.0"  # found by its range still
    assert ctx.registry.metrics["whereabouts_sticky_retained_total"].value() == 1
    bed.run("reconcile")  # its StatefulSet exists: kept
    assert set(bed.reservations()) == {"10.159.0.1"}
    bed.pod("web-0", controller=sts)
    assert bed.add(conf, "web-0", "ctr-2") == "10.159.0.1/24"  # the recreated pod gets it back
    bed.delete(conf, "web-0", "ctr-2")
    assert bed.reservations()["10.159.0.1"]["spec"]["state"] == "retained"
    delete_pod(bed.kube, bed.pods_ns, "web-0")
    bed.run("reconcile")
    assert set(bed.reservations()) == {"10.159.0.1"}  # retained for its key while the StatefulSet is there
    delete_statefulset(bed.kube, bed.pods_ns, "web")
    done = bed.run("reconcile")
    assert bed.reservations() == {}
    assert f"its controller StatefulSet web (uid {sts['metadata']['uid']}) is gone" in done.stderr


def test_without_the_mirror_pod_cleanup_retains_a_deleted_pods_reservation(bed: Harness) -> None:
    sts = create_statefulset(bed.kube, bed.pods_ns, "web")
    bed.pod("web-0")  # no ownerReference when its ADD ran: the reservation records no controller
    conf = sticky_conf(bed, "10.160.0.0/24", "pod")
    conf["ipam"]["kubernetes"]["ippool_mirror"] = False
    bed.add(conf, "web-0", "ctr-1")
    body = {"metadata": {"ownerReferences": [owner_reference(sts)]}}
    bed.kube.request_patch(f"/api/v1/namespaces/{bed.pods_ns}/pods/web-0", body)
    with bed.running("pod-cleanup") as controller:
        controller.wait_for("pod-cleanup: watching pod deletions")
        delete_pod(bed.kube, bed.pods_ns, "web-0")
        controller.wait_for("pod-cleanup: retained OverlappingRangeIPReservation 10.160.0.1")
    spec = bed.reservations()["10.160.0.1"]["spec"]
    assert spec["state"] == "retained" and spec["controller"] == f"apps/v1/StatefulSet/web/{sts['metadata']['uid']}"
    assert bed.add(conf, "web-0", "ctr-2") == "10.160.0.1/24"  # back for the recreated pod


def test_pod_cleanup_retains_a_deleted_pods_sticky_address_and_records_its_controller(bed: Harness) -> None:
    sts = create_statefulset(bed.kube, bed.pods_ns, "web")
    bed.pod("web-0")  # no ownerReference when its ADD ran: the entry records no controller
    conf = sticky_conf(bed, "10.157.0.0/24", "pod")
    bed.add(conf, "web-0", "ctr-1")
    assert "controller" not in bed.allocations()["10.157.0.0-24"]["1"]
    body = {"metadata": {"ownerReferences": [owner_reference(sts)]}}
    bed.kube.request_patch(f"/api/v1/namespaces/{bed.pods_ns}/pods/web-0", body)
    with bed.running("pod-cleanup") as controller:
        controller.wait_for("pod-cleanup: watching pod deletions")
        delete_pod(bed.kube, bed.pods_ns, "web-0")
        _wait_until(lambda: "retained" in bed.allocations()["10.157.0.0-24"]["1"], timeout=10)
        controller.wait_for("pod-cleanup: retained 10.157.0.1")
    entry = bed.allocations()["10.157.0.0-24"]["1"]
    assert entry["controller"] == f"apps/v1/StatefulSet/web/{sts['metadata']['uid']}"
    assert bed.reservations()["10.157.0.1"]["spec"]["state"] == "retained"
    delete_statefulset(bed.kube, bed.pods_ns, "web")
    bed.run("reconcile")  # the recorded controller is what proves the key's owner gone
    assert offsets(bed, "10.157.0.0-24") == set() and bed.reservations() == {}


def test_pod_cleanup_sweep_retains_and_leaves_retained_addresses_to_the_reconciler(bed: Harness) -> None:
    now = int(time.time())
    conf = sticky_conf(bed, "10.158.0.0/24", "mac")
    bed.pod("vm")
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={bed.pods_ns};K8S_POD_NAME=vm;MAC=02:00:00:00:00:09"
    assert run_cni("ADD", conf, container_id="ctr-vm", ifname="net1", cni_args=args).returncode == 0
    delete_pod(bed.kube, bed.pods_ns, "vm")
    bed.create_entries("10.159.0.0-24", "10.159.0.0/24", {
        "1": retained("c1", f"{bed.pods_ns}/gone", "mac:02:00:00:00:00:01", expires=now - 1),
    })  # fmt: skip
    done = bed.run("pod-cleanup")
    entry = bed.allocations()["10.158.0.0-24"]["1"]
    assert entry["sticky"] == "mac:02:00:00:00:00:09" and entry["retained"], done.stderr
    assert offsets(bed, "10.159.0.0-24") == {"1"}  # expired, but releasing retained addresses is not its job
    assert "sweep released 0 allocation(s) and 0 reservation(s), retained 1" in done.stderr


# -- a pass is not held back by one write ----------------------------------------------------------------------


def missed_dels_and_a_leak(bed: Harness, cidr: str, leaked: str) -> dict[str, Any]:
    """A sticky network (with its NAD) whose two pods went without their DELs, and elsewhere a lone reservation of
    a gone pod (another network's leak, due for release)."""
    conf = sticky_conf(bed, cidr, "pod")
    create_nad(bed.kube, bed.pods_ns, "victim", conf)
    for pod in ("p1", "p2"):
        bed.pod(pod)
        bed.add(conf, pod, f"ctr-{pod}")
        delete_pod(bed.kube, bed.pods_ns, pod)
    bed.create_reservation(leaked, "ctr-gone", f"{bed.pods_ns}/gone")
    return conf


def test_a_write_the_api_server_refuses_is_recorded_and_the_pass_goes_on(bed: Harness) -> None:
    """Retains whose `expires` the IPPool's schema refuses (past int64: 422, and again on every pass) do not keep
    the pass from the releases after them."""
    conf = missed_dels_and_a_leak(bed, "10.171.0.0/24", "10.172.0.9")
    ctx = bed.context()
    client = ctx.client()
    reading = observe(client)
    absurd = Evidence(networks={conf["name"]: NetworkSticky(True, 10**20, (f"{bed.pods_ns}/victim",))})
    planned = plan(replace(reading.observed, sticky=absurd), now=time.time())
    assert len(planned.retains) == 2 and len(planned.reservation_releases) == 1
    applier = Applier(ctx, client, source="reconcile", released=ReconcileMetrics(ctx.registry).released)
    report = applier.apply(planned, reading.pools)
    assert report.released_reservations == ["10.172.0.9"] and "10.172.0.9" not in bed.reservations()
    assert [r.split(":")[0] for r in report.refused] == [
        f"10.171.0.{n} in IPPool 10.171.0.0-24 (container ctr-p{n} net1, pod {bed.pods_ns}/p{n})" for n in (1, 2)
    ]
    assert all(" 422 " in r for r in report.refused) and "refused 2" in report.summary()
    assert not any("retained" in e for e in bed.allocations()["10.171.0.0-24"].values())  # left as they were
    assert sum("reconcile: refused 10.171.0." in line for line in bed.logs) == 2


def test_a_tenant_nad_naming_a_network_with_an_absurd_retention_holds_back_no_release(bed: Harness) -> None:
    """Any namespace's NAD may name a network's config (the reconciler cannot tell which NAD a pod used): one
    with a retention past the cap is invalid, 24 h counts, and the pass releases what else leaked."""
    conf = missed_dels_and_a_leak(bed, "10.173.0.0/24", "10.174.0.9")
    tenant = f"{bed.pools_ns}-tenant"
    ipam = {**conf["ipam"], "range": "10.99.0.0/24", "sticky_retention": "99999999999999999h"}
    create_nad(bed.kube, tenant, "evil", {**conf, "ipam": ipam})
    try:
        done = bed.run("reconcile")
    finally:
        bed.kube.request("DELETE", f"/apis/k8s.cni.cncf.io/v1/namespaces/{tenant}/network-attachment-definitions/evil")
    assert "10.174.0.9" not in bed.reservations() and "refused" not in done.stderr, done.stderr
    entries = bed.allocations()["10.173.0.0-24"]
    assert sorted(entries) == ["1", "2"] and all(e["expires"] - e["retained"] == DAY for e in entries.values())
