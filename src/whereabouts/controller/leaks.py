"""Leak planning without I/O: from what was listed (IPPools, OverlappingRangeIPReservations, Pods, Nodes),
decide which allocations and reservations are not in use, which reservations to recreate, and why every
other entry is kept. A driver (controller.reconcile) confirms and applies the plan.

Evidence that an address is not in use, and nothing else, releases it:
    pod not found          the listed pods lack it, and a fresh GET right before the write says 404
    pod Succeeded/Failed   terminal: the kubelet tore its sandbox down (confirmed by the same fresh GET)
    lone reservation aged  no pool entry behind it, older than GRACE (an ADD writes the reservation, then the
                           pool entry, and gives up after 45 s), still lone on a fresh re-read of the pools, and
                           recording no pod (one that records a live pod is that pod's: the reservation is the
                           record, the IPPool entry a mirror the node daemon writes a moment later, see
                           store.kubecache; it is kept until the pod is gone)
Sticky addresses (controller.sticky): a held entry with a sticky key whose pod is gone is turned retained
instead (its DEL never ran); a retained entry is no pod's, and only its key's owner, proven gone, releases it.
A lone reservation (no pool entry: the mirror is behind, or off) is judged the same way: retained when its
pod is gone, released when its key's owner is.
Everything else is kept, with its reason: a pod that exists under that name keeps all its entries (its
network-status annotation may not be written yet: Go #162/#207; a StatefulSet pod recreated under the same
name adopts its old address, so several entries of one pod cannot be told apart: #176), however its node
looks; a terminating pod is released by its own DEL; an entry recording no pod cannot be judged.

Reservations are matched to pool entries by (address, container ID, interface). The network prefix of a
reservation's name cannot be recovered from the pool's name ('<network>-<node>-<cidr>', either part
optional), so an entry's reservation is any of '<head><address>' where <head> is '' or a dash-ended head
of the pool name's prefix ('', 'blue-', 'blue-node1-' for pool 'blue-node1-10.0.0.0-24').

A kept entry without its reservation gets one (a repair) where its pool's other entries have theirs, and in
every node-slice pool (a pool whose network a NodeSlicePool slices): there the reservations are what guards an
address once a re-slice gives its node a new slice overlapping the old one, whatever overlapping ranges says.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from whereabouts.controller import sticky
from whereabouts.controller.sticky import Evidence
from whereabouts.errors import InvalidConfig
from whereabouts.kube.resources import (
    ATTACHMENT_LABEL,
    NO_POD,
    PoolNames,
    entry_owner,
    offset_value,
    pool_entries,
    reservation_name,
    reservation_owner,
    slice_networks,
)
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import Network, format_ip, parse_range, parse_request

GRACE = 120.0  # seconds before a lone reservation of a live pod counts as left behind (a CNI call gives up at 45)
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


@dataclass(frozen=True)
class PodState:
    ref: str  # "<namespace>/<name>"
    uid: str
    phase: str
    node: str
    terminating: bool  # deletionTimestamp set
    annotated: bool  # Multus wrote its network-status annotation (reported, never relied upon)


@dataclass(frozen=True)
class Pool:
    name: str
    cidr: str
    prefix: str  # the name before its CIDR part: '', 'blue-', 'node1-', 'blue-node1-'
    capacity: int  # addresses automatic picks can hand out (network, broadcast and x.x.x.0 excluded)


@dataclass(frozen=True)
class Entry:
    """One allocation of an IPPool: `offset` is its key in spec.allocations."""

    pool: str
    prefix: str
    offset: str
    version: int
    ip: int
    owner: Owner
    cidr: str = ""  # the pool's range

    @property
    def address(self) -> str:
        return format_ip(self.version, self.ip)

    @property
    def suffix(self) -> str:
        """Its reservation's name without the network prefix."""
        return reservation_name("", self.version, self.ip)

    def candidates(self) -> list[str]:
        heads = [""] + [self.prefix[: i + 1] for i, char in enumerate(self.prefix) if char == "-"]
        return [head + self.suffix for head in heads]

    def describe(self) -> str:
        who = f"container {self.owner.container_id} {self.owner.ifname}, pod {self.owner.podref or '-'}"
        state = ", retained" if self.owner.retained else ""
        return f"{self.address} in IPPool {self.pool} ({who}{state})"


