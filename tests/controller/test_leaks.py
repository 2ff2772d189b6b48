"""The leak planner, pure: pools, reservations, pods and nodes as the API lists them -> what is released,
what is repaired, and why everything else is kept."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import Any

import pytest

from whereabouts.controller.capacity import capacity, windows
from whereabouts.controller.leaks import (
    GRACE,
    Plan,
    Verdict,
    judge_pod,
    observed_from,
    plan,
    plan_for_pod,
    pod_state,
    read_pool,
    timestamp,
)
from whereabouts.controller.sticky import Evidence, NetworkSticky
from whereabouts.kube.resources import ATTACHMENT_LABEL, attachment_label, reservation_owner

NOW = timestamp("2026-01-01T12:00:00Z") or 0.0


def ago(seconds: float) -> str:
    return dt.datetime.fromtimestamp(NOW - seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pool(name: str, cidr: str, **allocations: tuple[str, str, str]) -> dict[str, Any]:
    """`allocations`: offset (as `o5`) -> (container ID, podref, ifname)."""
    entries = {k[1:]: {"id": c, "podref": p, "ifname": i} for k, (c, p, i) in allocations.items()}
    return {"metadata": {"name": name}, "spec": {"range": cidr, "allocations": entries}}


def resv(name: str, cid: str, podref: str, ifname: str = "net1", *, age: float = 3600) -> dict[str, Any]:
    meta = {"name": name, "resourceVersion": "7", "creationTimestamp": ago(age)}
    return {"metadata": meta, "spec": {"containerid": cid, "podref": podref, "ifname": ifname}}


def ours(reservation: dict[str, Any]) -> dict[str, Any]:
    """The reservation as this plugin writes it: labelled with its attachment (a Go plugin's carries no labels)."""
    labels = {ATTACHMENT_LABEL: attachment_label(reservation_owner(reservation))}
    return {**reservation, "metadata": {**reservation["metadata"], "labels": labels}}


def retained(reservation: dict[str, Any], *, expires: int) -> dict[str, Any]:
    """The reservation as a sticky DEL leaves it: retained for its pod's key until `expires`."""
    podref = reservation["spec"]["podref"]
    sticky = {"sticky": f"pod:{podref}/net1", "retained": int(NOW) - 600, "expires": expires, "state": "retained"}
    return {**reservation, "spec": {**reservation["spec"], **sticky}}


def pod(ref: str, phase: str = "Running", *, node: str = "n1", deleting: bool = False, annotated: bool = True) -> dict:
    namespace, name = ref.split("/")
    meta: dict[str, Any] = {"namespace": namespace, "name": name, "uid": f"uid-{name}"}
    meta["annotations"] = {"k8s.v1.cni.cncf.io/network-status": "[]"} if annotated else {}
    if deleting:
        meta["deletionTimestamp"] = ago(1)
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": phase}}


def node(name: str, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def outcome(result: Plan) -> dict[str, Any]:
    """Releases as 'pool/offset+reservation...', lone reservations by name, repairs by name."""
    released = [
        f"{r.entry.pool}/{r.entry.offset}" + "".join(f"+{x.name}" for x in r.reservations) for r in result.releases
    ]
    return {
        "release": sorted(released),
        "lone": sorted(f"{r.reservation.name}{' (aged)' if r.aged else ''}" for r in result.reservation_releases),
        "repair": sorted(r.name for r in result.repairs),
    }


A = ("ctr-a", "ns/a", "net1")
B = ("ctr-b", "ns/b", "net1")
NONE = {"release": [], "lone": [], "repair": []}

# (pools, reservations, pods, expected outcome, a kept reason that must appear, or "")
CASES = {
    "gone pod: entry then its reservation": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B)],
        [resv("10.0.0.5", *A), resv("10.0.0.6", *B)],
        [pod("ns/b")],
        {**NONE, "release": ["10.0.0.0-24/5+10.0.0.5"]},
        "pod ns/b exists (Running)",
    ),
    "network-status not written yet (#162/#207): kept": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("10.0.0.5", *A, age=1)],
        [pod("ns/a", "Pending", annotated=False)],
        NONE,
        "network-status not written yet",
    ),
    "recreated StatefulSet pod (#176): both entries kept": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o9=("ctr-a2", "ns/a", "net1"))],
        [resv("10.0.0.5", *A), resv("10.0.0.9", "ctr-a2", "ns/a")],
        [pod("ns/a")],
        NONE,
        "cannot tell which is stale",
    ),
    "terminating pod: kept for its DEL": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("10.0.0.5", *A)],
        [pod("ns/a", deleting=True)],
        NONE,
        "is terminating",
    ),
    "pod on a deleted node: kept while the pod exists": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("10.0.0.5", *A)],
        [pod("ns/a", node="vanished")],
        NONE,
        "its node vanished is gone",
    ),
    "pod on a NotReady node: kept": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("10.0.0.5", *A)],
        [pod("ns/a", node="sick")],
        NONE,
        "its node sick is NotReady",
    ),
    "Succeeded pod: released": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("10.0.0.5", *A)],
        [pod("ns/a", "Succeeded")],
        {**NONE, "release": ["10.0.0.0-24/5+10.0.0.5"]},
        "",
    ),
    "Failed and terminating pod: released": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [],
        [pod("ns/a", "Failed", deleting=True)],
        {**NONE, "release": ["10.0.0.0-24/5"]},
        "",
    ),
    "no pod recorded: kept": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=("ctr-x", "/", "eth0"), o6=("ctr-y", "", "eth0"))],
        [resv("10.0.0.5", "ctr-x", "/", "eth0"), resv("10.0.0.6", "ctr-y", "/", "eth0")],
        [],
        NONE,
        "no pod recorded",
    ),
    "network_name pool: its prefixed reservation": (
        [pool("blue-10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("blue-10.0.0.5", *A)],
        [],
        {**NONE, "release": ["blue-10.0.0.0-24/5+blue-10.0.0.5"]},
        "",
    ),
    "node-slice pool: reservation without the node": (
        [pool("node1-10.0.0.0-26", "10.0.0.0/26", o5=A)],
        [resv("10.0.0.5", *A)],
        [],
        {**NONE, "release": ["node1-10.0.0.0-26/5+10.0.0.5"]},
        "",
    ),
    "network and node-slice pool": (
        [pool("blue-node1-10.0.0.0-26", "10.0.0.0/26", o5=A)],
        [resv("blue-10.0.0.5", *A)],
        [],
        {**NONE, "release": ["blue-node1-10.0.0.0-26/5+blue-10.0.0.5"]},
        "",
    ),
    "same address in two networks: each entry its own reservation": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A), pool("blue-10.0.0.0-24", "10.0.0.0/24", o5=B)],
        [resv("10.0.0.5", *A), resv("blue-10.0.0.5", *B)],
        [pod("ns/a")],
        {**NONE, "release": ["blue-10.0.0.0-24/5+blue-10.0.0.5"]},
        "",
    ),
    "IPv6 pool and a trailing '-' name": (
        [pool("2001---32", "2001::/32", o1=A, **{f"o{1 << 64}": B})],
        [resv("2001--1", *A), resv("2001-0-0-1--0", *B)],
        [],
        {**NONE, "release": ["2001---32/1+2001--1", f"2001---32/{1 << 64}+2001-0-0-1--0"]},
        "",
    ),
    "lone reservation, pod gone: released": (
        [pool("10.0.0.0-24", "10.0.0.0/24")],
        [resv("10.0.0.5", *A, age=1)],
        [],
        {**NONE, "lone": ["10.0.0.5"]},
        "",
    ),
    "lone retained reservation, pod gone, not expired: kept for its sticky key (a mirror behind, or none)": (
        [],
        [retained(resv("10.0.0.5", *A), expires=int(NOW) + 60)],
        [],
        NONE,
        "retained for its sticky key",
    ),
    "lone retained reservation, pod gone, expired: released": (
        [],
        [retained(resv("10.0.0.5", *A), expires=int(NOW) - 60)],
        [],
        {**NONE, "lone": ["10.0.0.5"]},
        "",
    ),
    "lone reservation, live pod, young: an ADD between its writes": (
        [],
        [resv("10.0.0.5", *A, age=GRACE - 10)],
        [pod("ns/a", "Pending", annotated=False)],
        NONE,
        "an ADD may be between its two writes",
    ),
    "lone reservation, live pod, past the grace period: kept, the reservation is the record": (
        [],
        [resv("10.0.0.5", *A, age=GRACE + 10)],
        [pod("ns/a")],
        NONE,
        "its pod is there: the reservation is the record",
    ),
    "lone reservation, no pod, past the grace period: released": (
        [],
        [resv("10.0.0.5", "ctr-x", "/", age=GRACE + 10)],
        [],
        {**NONE, "lone": ["10.0.0.5 (aged)"]},
        "",
    ),
    "lone reservation this plugin wrote (its attachment label), no pod, past the grace period: the record, kept": (
        [],
        [ours(resv("10.0.0.5", "ctr-x", "/", age=GRACE * 10))],
        [],
        NONE,
        "this plugin's reservation is the record",
    ),
    "old reservation moved to a recreated pod's container: adoption in flight, kept": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("10.0.0.5", "ctr-a2", "ns/a", age=GRACE + 10)],
        [pod("ns/a")],
        NONE,
        "a recreated pod's ADD is taking it over",
    ),
    "reservation of another interface does not back the entry": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [resv("10.0.0.5", "ctr-a", "ns/a", "net2")],
        [],
        {"release": ["10.0.0.0-24/5"], "lone": ["10.0.0.5"], "repair": []},
        "",
    ),
    "live entry without reservation where the pool uses them: repaired": (
        [pool("blue-10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B)],
        [resv("blue-10.0.0.6", *B)],
        [pod("ns/a"), pod("ns/b")],
        {**NONE, "repair": ["blue-10.0.0.5"]},
        "",
    ),
    "live entry without reservation, the pool has none (overlapping off): untouched": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B)],
        [],
        [pod("ns/a"), pod("ns/b")],
        NONE,
        "",
    ),
    "gone entry without reservation: released, not repaired": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B)],
        [resv("10.0.0.6", *B)],
        [pod("ns/b")],
        {**NONE, "release": ["10.0.0.0-24/5"]},
        "",
    ),
    "terminating entry without reservation: not repaired": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B)],
        [resv("10.0.0.6", *B)],
        [pod("ns/a", deleting=True), pod("ns/b")],
        NONE,
        "is terminating",
    ),
    "reservation name held by another attachment: no repair, reported": (
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B)],
        [resv("10.0.0.5", "ctr-z", "ns/z", age=1), resv("10.0.0.6", *B)],
        [pod("ns/a"), pod("ns/b"), pod("ns/z")],
        NONE,
        "names another holder (container ctr-z)",
    ),
    "unreadable pool: no release by age": (
        [{"metadata": {"name": "odd"}, "spec": {"range": "not-a-cidr", "allocations": {}}}],
        [resv("10.0.0.5", *A, age=GRACE + 10)],
        [pod("ns/a")],
        NONE,
        "range or name unreadable",
    ),
}


