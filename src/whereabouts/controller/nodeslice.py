"""`node-slice`: one NodeSlicePool per sliced network, kept in step with the cluster's nodes (Fast IPAM).

One pass (`sync`, what --once does) lists the NADs (every namespace), the Nodes, and the NodeSlicePools and
IPPools of the pools' namespace. Per sliced network it plans the slices (controller.slicing, no I/O) and
applies the plan: create or re-spec the NodeSlicePool, write its status (every slice, `nodeName` "" when
free), delete node pools that are empty and no longer their node's slice (guarded by their
resourceVersion), and report nodes left without a slice (a Warning Event on the NodeSlicePool and
`node_slice_exhausted_total`). A NodeSlicePool this controller (or the Go one) made for a network that no
NAD slices any more is deleted, with its empty node pools.

Long-running (`run`), the same pass runs when a NAD changes or a Node comes or goes (both watched), and
every RESYNC seconds, which is when the emptied pool of a node that left, or of a slice a re-slice
replaced, gets deleted.

The evidence of use is the node pools' allocations: a slice holding an address another node's pool still
holds is not handed out (see controller.slicing). Pools of the whole range (no node) are not evidence: an
address there is protected by its network-wide reservation, as every allocation is.

A node's new slice may overlap the addresses its old slice's pool still holds (a re-slice), and only their
reservations keep the new pool from handing them out again. So before a pass gives any node a slice, every
entry of the network's node pools gets its reservation where it has none (entries written with overlapping
ranges off: a Go plugin's, or this plugin's before sliced networks wrote them always). A reservation naming
another holder is reported and the slices are not given; one that cannot be made leaves them for the next pass.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

from whereabouts.controller.context import Context
from whereabouts.controller.health import Backoff
from whereabouts.controller.nads import NAD_GROUP, NAD_VERSION, NADS, NADProblem, SlicedNetwork, read_nads
from whereabouts.controller.slicing import Listing, SlicePlan, plan_slices, pool_node
from whereabouts.errors import TryAgainLater
from whereabouts.iptext import format_address, parse_network
from whereabouts.kube import resources
from whereabouts.kube.client import Conflict, Expired, KubeClient
from whereabouts.kube.reserving import reserve_entry
from whereabouts.kube.resources import IPPOOLS, NETWORK_ANNOTATION, NODE_SLICE_POOLS, RESERVATIONS
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import Network, format_ip, parse_request

NETWORK = ("network",)  # the label of the per-network metrics
RESYNC = 30.0  # seconds between passes when nothing is watched changing
DEBOUNCE = 0.2  # seconds to let a burst of events (nodes joining together) settle into one pass
WATCH_TIMEOUT = 20  # seconds a watch runs before it is renewed (so a stopped run's watchers end soon)
CONFLICT_RETRIES = 3
T = TypeVar("T")


@dataclass(frozen=True)
class NodePool:
    """An IPPool of one node's slice of a network, and the addresses it holds."""

    obj: dict[str, Any]
    node: str
    cidr: str  # canonical
    ips: tuple[int, ...]


@dataclass
class Cluster:
    """What one pass decides from."""

    networks: dict[str, SlicedNetwork]
    network_names: set[str]
    nodes: list[str]
    slice_pools: dict[str, dict[str, Any]]
    ippools: list[dict[str, Any]]
    node_set: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.node_set = set(self.nodes)