@dataclass(frozen=True)
class Reservation:
    name: str
    resource_version: str
    created: float | None  # metadata.creationTimestamp, seconds since the epoch
    owner: Owner
    # written by this plugin (its attachment label): the record of its address, in use until its runtime's DEL
    # or GC says otherwise, never released by age (a Go plugin's, unlabelled, may be a crashed ADD's leftover)
    record: bool = False

    def describe(self) -> str:
        who = f"container {self.owner.container_id} {self.owner.ifname}, pod {self.owner.podref or '-'}"
        return f"OverlappingRangeIPReservation {self.name} ({who})"


@dataclass(frozen=True)
class Observed:
    """One reading of the cluster. Pools are read before pods: an allocation made after the pod list then
    belongs to a pod the list already shows (the kubelet only sets up pods that exist), or is not seen."""

    pools: tuple[Pool, ...] = ()
    entries: tuple[Entry, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    pods: Mapping[str, PodState] = field(default_factory=dict)
    nodes: Mapping[str, bool] | None = None  # name -> Ready; None: not read
    unreadable: tuple[str, ...] = ()  # IPPools whose range or name the plugin would not have written
    sticky: Evidence | None = None  # read for retained entries; None: they are not judged (pod cleanup)
    sliced: Mapping[str, str] = field(default_factory=dict)  # node-slice pool name -> its network's name


class Verdict(Enum):
    RELEASE = "release"  # the evidence says not in use
    LIVE = "live"  # a pod of that name exists
    TERMINATING = "terminating"  # its DEL releases it
    UNKNOWN = "unknown"  # no pod recorded: cannot be judged
    RETAINED = "retained"  # no pod's: its sticky key's owner is not proven gone


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str
    notable: bool = False  # worth a log line even when kept (its node is gone or NotReady)


@dataclass(frozen=True)
class EntryRelease:
    entry: Entry
    reservations: tuple[Reservation, ...]  # deleted after the entry, as the store orders a release
    reason: str


@dataclass(frozen=True)
class EntryRetain:
    """A held sticky entry whose pod is gone: retained, as its DEL would have left it (controller.sticky)."""

    entry: Entry
    reservations: tuple[Reservation, ...]  # rewritten to say retained
    reason: str
    retention: int  # seconds (ignored for a claim key)
    controller: str = ""  # recorded when the entry has none (the deleted pod's, seen by pod cleanup)


@dataclass(frozen=True)
class ReservationRelease:
    reservation: Reservation
    reason: str
    aged: bool  # released by age (its pod may exist), not by pod evidence


@dataclass(frozen=True)
class ReservationRetain:
    """A lone held sticky reservation whose pod is gone (a missed DEL, with no pool entry: the mirror behind, or
    none): rewritten retained, as its DEL would have left it."""

    reservation: Reservation
    reason: str
    retention: int  # seconds (ignored for a claim key)
    controller: str = ""  # recorded when it has none (the deleted pod's, seen by pod cleanup)


@dataclass(frozen=True)
class Repair:
    entry: Entry
    name: str  # the reservation to create
    reason: str


@dataclass(frozen=True)
class Kept:
    what: str
    reason: str
    notable: bool = False  # worth a log line: not simply a running pod's address


@dataclass
class Plan:
    releases: list[EntryRelease] = field(default_factory=list)
    retains: list[EntryRetain] = field(default_factory=list)
    reservation_releases: list[ReservationRelease] = field(default_factory=list)
    reservation_retains: list[ReservationRetain] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.releases or self.retains or self.reservation_releases or self.reservation_retains
                    or self.repairs)  # fmt: skip


# -- reading the API's objects ------------------------------------------------------------------------------