@pytest.mark.parametrize(("pools", "reservations", "pods", "expected", "kept_reason"), CASES.values(), ids=CASES)
def test_plan(pools: list, reservations: list, pods: list, expected: dict, kept_reason: str) -> None:
    observed = observed_from(pools, reservations, pods, [node("n1"), node("sick", ready=False)])
    result = plan(observed, now=NOW)
    assert outcome(result) == expected
    if kept_reason:
        assert any(kept_reason in k.reason for k in result.kept), [k.reason for k in result.kept]


def slice_pool(network: str, cidr: str, *listing: tuple[str, str], named: str | None = None) -> dict[str, Any]:
    """A NodeSlicePool: `listing` (node, slice); `named` its network_name annotation (unannotated: its name)."""
    annotations = {} if named is None else {"whereabouts.cni.cncf.io/network-name": named}
    meta = {"name": network, "annotations": annotations}
    status = {"allocations": [{"nodeName": n, "sliceRange": c} for n, c in listing]}
    return {"metadata": meta, "spec": {"range": cidr, "sliceSize": "/24"}, "status": status}


SLICED_CASES = {
    "a sliced network's node pool, none of its entries reserved (written with overlapping off): repaired": (
        [pool("blue-n1-10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B)],
        [slice_pool("blue", "10.0.0.0/16", ("n1", "10.0.0.0/24"))],
        {**NONE, "repair": ["blue-10.0.0.5", "blue-10.0.0.6"]},
    ),
    "the old slice's pool of a node re-sliced since (its node lists another slice): repaired": (
        [pool("blue-n1-10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [slice_pool("blue", "10.0.0.0/16", ("n1", "10.0.0.0/25"))],
        {**NONE, "repair": ["blue-10.0.0.5"]},
    ),
    "the unnamed network's node pool, its node gone from the listing but a Node still: repaired": (
        [pool("n1-10.0.0.0-24", "10.0.0.0/24", o5=A)],
        [slice_pool("slices", "10.0.0.0/16", named="")],
        {**NONE, "repair": ["10.0.0.5"]},
    ),
    "a pool outside the sliced range, or of a network nothing slices: untouched (overlapping off)": (
        [pool("blue-n1-10.9.0.0-24", "10.9.0.0/24", o5=A), pool("red-n1-10.0.0.0-24", "10.0.0.0/24", o6=B)],
        [slice_pool("blue", "10.0.0.0/16", ("n1", "10.0.0.0/24"))],
        NONE,
    ),
}


@pytest.mark.parametrize(("pools", "slice_pools", "expected"), SLICED_CASES.values(), ids=SLICED_CASES)
def test_a_node_slice_pools_entries_always_get_their_reservations(
    pools: list, slice_pools: list, expected: dict
) -> None:
    """A re-slice gives a node a slice overlapping its old pool's addresses: only reservations guard them across
    the two pools, so a sliced network's pools get theirs whatever overlapping ranges says."""
    observed = observed_from(pools, [], [pod("ns/a"), pod("ns/b")], [node("n1")], slice_pools)
    assert outcome(plan(observed, now=NOW)) == expected


POD_CASES = {
    "gone": ("ns/a", None, Verdict.RELEASE),
    "Succeeded": ("ns/a", pod("ns/a", "Succeeded"), Verdict.RELEASE),
    "Failed": ("ns/a", pod("ns/a", "Failed"), Verdict.RELEASE),
    "Running": ("ns/a", pod("ns/a"), Verdict.LIVE),
    "Pending without annotation": ("ns/a", pod("ns/a", "Pending", annotated=False), Verdict.LIVE),
    "no phase yet": ("ns/a", pod("ns/a", ""), Verdict.LIVE),
    "Unknown phase": ("ns/a", pod("ns/a", "Unknown"), Verdict.LIVE),
    "terminating": ("ns/a", pod("ns/a", deleting=True), Verdict.TERMINATING),
    "no podref": ("", None, Verdict.UNKNOWN),
    "podref '/'": ("/", None, Verdict.UNKNOWN),
    "podref without a namespace": ("a", None, Verdict.UNKNOWN),
}


@pytest.mark.parametrize(("podref", "obj", "verdict"), POD_CASES.values(), ids=POD_CASES)
def test_judge_pod(podref: str, obj: dict | None, verdict: Verdict) -> None:
    assert judge_pod(podref, None if obj is None else pod_state(obj)).verdict is verdict


PLAN_MODES = {
    "reconciler: releases an old lone reservation that records no pod": (True, ["10.0.0.5 (aged)"]),
    "pod cleanup (aged off): keeps it, pods are its only evidence": (False, []),
}


@pytest.mark.parametrize(("aged", "lone"), PLAN_MODES.values(), ids=PLAN_MODES)
def test_age_rule_is_the_reconcilers_only(aged: bool, lone: list[str]) -> None:
    observed = observed_from([], [resv("10.0.0.5", "ctr-x", "/", age=GRACE * 10)], [])
    assert outcome(plan(observed, now=NOW, aged=aged))["lone"] == lone


def test_plan_for_pod_takes_only_that_pods_entries_and_reservations() -> None:
    observed = observed_from(
        [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B, o7=("ctr-a", "ns/a", "net2"))],
        [resv("10.0.0.5", *A), resv("10.0.0.6", *B), resv("10.0.0.9", "ctr-a-crashed", "ns/a", age=1)],
    )
    result = plan_for_pod(observed, "ns/a")
    expected = {"release": ["10.0.0.0-24/5+10.0.0.5", "10.0.0.0-24/7"], "lone": ["10.0.0.9"], "repair": []}
    assert outcome(result) == expected


def sticky_resv(name: str, *, retained_at: int = 0, expires: int = 0, controller: str = "") -> dict[str, Any]:
    """A's reservation on a `sticky: pod` network, held or (retained_at) retained, its pool entry not written."""
    spec = {"sticky": "pod:ns/a/net1", "netconf": "tenant", "controller": controller, "state": "held"}
    if retained_at:
        spec.update(retained=retained_at, expires=expires, state="retained")
    reservation = resv(name, *A)
    return {**reservation, "spec": {**reservation["spec"], **spec}}


STS = "apps/v1/StatefulSet/web/uid-1"
LONE_STICKY = {
    "held, pod gone (a missed DEL): retained": (sticky_resv("10.0.0.5"), {}, None, ["10.0.0.5"], []),
    "held, pod gone, sticky off for its network: released": (
        sticky_resv("10.0.0.5"),
        {},
        NetworkSticky(False, 3600, ("ns/tenant",)),
        [],
        ["10.0.0.5"],
    ),
    "retained, its StatefulSet gone: released": (
        sticky_resv("10.0.0.5", retained_at=int(NOW) - 60, controller=STS),
        {STS: False},
        None,
        [],
        ["10.0.0.5"],
    ),
    "retained with no expiry, its StatefulSet there: kept": (
        sticky_resv("10.0.0.5", retained_at=int(NOW) - 60, controller=STS),
        {STS: True},
        None,
        [],
        [],
    ),
    "retained, its retention passed, the pod gone: released": (
        sticky_resv("10.0.0.5", retained_at=int(NOW) - 60, expires=int(NOW) - 1),
        {},
        None,
        [],
        ["10.0.0.5"],
    ),
}


@pytest.mark.parametrize(("reservation", "controllers", "network", "retained", "released"), LONE_STICKY.values(),
                         ids=LONE_STICKY)  # fmt: skip
def test_a_lone_sticky_reservation_is_judged_as_its_pool_entry_would_be(
    reservation: dict[str, Any], controllers: dict, network: Any, retained: list[str], released: list[str]
) -> None:
    """With no pool entry behind it (the mirror behind, or off): retained when its pod went without a DEL,
    released only when its key's owner is proven gone (before: released with its pod, and a retained one
    kept until it expired, which a pod key's on Kubernetes never does)."""
    networks = {"tenant": network} if network is not None else {}
    observed = replace(observed_from([], [reservation], []), sticky=Evidence(controllers, None, networks))
    result = plan(observed, now=NOW)
    assert [r.reservation.name for r in result.reservation_retains] == retained
    assert [r.reservation.name for r in result.reservation_releases] == released
    if retained:
        assert result.reservation_retains[0].retention == 24 * 3600  # the default: no NAD says otherwise
    for_pod = plan_for_pod(observed_from([], [reservation], []), "ns/a", controller=STS)  # pod cleanup: no evidence
    if retained:
        assert [(r.reservation.name, r.controller) for r in for_pod.reservation_retains] == [("10.0.0.5", STS)]


CAPACITY_CASES = {
    "IPv4 /24: network and broadcast out": ("10.0.0.0/24", 254),
    "IPv4 /16: also x.x.N.0 out": ("10.0.0.0/16", 65534 - 255),
    "IPv4 /31: both usable": ("10.0.0.2/31", 2),
    "IPv4 /31 holding x.x.x.0: never picked": ("10.0.0.0/31", 1),
    "IPv6 /64": ("caa5::/64", (1 << 64) - 2),
}


@pytest.mark.parametrize(("cidr", "capacity"), CAPACITY_CASES.values(), ids=CAPACITY_CASES)
def test_pool_capacity(cidr: str, capacity: int) -> None:
    read = read_pool(pool(cidr.replace("/", "-").replace(":", "-"), cidr))
    assert read is not None and read[0].capacity == capacity


def nad_of(config: dict, created: str = "2024-01-01T00:00:00Z") -> dict:
    return {"metadata": {"name": "n", "namespace": "ns", "creationTimestamp": created},
            "spec": {"config": json.dumps(config)}}  # fmt: skip


def test_pool_capacity_of_a_nads_pools_leaves_out_the_gateway_in_whole_ranges_and_slices() -> None:
    ipam = {"type": "whereabouts", "range": "10.0.0.0/24", "gateway": "10.0.0.1", "network_name": "blue",
            "node_slice_size": "/26", "ipRanges": [{"range": "10.1.0.0/24"}]}  # fmt: skip
    configured = windows([nad_of({"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "ipam": ipam}),
                          nad_of({"name": "broken", "ipam": {"type": "whereabouts", "range": "nope"}})])  # fmt: skip

    def of(name: str, cidr: str, prefix: str) -> int:
        read = read_pool(pool(name, cidr))
        assert read is not None and read[0].prefix == prefix
        return capacity(read[0], configured)

    assert of("blue-10.0.0.0-24", "10.0.0.0/24", "blue-") == 253  # the gateway is never handed out
    assert of("blue-10.1.0.0-24", "10.1.0.0/24", "blue-") == 254  # a range without it keeps every host
    assert of("blue-node1-10.0.0.0-26", "10.0.0.0/26", "blue-node1-") == 62  # .1-.63 less the gateway
    assert of("blue-node2-10.0.0.64-26", "10.0.0.64/26", "blue-node2-") == 64  # a slice's edges are hosts
    assert of("10.2.0.0-24", "10.2.0.0/24", "") == 254  # no NAD: the range alone


def go_resv(name: str, **spec: str) -> dict[str, Any]:
    """A reservation as a Go plugin of another version writes it: v0.7 and later without `containerid`, 0.5 and
    earlier without `ifname`."""
    return {"metadata": {"name": name, "resourceVersion": "7", "creationTimestamp": ago(3600)}, "spec": spec}


def test_go_reservations_that_record_no_container_or_interface_back_their_entries() -> None:
    """Read as another holder's, they made a live pod's entry 'names another holder (container )' and its
    reservation a lone one ('no pool entry'); a gone pod's entry and reservation were released apart. One naming
    another container is still another holder's."""
    C = ("ctr-c", "ns/c", "net1")
    pools = [pool("10.0.0.0-24", "10.0.0.0/24", o5=A, o6=B, o7=C, o8=("ctr-d", "ns/d", "net1"))]
    reservations = [
        go_resv("10.0.0.5", podref="ns/a", ifname="net1"),
        go_resv("10.0.0.6", containerid="ctr-b", podref="ns/b"),
        resv("10.0.0.7", *C),
        go_resv("10.0.0.8", podref="ns/d", ifname="net2"),
    ]
    result = plan(observed_from(pools, reservations, [pod("ns/a"), pod("ns/b"), pod("ns/c"), pod("ns/d")]), now=NOW)
    assert outcome(result) == NONE
    wrong = [k.reason for k in result.kept if "another holder" in k.reason or "no pool entry" in k.reason]
    assert len(wrong) == 2 and all("10.0.0.8" in reason or "ns/d" in reason for reason in wrong), wrong
    result = plan(observed_from(pools, reservations, [pod("ns/c"), pod("ns/d")]), now=NOW)
    assert outcome(result)["release"] == ["10.0.0.0-24/5+10.0.0.5", "10.0.0.0-24/6+10.0.0.6"]
    assert outcome(result)["lone"] == []