class NodeSliceController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client()
        metrics = ctx.registry
        self.total = metrics.gauge("node_slices_total", "Slices the network's range is cut into", NETWORK)
        self.assigned = metrics.gauge("node_slices_assigned", "Slices assigned to a node", NETWORK)
        self.free = metrics.gauge(
            "node_slices_free", "Slices a joining node could get now (unassigned, none in use)", NETWORK
        )
        self.exhausted = metrics.counter("node_slice_exhausted_total", "Nodes left without a slice: none free", NETWORK)
        self.assignments = metrics.counter("node_slice_assignments_total", "Slices given to nodes", NETWORK)
        self.releases = metrics.counter(
            "node_slice_releases_total", "Slices taken back (node left, or re-slice)", NETWORK
        )
        self.deleted = metrics.counter("node_slice_ippools_deleted_total", "Empty node-slice IPPools deleted", NETWORK)
        self.duration = metrics.histogram("node_slice_sync_duration_seconds", "Duration of one node-slice pass")
        self.reported: set[tuple[str, str]] = set()  # (network, node) left without a slice, already warned of
        # NAD uid -> "<resourceVersion>:<reason>" last warned of: one entry per NAD with a problem now, however
        # often it is edited (each new version is warned of once)
        self.nads_reported: dict[str, str] = {}

    # One pass

    def sync(self) -> None:
        started = time.monotonic()
        cluster = self._read()
        failed = []
        for network in cluster.networks.values():
            try:
                self._sync_network(network, cluster)
            except TryAgainLater as exc:  # one network's trouble does not hold the others back
                self.ctx.log(f"node-slice: network {network.name}: {exc.msg}")
                failed.append(network.name)
            except Exception as exc:  # a bug, or input nothing foresaw: its traceback, and the others still run
                self.ctx.log(f"node-slice: network {network.name}: {''.join(traceback.format_exception(exc)).rstrip()}")
                failed.append(network.name)
        for name, pool in cluster.slice_pools.items():
            if name not in cluster.networks and _managed(pool):
                self._retire(pool, cluster)
        keep = [{"network": name} for name in cluster.networks]
        for gauge in (self.total, self.assigned, self.free):
            gauge.forget(keep)
        # the counters' series go with their network's NodeSlicePool (a tenant names networks, for months): a
        # retired one's are kept for the pass that deleted it
        keep += [{"network": name} for name in cluster.slice_pools if name not in cluster.networks]
        for counter in (self.exhausted, self.assignments, self.releases, self.deleted):
            counter.forget(keep)
        self.duration.observe(time.monotonic() - started)
        if failed:
            raise TryAgainLater(f"networks {', '.join(failed)} not brought in step (see above); the next pass retries")

    def _read(self) -> Cluster:
        client = self.client
        nads = read_nads(client.list(client.resource(NADS, group=NAD_GROUP, version=NAD_VERSION)))
        for problem in nads.problems:
            self._warn_nad(problem)
        broken = {_uid(problem.nad) for problem in nads.problems}
        self.nads_reported = {uid: seen for uid, seen in self.nads_reported.items() if uid in broken}
        nodes = sorted(node["metadata"]["name"] for node in client.list(client.resource("nodes")))
        slice_pools = {pool["metadata"]["name"]: pool for pool in client.list(client.path(NODE_SLICE_POOLS))}
        network_names = {name for name in nads.network_names if name}
        return Cluster(nads.sliced, network_names, nodes, slice_pools, client.list(client.path(IPPOOLS)))

    def _sync_network(self, network: SlicedNetwork, cluster: Cluster) -> None:
        pool = cluster.slice_pools.get(network.name)
        for _ in range(CONFLICT_RETRIES):
            try:
                self._apply(network, cluster, pool)
                return
            except Conflict:  # someone else wrote the NodeSlicePool meanwhile: read it again and re-plan
                pool = self.client.get(self.client.path(NODE_SLICE_POOLS, network.name))
        self.ctx.log(f"node-slice: network {network.name}: NodeSlicePool kept changing; left for the next pass")

    def _apply(self, network: SlicedNetwork, cluster: Cluster, pool: dict[str, Any] | None) -> None:
        node_pools = _node_pools(network, cluster, _listed_nodes(pool))
        in_use: dict[str, list[int]] = {}
        for node_pool in node_pools:
            in_use.setdefault(node_pool.node, []).extend(node_pool.ips)
        plan = plan_slices(network.geometry, _listing(pool), cluster.nodes, in_use)
        if plan.assigned and _listing(pool) != plan.listing and not self._reserve_entries(network, node_pools, pool):
            return
        pool = self._ensure_spec(network, pool)
        if _listing(pool) != plan.listing:  # (no pool: a dry run, or not leading; the write only logs then)
            pool = self._write_status(network, pool or {}, plan, cluster.node_set) or None
        self._report_unplaced(network, plan, pool)
        self._delete_stale(network, plan, node_pools, cluster.node_set)
        self.total.set(plan.total, network=network.name)
        self.assigned.set(sum(1 for node, _ in plan.listing if node), network=network.name)
        self.free.set(plan.free, network=network.name)

    def _reserve_entries(
        self, network: SlicedNetwork, pools: list[NodePool], slice_pool: dict[str, Any] | None
    ) -> bool:
        """Every entry of the network's node pools has its reservation (the missing ones made here): False, said
        in the log and an Event, when one names another holder. An error raises: the next pass retries."""
        if not any(pool.ips for pool in pools):
            return True
        listed = {obj["metadata"]["name"]: obj for obj in self.client.list(self.client.path(RESERVATIONS))}
        conflicts = []
        for pool in pools:
            key = PoolKey(network.network_name, pool.cidr, pool.node)
            version, base = parse_request(pool.cidr)
            for _, offset, raw in resources.pool_offsets(pool.obj):
                owner, ip = resources.entry_owner(raw), base + offset
                name = resources.reservation_name(key.network, version, ip)
                found = listed.get(name)
                action = f"network {network.name}: created reservation {name} for IPPool {key.name}'s entry (re-slice)"
                holder: Owner | None = None
                if found is not None:
                    holder = resources.reservation_owner(found)
                elif self.ctx.dry_run or not self.ctx.may_act():
                    self._act([action], lambda: None)  # (only says what it would do)
                else:
                    holder = reserve_entry(self.client, key, version, ip, owner)
                    if holder is None:
                        self.ctx.log(f"node-slice: {action}")
                if holder is not None and not owner.recorded_in(holder):  # (a Go plugin's: Owner.recorded_in)
                    conflicts.append(f"{format_ip(version, ip)} of IPPool {key.name} (container {owner.container_id}; "
                                     f"reservation {name} names container {holder.container_id})")  # fmt: skip
        if not conflicts:
            return True
        message = (f"network {network.name}: slices not given (re-slice held back): the reservation of "
                   f"{'; '.join(conflicts)} names another holder (see kubectl whereabouts check)")  # fmt: skip
        self.ctx.log(f"node-slice: {message}")
        if slice_pool is not None and not self.ctx.dry_run and self.ctx.may_act():
            involved = {**slice_pool, **resources.reference(NODE_SLICE_POOLS, _name(slice_pool), self.ctx.namespace)}
            self.ctx.event(self.client, involved, reason="ReservationConflict", message=message, warning=True)
        return False

    # Writes: each checks dry-run and leadership first, and logs one line per action once done

    def _act(self, actions: list[str], write: Callable[[], T]) -> T | None:
        if not actions:
            return None
        if self.ctx.dry_run or not self.ctx.may_act():
            why = "dry-run: would" if self.ctx.dry_run else "not leading: did not"
            for action in actions:
                self.ctx.log(f"node-slice: {why} {action}")
            return None
        result = write()
        for action in actions:
            self.ctx.log(f"node-slice: {action}")
        return result

    def _ensure_spec(self, network: SlicedNetwork, pool: dict[str, Any] | None) -> dict[str, Any] | None:
        spec = {"range": network.range, "sliceSize": network.slice_size}
        annotations = {NETWORK_ANNOTATION: network.network_name}
        where = f"NodeSlicePool {self.ctx.namespace}/{network.name}"
        if pool is None:
            body = resources.node_slice_pool(network.name, self.ctx.namespace, spec, annotations)
            action = f"created {where}: {network.range} in {network.slice_size} slices ({', '.join(network.nads)})"
            return self._act([action], lambda: self.client.create(self.client.path(NODE_SLICE_POOLS), body))
        meta = pool["metadata"]
        if pool.get("spec") == spec and meta.get("annotations", {}).get(NETWORK_ANNOTATION) == network.network_name:
            return pool
        old = pool.get("spec", {})
        body = {
            **pool,
            "spec": spec,
            "metadata": {**meta, "annotations": {**meta.get("annotations", {}), **annotations}},
        }
        action = (
            f"updated {where}: {network.range} in {network.slice_size} slices "
            f"(was {old.get('range')} in {old.get('sliceSize')} slices)"
            if old != spec
            else f"annotated {where} with its network_name {network.network_name!r} (adopted)"
        )
        path = self.client.path(NODE_SLICE_POOLS, network.name)
        return self._act([action], lambda: self.client.replace(path, body)) or pool

    def _write_status(
        self, network: SlicedNetwork, pool: dict[str, Any], plan: SlicePlan, nodes: set[str]
    ) -> dict[str, Any]:
        actions = [f"network {network.name}: gave slice {cidr} to node {node}" for node, cidr in plan.assigned]
        for node, cidr in plan.freed:
            why = "re-sliced" if node in nodes else "node gone"
            actions.append(f"network {network.name}: freed slice {cidr} of node {node} ({why})")
        actions = actions or [f"network {network.name}: rewrote the slice listing ({len(plan.listing)} slices)"]
        status = {"allocations": [resources.slice_allocation(node, cidr) for node, cidr in plan.listing]}
        path = self.client.path(NODE_SLICE_POOLS, network.name) + "/status"
        written = self._act(actions, lambda: self.client.replace(path, {**pool, "status": status}))
        if written is not None and plan.assigned:  # (an inc(0) would make a series of a network that gave none)
            self.assignments.inc(len(plan.assigned), network=network.name)
        if written is not None and plan.freed:
            self.releases.inc(len(plan.freed), network=network.name)
        return written or pool

    def _report_unplaced(self, network: SlicedNetwork, plan: SlicePlan, pool: dict[str, Any] | None) -> None:
        for node in plan.unplaced:
            if (network.name, node) in self.reported:
                continue
            message = (
                f"no free slice for node {node} in network {network.name}: all {plan.total} slices of "
                f"{network.range} ({network.slice_size}) are assigned or still hold addresses in use"
            )
            self.reported.add((network.name, node))
            self.exhausted.inc(network=network.name)
            self.ctx.log(f"node-slice: {message}")
            if pool is not None and not self.ctx.dry_run and self.ctx.may_act():
                involved = {**pool, **resources.reference(NODE_SLICE_POOLS, _name(pool), self.ctx.namespace)}
                self.ctx.event(self.client, involved, reason="NodeSlicesExhausted", message=message, warning=True)
        short = {(network.name, node) for node in plan.unplaced}
        self.reported = {key for key in self.reported if key[0] != network.name or key in short}

    def _delete_stale(self, network: SlicedNetwork, plan: SlicePlan, pools: list[NodePool], nodes: set[str]) -> None:
        for pool in pools:
            if pool.ips or plan.slice_of(pool.node) == pool.cidr:
                continue
            why = "node gone" if pool.node not in nodes else f"its slice is now {plan.slice_of(pool.node) or 'none'}"
            self._delete_pool(network.name, pool.obj, why)

    def _delete_pool(self, network: str, obj: dict[str, Any], why: str) -> None:
        path = self.client.path(IPPOOLS, _name(obj))
        action = f"network {network}: deleted empty IPPool {_name(obj)} ({why})"
        try:
            if self._act([action], lambda: self.client.delete(path, obj["metadata"]["resourceVersion"])):
                self.deleted.inc(network=network)
        except Conflict:
            pass  # written meanwhile: not empty any more, or soon; the next pass looks again

    def _retire(self, pool: dict[str, Any], cluster: Cluster) -> None:
        """No NAD slices the network any more: delete its empty node pools, then its NodeSlicePool."""
        name = _name(pool)
        network_name = pool["metadata"].get("annotations", {}).get(NETWORK_ANNOTATION, name)
        slices, listed = {cidr for _, cidr in _listing(pool)}, _listed_nodes(pool)
        for obj in cluster.ippools:
            cidr = obj.get("spec", {}).get("range", "")
            empty = not obj.get("spec", {}).get("allocations")
            if empty and _canonical(cidr) in slices and _network_node(obj, network_name, cluster, listed):
                self._delete_pool(name, obj, "no NAD slices the network")
        action = f"deleted NodeSlicePool {self.ctx.namespace}/{name}: no NAD slices network {name} any more"
        path = self.client.path(NODE_SLICE_POOLS, name)
        with contextlib.suppress(Conflict):  # changed meanwhile: the next pass decides again
            self._act([action], lambda: self.client.delete(path, pool["metadata"]["resourceVersion"]))
        self.reported = {(net, node) for net, node in self.reported if net != name}

    def _warn_nad(self, problem: NADProblem) -> None:
        seen = f"{problem.nad.get('metadata', {}).get('resourceVersion')}:{problem.reason}"
        if self.nads_reported.get(_uid(problem.nad)) == seen:
            return
        self.nads_reported[_uid(problem.nad)] = seen
        self.ctx.log(f"node-slice: {problem.message}")
        if not self.ctx.dry_run and self.ctx.may_act():
            involved = {
                **problem.nad,
                "apiVersion": f"{NAD_GROUP}/{NAD_VERSION}",
                "kind": "NetworkAttachmentDefinition",
            }
            self.ctx.event(self.client, involved, reason=problem.reason, message=problem.message, warning=True)

    # Long-running

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until `stop`: when a watched NAD or Node changes, and every RESYNC seconds."""
        changed = threading.Event()
        nads = self.client.resource(NADS, group=NAD_GROUP, version=NAD_VERSION)
        for path, relevant in ((nads, _any_change), (self.client.resource("nodes"), _node_came_or_went)):
            watcher = threading.Thread(target=self._watch, args=(path, relevant, changed, stop), daemon=True)
            watcher.start()
        last, backoff = -RESYNC, Backoff()
        while not stop.is_set():
            self.ctx.health.beat("node-slice")
            if changed.wait(1.0) or time.monotonic() - last >= RESYNC:
                stop.wait(DEBOUNCE)
                changed.clear()
                last = time.monotonic()
                self._sync_reported(changed, stop, backoff)

    def _sync_reported(self, changed: threading.Event, stop: threading.Event, backoff: Backoff) -> None:
        """A pass; one that could not read what it needs is said once (log, /readyz), changes nothing, and
        is tried again with backoff."""
        try:
            self.sync()
        except TryAgainLater as exc:
            self.ctx.health.failing("node-slice", exc, self.ctx.log)
            backoff.wait(stop)
            changed.set()
            return
        backoff.reset()
        self.ctx.health.working("node-slice", self.ctx.log)

    def _watch(
        self, path: str, relevant: Callable[[str], bool], changed: threading.Event, stop: threading.Event
    ) -> None:
        """List, then watch from the list's version; re-list when the version expires or the watch fails.
        Every (re-)list counts as a change: what happened in between is not known."""
        client, backoff = self.ctx.client(), Backoff()
        try:
            version = ""
            while not stop.is_set():
                version = self._watch_once(client, path, version, relevant, changed, stop, backoff)
        finally:
            client.close()

    def _watch_once(
        self,
        client: KubeClient,
        path: str,
        version: str,
        relevant: Callable[[str], bool],
        changed: threading.Event,
        stop: threading.Event,
        backoff: Backoff,
    ) -> str:
        """One list-or-watch round; returns the version to watch from next ("" to list again)."""
        try:
            if not version:
                _, version = client.list_with_version(path)
                changed.set()
                backoff.reset()
            for event in client.watch(path, version, timeout=WATCH_TIMEOUT):
                version = event.object.get("metadata", {}).get("resourceVersion") or version
                if relevant(event.type):
                    changed.set()
                if stop.is_set():
                    break
            return version
        except Expired:
            return ""
        except TryAgainLater as exc:  # said once, with the passes' own trouble; a pass that works clears it
            self.ctx.health.failing("node-slice", exc, self.ctx.log)
            backoff.wait(stop)
            return ""


def _any_change(kind: str) -> bool:
    return kind != "BOOKMARK"


def _node_came_or_went(kind: str) -> bool:
    return kind in ("ADDED", "DELETED")  # a Node's status changes every few seconds; its name never does


def _node_pools(network: SlicedNetwork, cluster: Cluster, listed: Collection[str]) -> list[NodePool]:
    """The IPPools of `network`'s node slices (any geometry, any node, present or not) inside its range;
    `listed`: the nodes its NodeSlicePool names."""
    geo, found = network.geometry, []
    for obj in cluster.ippools:
        cidr = obj.get("spec", {}).get("range", "")
        node = _network_node(obj, network.network_name, cluster, listed)
        if not node:
            continue
        try:
            net = Network.parse(cidr, strict=False)
        except ValueError:
            continue
        version, base, prefix = net.version, net.address, net.prefix
        if version != geo.version or base > geo.last or net.last < geo.network:
            continue
        ips = tuple(base + offset for _, offset, _ in resources.pool_offsets(obj))  # (keys no offset: skipped)
        found.append(NodePool(obj, node, f"{format_address(version, base)}/{prefix}", ips))
    return found


def _network_node(obj: dict[str, Any], network: str, cluster: Cluster, listed: Collection[str]) -> str:
    """The node of `network`'s node pool `obj` ("" when it is none of that network's). A name `<a>-<b>-<cidr>`
    does not say where the network ends and the node begins (network `blue` and node `x-n1`, or network
    `blue-x` and node `n1`): a node part that is a current Node, is `listed` in the network's NodeSlicePool or
    is the node the pool's entries were taken on makes it this network's node pool; else the pool is the one
    of the network whose known name is the longest prefix of its name, as resources.PoolNames falls back to."""
    node = pool_node(_name(obj), obj.get("spec", {}).get("range", ""), network)
    if not node:
        return ""
    entries = resources.pool_entries(obj).values()
    if node in cluster.node_set or node in listed or any(_taken_on(entry) == node for entry in entries):
        return node
    head = f"{network}-{node}" if network else node
    known = (n for n in (*cluster.network_names, network) if n and (head == n or head.startswith(f"{n}-")))
    return node if max(known, key=len, default="") == network else ""


def _taken_on(entry: object) -> object:
    """The node an IPPool entry says it was taken on (this plugin writes it; the Go plugin does not)."""
    return entry.get("node") if isinstance(entry, dict) else None


def _listed_nodes(pool: dict[str, Any] | None) -> set[str]:
    return {node for node, _ in _listing(pool) if node}


def _listing(pool: dict[str, Any] | None) -> Listing:
    return resources.slice_listing(pool)


def _managed(pool: dict[str, Any]) -> bool:
    """Made by this controller (annotated) or by the Go one (owned by a NAD); not someone's own by hand."""
    meta = pool.get("metadata", {})
    owned = any(ref.get("kind") == "NetworkAttachmentDefinition" for ref in meta.get("ownerReferences") or [])
    return owned or NETWORK_ANNOTATION in (meta.get("annotations") or {})


def _canonical(cidr: str) -> str:
    try:
        version, network, prefix = parse_network(cidr, strict=False)
    except ValueError:
        return cidr
    return f"{format_address(version, network)}/{prefix}"


def _uid(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def _name(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))