def timestamp(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def pod_state(obj: Mapping[str, Any]) -> PodState:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    return PodState(
        ref=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
        uid=meta.get("uid", ""),
        phase=status.get("phase", ""),
        node=spec.get("nodeName", ""),
        terminating=bool(meta.get("deletionTimestamp")),
        annotated=NETWORK_STATUS in (meta.get("annotations") or {}),
    )


def node_ready(obj: Mapping[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def read_pool(obj: Mapping[str, Any]) -> tuple[Pool, list[Entry]] | None:
    """A listed IPPool and its entries; None when its range or name is not one the plugin writes."""
    name, cidr = obj.get("metadata", {}).get("name", ""), obj.get("spec", {}).get("range", "")
    tail = PoolKey("", cidr).name
    prefix = name[: len(name) - len(tail)]
    try:
        version, base = parse_request(cidr)
        capacity = parse_range(cidr, key=f"IPPool {name}").capacity()
    except (ValueError, InvalidConfig):
        return None
    if not cidr or not name.endswith(tail) or (prefix and not prefix.endswith("-")):
        return None
    entries = [_entry(name, prefix, cidr, offset, version, base, value) for offset, value in _allocations(obj)]
    return Pool(name, cidr, prefix, capacity), [e for e in entries if e is not None]


def _allocations(obj: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return sorted(pool_entries(obj).items(), key=lambda kv: kv[0].zfill(40))


def _entry(
    pool: str, prefix: str, cidr: str, offset: str, version: int, base: int, value: Mapping[str, Any]
) -> Entry | None:
    number = offset_value(offset)
    if number is None:  # (no offset: the plugins skip it)
        return None
    return Entry(pool, prefix, offset, version, base + number, entry_owner(value), cidr)


def read_reservation(obj: Mapping[str, Any]) -> Reservation:
    meta = obj.get("metadata", {})
    owner = reservation_owner(obj)
    created = timestamp(meta.get("creationTimestamp", ""))
    record = ATTACHMENT_LABEL in (meta.get("labels") or {})
    return Reservation(meta.get("name", ""), meta.get("resourceVersion", ""), created, owner, record)


def observed_from(
    pools: Iterable[Mapping[str, Any]],
    reservations: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]] = (),
    nodes: Iterable[Mapping[str, Any]] | None = None,
    slice_pools: Iterable[Mapping[str, Any]] = (),
) -> Observed:
    pools, nodes = list(pools), None if nodes is None else list(nodes)
    read = [r for r in (read_pool(obj) for obj in pools) if r is not None]
    names = {pool.name for pool, _ in read}
    node_names = {obj.get("metadata", {}).get("name", "") for obj in nodes or ()}
    return Observed(
        pools=tuple(pool for pool, _ in read),
        entries=tuple(entry for _, entries in read for entry in entries),
        reservations=tuple(read_reservation(obj) for obj in reservations),
        pods={state.ref: state for state in map(pod_state, pods)},
        nodes=None if nodes is None else {obj.get("metadata", {}).get("name", ""): node_ready(obj) for obj in nodes},
        unreadable=tuple(n for n in (o.get("metadata", {}).get("name", "") for o in pools) if n not in names),
        sliced=sliced_pools(pools, slice_pools, node_names),
    )


def sliced_pools(
    pools: Iterable[Mapping[str, Any]], slice_pools: Iterable[Mapping[str, Any]], nodes: Collection[str]
) -> dict[str, str]:
    """Node-slice pool name -> its network: a pool named as a node's (a node a NodeSlicePool lists, or a current
    Node) of a network a NodeSlicePool slices, inside that network's range."""
    slice_pools = list(slice_pools)
    ranges: dict[str, list[str]] = defaultdict(list)  # (a Go NodeSlicePool may be the unnamed network's: "")
    for obj in slice_pools:
        for network in slice_networks(obj):
            ranges[network].append((obj.get("spec") or {}).get("range", ""))
    names = PoolNames(ranges, nodes, slice_pools)  # a name that reads two ways is no node-slice pool here
    found: dict[str, str] = {}
    for obj in pools:
        key = names.key(obj)
        if key is not None and key.node and any(_inside(key.cidr, outer) for outer in ranges.get(key.network, ())):
            found[obj["metadata"]["name"]] = key.network
    return found


def _inside(cidr: str, outer: str) -> bool:
    try:
        inner, whole = Network.parse(cidr, strict=False), Network.parse(outer, strict=False)
    except ValueError:
        return False
    return whole.contains(inner.version, inner.address) and whole.contains(inner.version, inner.last)


# -- judging ------------------------------------------------------------------------------------------------


def judge_pod(podref: str, pod: PodState | None, nodes: Mapping[str, bool] | None = None) -> Judgement:
    """What the pod behind `podref` says about its addresses. Used on the list and again on the fresh GET
    before a write: an address is released only when both say RELEASE."""
    namespace, _, name = podref.partition("/")
    if not namespace or not name:
        return Judgement(Verdict.UNKNOWN, f"no pod recorded (podref {podref or NO_POD!r})")
    if pod is None:
        return Judgement(Verdict.RELEASE, f"pod {podref} not found")
    if pod.phase in TERMINAL_PHASES:
        return Judgement(Verdict.RELEASE, f"pod {podref} is {pod.phase}: its sandbox is torn down")
    if pod.terminating:
        return Judgement(Verdict.TERMINATING, f"pod {podref} is terminating: its DEL releases it")
    node = _node_note(pod, nodes)
    annotation = "" if pod.annotated else "; network-status not written yet"
    return Judgement(Verdict.LIVE, f"pod {podref} exists ({pod.phase or 'no phase'}){node}{annotation}", bool(node))


def _node_note(pod: PodState, nodes: Mapping[str, bool] | None) -> str:
    if nodes is None or not pod.node:
        return ""
    if pod.node not in nodes:
        return f"; its node {pod.node} is gone"
    return "" if nodes[pod.node] else f"; its node {pod.node} is NotReady"


# -- planning -----------------------------------------------------------------------------------------------


def backing_index(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Reservation name -> the entries that reservation may stand behind."""
    index: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        for name in entry.candidates():
            index[name].append(entry)
    return index


def backs(index: Mapping[str, list[Entry]], reservation: Reservation) -> bool:
    """Some pool entry is this reservation's: same address, container ID and interface (as far as a Go plugin's
    records them: Owner.recorded_in)."""
    return any(e.owner.recorded_in(reservation.owner) for e in index.get(reservation.name, ()))


def adoption_in_flight(index: Mapping[str, list[Entry]], reservation: Reservation) -> bool:
    """A recreated pod's ADD moves the reservation to its new container first, then the pool entry."""
    return any(e.owner.same_pod_interface(reservation.owner) for e in index.get(reservation.name, ()))


def plan(observed: Observed, *, now: float, grace: float = GRACE, repair: bool = True, aged: bool = True) -> Plan:
    """The whole reconciliation. `repair` recreates missing reservations of kept entries; `aged` releases
    lone reservations by age. Pod cleanup turns both off: it acts on pod evidence only."""
    result = Plan()
    by_name = {r.name: r for r in observed.reservations}
    matched = {e: tuple(by_name[n] for n in e.candidates() if _same(by_name.get(n), e)) for e in observed.entries}
    heads, holders = _pool_heads(observed.entries, matched, observed.sliced), _holders(observed.entries)
    for entry in observed.entries:
        judgement = judge_entry(entry.owner, observed, now=now)
        if judgement.verdict is Verdict.RELEASE:
            _plan_release(result, entry, matched[entry], judgement, observed.sticky)
            continue
        note = _ambiguity(entry, holders) if judgement.verdict is Verdict.LIVE else ""
        notable = judgement.verdict not in (Verdict.LIVE, Verdict.RETAINED) or judgement.notable or bool(note)
        result.kept.append(Kept(entry.describe(), judgement.reason + note, notable))
        if repair and not matched[entry] and judgement.verdict in (Verdict.LIVE, Verdict.UNKNOWN, Verdict.RETAINED):
            _plan_repair(result, entry, heads.get(entry.pool), by_name)
    result.kept += [Kept(f"IPPool {name}", "range or name unreadable: its entries are not judged", True)
                    for name in observed.unreadable]  # fmt: skip
    aged = aged and not observed.unreadable  # a reservation may stand behind an entry we could not read
    index = backing_index(observed.entries)
    for reservation in (r for r in observed.reservations if not backs(index, r)):
        _plan_lone(result, reservation, observed, index, now=now, grace=grace if aged else None)
    return result


def plan_for_pod(observed: Observed, podref: str, controller: str = "") -> Plan:
    """A deleted pod's allocations and reservations (the caller saw it deleted; the driver confirms it); its
    sticky entries retained, recording `controller` (the deleted pod's) where they recorded none."""
    full = plan(Observed(observed.pools, observed.entries, observed.reservations), now=0.0, repair=False, aged=False)
    return Plan(
        releases=[r for r in full.releases if r.entry.owner.podref == podref],
        retains=[replace(r, controller=controller) for r in full.retains if r.entry.owner.podref == podref],
        reservation_releases=[r for r in full.reservation_releases if r.reservation.owner.podref == podref],
        reservation_retains=[
            replace(r, controller=controller) for r in full.reservation_retains if r.reservation.owner.podref == podref
        ],
    )


def judge_entry(owner: Owner, observed: Observed, *, now: float) -> Judgement:
    """A held entry by its pod; a retained one by its sticky key's owner (controller.sticky)."""
    pod = observed.pods.get(owner.podref)
    if owner.retained:
        return judge_retained(owner, pod_exists=pod is not None, evidence=observed.sticky, now=now)
    return judge_pod(owner.podref, pod, observed.nodes)


def judge_retained(owner: Owner, *, pod_exists: bool, evidence: Evidence | None, now: float) -> Judgement:
    """Used on the listing and again on the fresh reads before the write, as judge_pod is."""
    if evidence is None:
        return Judgement(Verdict.RETAINED, f"retained for {owner.sticky}: the reconciler judges it")
    release, why = sticky.judge_retained(owner, pod_exists=pod_exists, evidence=evidence, now=now)
    return Judgement(Verdict.RELEASE if release else Verdict.RETAINED, why)


def _plan_release(
    result: Plan, entry: Entry, reservations: tuple[Reservation, ...], judgement: Judgement, evidence: Evidence | None
) -> None:
    """An entry not in use: released, or, held for a sticky key, retained (a missed DEL) unless sticky is off."""
    evidence = evidence or Evidence()
    off = evidence.sticky_off(entry.owner)
    if sticky.retains(entry.owner) and off is None:
        result.retains.append(EntryRetain(entry, reservations, judgement.reason, evidence.retention(entry.owner)))
        return
    why = f"; sticky is off for network {entry.owner.netconf}" if off is not None and not entry.owner.retained else ""
    result.releases.append(EntryRelease(entry, reservations, judgement.reason + why))


def _same(reservation: Reservation | None, entry: Entry) -> bool:
    return reservation is not None and entry.owner.recorded_in(reservation.owner)


def _pool_heads(
    entries: Iterable[Entry], matched: Mapping[Entry, tuple[Reservation, ...]], sliced: Mapping[str, str]
) -> dict[str, set[str]]:
    """Pool -> the network prefixes its entries' reservations carry, a node-slice pool's network's among them
    (empty set: the pool has none, and is no node slice's)."""
    heads: dict[str, set[str]] = defaultdict(set)
    for pool, network in sliced.items():
        heads[pool].add(f"{network}-" if network else "")
    for entry in entries:
        for reservation in matched[entry]:
            heads[entry.pool].add(reservation.name[: len(reservation.name) - len(entry.suffix)])
    return heads


def _plan_repair(result: Plan, entry: Entry, heads: set[str] | None, by_name: Mapping[str, Reservation]) -> None:
    if not heads:
        return  # no entry of this pool has a reservation: the network does not use them (overlapping off, no slices)
    if len(heads) > 1:
        reason = f"reservation missing, not recreated: the pool's reservation prefixes disagree {sorted(heads)}"
        result.kept.append(Kept(entry.describe(), reason, True))
        return
    name = next(iter(heads)) + entry.suffix
    holder = by_name.get(name)
    if holder is not None:
        reason = f"reservation {name} names another holder (container {holder.owner.container_id})"
        result.kept.append(Kept(entry.describe(), reason, True))
        return
    result.repairs.append(Repair(entry, name, "pool entry of a kept attachment has no reservation"))


def _plan_lone(
    result: Plan,
    reservation: Reservation,
    observed: Observed,
    index: Mapping[str, list[Entry]],
    *,
    now: float,
    grace: float | None,
) -> None:
    podref, owner = reservation.owner.podref, reservation.owner
    if owner.retained and observed.sticky is not None:
        # its pool entry is not written yet, or there is no mirror (kubernetes.ippool_mirror false): judged by
        # its sticky key's owner, as a retained entry is
        judgement = judge_retained(owner, pod_exists=podref in observed.pods, evidence=observed.sticky, now=now)
        if judgement.verdict is Verdict.RELEASE:
            result.reservation_releases.append(ReservationRelease(reservation, f"no pool entry; {judgement.reason}",
                                                                  False))  # fmt: skip
        else:
            result.kept.append(Kept(reservation.describe(), f"no pool entry, kept: {judgement.reason}", True))
        return
    if owner.retained and (not owner.expires or owner.expires > now):  # (pod cleanup: not its to judge)
        until = f"until {owner.expires}" if owner.expires else "until its owner is gone"
        result.kept.append(Kept(reservation.describe(), f"no pool entry, kept: retained for its sticky key {until}",
                                True))  # fmt: skip
        return
    judgement = judge_pod(podref, observed.pods.get(podref), observed.nodes)
    if judgement.verdict is Verdict.RELEASE:
        evidence = observed.sticky or Evidence()
        if sticky.retains(owner) and evidence.sticky_off(owner) is None:  # a missed DEL: as it would have left it
            reason = f"no pool entry; {judgement.reason}"
            result.reservation_retains.append(ReservationRetain(reservation, reason, evidence.retention(owner)))
            return
        result.reservation_releases.append(ReservationRelease(reservation, f"no pool entry; {judgement.reason}", False))
        return
    age = None if reservation.created is None else now - reservation.created
    judged = judgement.verdict is not Verdict.UNKNOWN  # a pod it names exists (or is going): it is that pod's
    if (
        grace is not None
        and age is not None
        and age > grace
        and not judged
        and not reservation.record
        and not adoption_in_flight(index, reservation)
    ):
        reason = f"no pool entry for {age:.0f}s (> {grace:.0f}s); {judgement.reason}"
        result.reservation_releases.append(ReservationRelease(reservation, reason, True))
        return
    if grace is None:
        why = "no release by age in this pass"
    elif reservation.record and not judged:
        why = "no pod recorded, and this plugin's reservation is the record: its runtime's DEL or GC frees it"
    elif age is None or age <= grace:
        why = f"not older than {grace:.0f}s: an ADD may be between its two writes"
    elif adoption_in_flight(index, reservation):
        why = "a recreated pod's ADD is taking it over"
    else:
        why = "its pod is there: the reservation is the record (the node daemon writes the pool's mirror entry)"
    result.kept.append(Kept(reservation.describe(), f"no pool entry, kept: {why}; {judgement.reason}", True))


def _holders(entries: Iterable[Entry]) -> dict[tuple[str, str], set[str]]:
    """(podref, ifname) -> the container IDs holding entries for it."""
    holders: dict[tuple[str, str], set[str]] = defaultdict(set)
    for entry in entries:
        if not entry.owner.retained:  # no attachment's: not one of the pod's holders
            holders[(entry.owner.podref, entry.owner.ifname)].add(entry.owner.container_id)
    return holders


def _ambiguity(entry: Entry, holders: Mapping[tuple[str, str], set[str]]) -> str:
    """#176: one pod and interface under several container IDs. One is stale, but nothing says which."""
    owner = entry.owner
    others = holders.get((owner.podref, owner.ifname), set()) - {owner.container_id}
    if not others:
        return ""
    return f"; {owner.ifname} also held under container(s) {', '.join(sorted(others))}: cannot tell which is stale"
