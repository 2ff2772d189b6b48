"""`check` on the Kubernetes datastore. Leaks are judged by the reconciler itself: its reading (controller.reconcile
.observe: IPPools, then reservations, pods and nodes), the sticky evidence (controller.stickyread) and its plan
(controller.leaks.plan); `--repair` applies that plan with its Applier, which confirms each action on fresh reads
right before a guarded write. Beside the plan, what the reconciler does not look at: addresses held twice,
entries outside their range, node slices that disagree with their NADs. Those are reported, never repaired.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from whereabouts.controller.leaks import GRACE, Entry, Plan, backing_index, backs, plan
from whereabouts.controller.nads import NAD_GROUP, NAD_VERSION, NADS, read_nads
from whereabouts.controller.reconcile import Applier, Reading, observe
from whereabouts.controller.stickyread import Lookups
from whereabouts.kube.client import KubeClient
from whereabouts.kube.resources import NODE_SLICE_POOLS, PoolNames, slice_pool_value
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import Network
from whereabouts.tools.findings import ERROR, WARNING, Finding, duplicates, outside, who
from whereabouts.tools.target import Target

SOURCE = "kubectl-whereabouts"


@dataclass(frozen=True)
class KubeReading:
    reading: Reading
    planned: Plan
    keys: dict[str, PoolKey]  # IPPool name -> its key
    slice_pools: list[dict[str, Any]]
    nads: list[dict[str, Any]]
    mirrored: bool = True  # kubernetes.ippool_mirror, as the target's config says: false, a lone reservation is normal
    ambiguous: tuple[str, ...] = ()  # IPPools whose names read as more than one network and node


def read(target: Target, client: KubeClient, log: Callable[[str], None]) -> KubeReading:
    reading = observe(client)
    observed = reading.observed
    evidence = Lookups(client, log).evidence([*(e.owner for e in observed.entries),
                                              *(r.owner for r in observed.reservations)])  # fmt: skip
    planned = plan(replace(reading.observed, sticky=evidence), now=time.time())
    slice_pools = client.list(client.path(NODE_SLICE_POOLS))
    names = PoolNames(target.networks(), (), slice_pools)
    keys = {name: key for name, obj in reading.pools.items() if (key := names.key(obj)) is not None}
    nads = client.list(client.resource(NADS, group=NAD_GROUP, version=NAD_VERSION))
    return KubeReading(reading, planned, keys, slice_pools, nads, getattr(target.settings, "ippool_mirror", True),
                       tuple(names.ambiguous))  # fmt: skip


def findings(read: KubeReading) -> list[Finding]:
    pools: dict[PoolKey, dict[int, Owner]] = defaultdict(dict)
    network = {}
    for entry in read.reading.observed.entries:
        key = read.keys.get(entry.pool)
        if key is not None:
            pools[key][entry.ip] = entry.owner
            network[entry.pool] = key.network
    found = duplicates(pools) + outside(pools) + _from_plan(read, network) + _slices(read)
    found += [Finding("unreadable", f"IPPool {name}", "", "range or name not one the plugin writes: not judged")
              for name in read.reading.observed.unreadable]  # fmt: skip
    found += [Finding("unreadable", f"IPPool {name}", "", "its name reads as more than one network and node "
                      "(see the NADs and NodeSlicePools): not judged", WARNING) for name in read.ambiguous]  # fmt: skip
    return found


def _from_plan(read: KubeReading, network: dict[str, str]) -> list[Finding]:
    planned, observed = read.planned, read.reading.observed
    found = [_entry(r.entry, network, "gone-owner" if r.entry.owner.retained else "gone-pod", r.reason, "release")
             for r in planned.releases]  # fmt: skip
    found += [_entry(r.entry, network, "gone-pod", r.reason, "retain (sticky)") for r in planned.retains]
    found += [_entry(r.entry, network, "missing-reservation", f"{r.reason}: {r.name}", "recreate reservation")
              for r in planned.repairs]  # fmt: skip
    for kept in planned.kept:
        if kept.reason.startswith("reservation missing"):
            found.append(Finding("missing-reservation", kept.what, "", kept.reason))
        elif "names another holder" in kept.reason:
            found.append(Finding("duplicate", kept.what, "", f"held twice: {kept.reason}"))
    releasing = {r.reservation.name: f"{who(r.reservation.owner)}: {r.reason}" for r in planned.reservation_releases}
    retaining = {r.reservation.name: f"{who(r.reservation.owner)}: {r.reason}" for r in planned.reservation_retains}
    index = backing_index(observed.entries)
    kept_reasons = {k.what: k.reason for k in planned.kept}
    for reservation in (r for r in observed.reservations if not backs(index, r)):
        what = f"OverlappingRangeIPReservation {reservation.name}"
        if reservation.name in releasing:
            found.append(Finding("orphan-reservation", what, "", releasing[reservation.name], ERROR, "release"))
            continue
        if reservation.name in retaining:
            found.append(Finding("gone-pod", what, "", retaining[reservation.name], ERROR, "retain (sticky)"))
            continue
        if not read.mirrored:  # the reservations are the record: none has a pool entry
            continue
        young = reservation.created is not None and time.time() - reservation.created <= GRACE
        reason = kept_reasons.get(reservation.describe(), "no pool entry stands behind it")
        found.append(Finding("orphan-reservation", what, "", f"{who(reservation.owner)}: {reason}",
                             WARNING if young else ERROR))  # fmt: skip
    return found


def _entry(entry: Entry, network: dict[str, str], kind: str, reason: str, fix: str) -> Finding:
    return Finding(kind, entry.address, network.get(entry.pool, ""), f"{entry.describe()}: {reason}", ERROR, fix)


def _slices(read: KubeReading) -> list[Finding]:
    """NADs that slice a network (Fast IPAM) against its NodeSlicePool, and node pools against their slices."""
    nads = read_nads(read.nads)
    found = [Finding("slice-mismatch", f"NAD {_ref(p.nad)}", "", p.message) for p in nads.problems]
    by_name = {obj.get("metadata", {}).get("name", ""): obj for obj in read.slice_pools}
    for name, sliced in sorted(nads.sliced.items()):
        obj = by_name.get(name)
        what = f"NodeSlicePool {name}"
        said = f"NAD(s) {', '.join(sliced.nads)} slice {sliced.range} in {sliced.slice_size} slices"
        if obj is None:
            here = any(k.node and k.network == sliced.network_name for k in read.keys.values())
            detail = f"{said}, but there is none" + (
                ""
                if here
                else " (nor any node pool of the network here: is "
                "the node-slice controller running, or are its pools elsewhere?)"
            )
            found.append(Finding("slice-mismatch", what, sliced.network_name, detail, ERROR if here else WARNING))
            continue
        value = slice_pool_value(obj, what)
        if (_net(value.range), _prefix(value.slice_size)) != (_net(sliced.range), _prefix(sliced.slice_size)):
            detail = f"{said}, but it slices {value.range} in {value.slice_size} slices"
            found.append(Finding("slice-mismatch", what, sliced.network_name, detail))
        found += _node_pools(read, sliced.network_name, what, set(value.listing))
    return found


def _node_pools(read: KubeReading, network: str, where: str, listing: set[tuple[str, str]]) -> list[Finding]:
    found = []
    for name, key in sorted(read.keys.items()):
        if key.node and key.network == network and (key.node, key.cidr) not in listing:
            detail = (
                f"{where} does not give node {key.node} slice {key.cidr}: a re-slice left it (emptied as its pods go)"
            )
            found.append(Finding("slice-mismatch", f"IPPool {name}", network, detail, WARNING))
    return found


def _ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _net(text: str) -> Network | None:
    try:
        return Network.parse(text)
    except ValueError:
        return None


def _prefix(text: str) -> str:
    return text.strip().removeprefix("/")


def repair(target: Target, client: KubeClient, read: KubeReading, *, dry_run: bool) -> list[str]:
    """The reconciler's plan, applied by its Applier (log lines for what it did, or would do)."""
    from whereabouts.controller.context import Context
    from whereabouts.controller.metrics import Registry

    lines: list[str] = []
    registry = Registry()
    ctx = Context(client.credentials, client.namespace, registry=registry, log=lines.append, dry_run=dry_run,
                  identity=SOURCE)  # fmt: skip
    applier = Applier(ctx, client, source=SOURCE, released=registry.counter("released", "released", ("kind",)),
                      repaired=registry.counter("repaired", "repaired"),
                      retained=registry.counter("retained", "retained"))  # fmt: skip
    applier.apply(read.planned, read.reading.pools)
    return [line.removeprefix(f"{SOURCE}: ") for line in lines if _action(line)]


def _action(line: str) -> bool:
    return not line.startswith("sticky:")  # the evidence reads' own notes
