"""`mirror off|on`: the migration between a namespace whose IPPools mirror the per-address reservations (the Go
plugin's format, kept while a Go plugin may run beside this one) and one where the reservations alone are the
record (kubernetes.ippool_mirror false: no IPPool is read or written). docs/operators.md, "The IPPool mirror".

- `off`, before the config is switched: every IPPool entry gets its reservation, labelled with its range (a
  Go-plugin entry of a network written without overlapping ranges has none; a reservation the Go plugin wrote
  has no labels, and from v0.7 no container ID, before v0.6 no interface: those are completed from the entry).
  With the mirror off a call reads a pool as the reservations labelled with its range, so an entry without one
  would be an address handed out twice. Entries and reservations that disagree are reported, never changed
  (`check` says more). Refused (unless forced) while the Go plugin's Lease says it ran in the last
  GO_LEASE_RECENT seconds.
- `on`, after the config is switched back, before a Go plugin returns: each pool's entries are written from the
  reservations (the pool created where there is none); with `--prune`, entries whose address has no reservation
  go (they were frozen while the mirror was off: only for namespaces whose networks all use overlapping
  ranges, whose every hold has a reservation). An entry whose address has any reservation (a Go plugin's,
  unlabelled) or whose pod lives stays.

Every write is guarded (a reservation is created only where there is none; an entry is written only from what
was read there), so either runs safely beside the plugin; run it again until it reports nothing to do.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from whereabouts.controller.leaks import Verdict, judge_pod, pod_state, timestamp
from whereabouts.kube import resources
from whereabouts.kube.client import APIError, Conflict, KubeClient
from whereabouts.kube.reserving import reserve_entry
from whereabouts.kube.resources import IPPOOLS, NODE_SLICE_POOLS, RESERVATIONS
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import format_ip, parse_request
from whereabouts.tools.errors import BadInput, ToolError
from whereabouts.tools.findings import who
from whereabouts.tools.target import Target, require_networks

GO_LEASE = "whereabouts"  # the Go plugin's cluster-wide lock: a Lease in the pools' namespace, taken per call
GO_LEASE_RECENT = 600.0  # seconds: renewed (or released) since, a Go plugin is taken to be still running


def run(
    target: Target, direction: str, *, dry_run: bool, prune: bool, finish: bool = False, force: bool = False
) -> tuple[list[str], bool]:
    """What was done (or would be, `dry_run`), and whether something is left that needs an operator."""
    client = target.kube()
    if target.datastore != "kubernetes" or client is None:
        raise BadInput(f"mirror: the IPPool mirror is the Kubernetes datastore's; this target is {target.datastore}")
    require_networks(target, f"mirror {direction}")  # a pool's network read from its name would be a guess
    if direction == "off" and not force and not dry_run:
        _refuse_beside_go(client)
    if direction == "off" and finish:
        return finish_off(client, target.networks(), dry_run=dry_run)
    if direction == "off":
        return mirror_off(client, target.networks(), dry_run=dry_run)
    return mirror_on(client, target.networks(), dry_run=dry_run, prune=prune)


def _refuse_beside_go(client: KubeClient) -> None:
    """ToolError while the Go plugin's Lease was renewed in the last GO_LEASE_RECENT seconds: each Go ADD and DEL
    takes it, so a Go plugin is still running, and with the mirror off it would read the frozen IPPools and hand
    out addresses held since."""
    path = client.resource("leases", GO_LEASE, group="coordination.k8s.io", namespace=client.namespace)
    try:
        lease = client.get(path)
    except APIError as exc:
        if not exc.status:
            raise
        return  # (not readable with these credentials: nothing says a Go plugin runs)
    spec = (lease or {}).get("spec") or {}
    renewed = timestamp(str(spec.get("renewTime") or spec.get("acquireTime") or ""))
    if renewed is None or time.time() - renewed > GO_LEASE_RECENT:
        return
    ago = max(0, int(time.time() - renewed))
    raise ToolError(f"mirror off: the Go plugin's Lease {client.namespace}/{GO_LEASE} was renewed {ago}s ago (by "
                    f"{spec.get('holderIdentity') or 'a call that has finished'}): a Go plugin still serves calls, "
                    "and without the IPPool mirror it would hand out addresses this plugin holds. Remove it from "
                    f"every node first, then run this again (after {int(GO_LEASE_RECENT)}s without a Go call), or "
                    "--force")  # fmt: skip


def _names(client: KubeClient, networks: set[str]) -> tuple[resources.PoolNames, list[dict[str, Any]]]:
    """How the IPPools' names read (resources.PoolNames), and the NodeSlicePools it went by."""
    slice_pools = client.list(client.path(NODE_SLICE_POOLS))
    return resources.PoolNames(networks, (), slice_pools), slice_pools


def _ambiguous(names: resources.PoolNames, lines: list[str]) -> bool:
    for name in names.ambiguous:
        lines.append(f"left alone: IPPool {name}: its name reads as more than one network and node (see the NADs "
                     "and NodeSlicePools)")  # fmt: skip
    return bool(names.ambiguous)


def _patch(client: KubeClient, path: str, operations: list[list[Any]]) -> None:
    """Each entry's operations (its guards and its write) are a group, never split between two patches."""
    for chunk in resources.patch_chunks(operations):
        client.patch(path, chunk)


def mirror_off(client: KubeClient, networks: set[str], *, dry_run: bool) -> tuple[list[str], bool]:
    reservations = {obj["metadata"]["name"]: obj for obj in client.list(client.path(RESERVATIONS))}
    names, _ = _names(client, networks)
    created = labelled = 0
    lines: list[str] = []
    for pool in client.list(client.path(IPPOOLS)):
        key = names.key(pool)
        if key is None:
            continue
        version, base = parse_request(key.cidr)
        for _, offset, raw in resources.pool_offsets(pool):
            owner, ip = resources.entry_owner(raw), base + offset
            name = resources.reservation_name(key.network, version, ip)
            found = reservations.get(name)
            if found is None:
                created += 1
                lines.append(f"create reservation {name} for {who(owner)} (entry of IPPool {key.name})")
                if not dry_run and reserve_entry(client, key, version, ip, owner) is not None:
                    lines.append(f"  {name} was created meanwhile: run mirror off again")
                continue
            holder = resources.reservation_owner(found)
            if not owner.recorded_in(holder):
                lines.append(f"left alone: IPPool {key.name} entry {format_ip(version, ip)} is {who(owner)}, "
                             f"its reservation {name} says {who(holder)} (see kubectl whereabouts check)")  # fmt: skip
                continue
            labels = found["metadata"].get("labels") or {}
            # a Go plugin's that records less (v0.7+: no container ID; 0.5: no interface), completed from the entry:
            # with the mirror off the reservation is the record, and a DEL finds its attachment there
            complete = holder.but(container_id=owner.container_id, ifname=owner.ifname)
            if resources.reservation_subnet(labels) != resources.pool_subnet(key) or complete != holder:
                labelled += 1
                lines.append(f"label reservation {name} with its range {key.cidr}" + (
                    f", its holder completed from the entry ({who(owner)})" if complete != holder else ""))  # fmt: skip
                if not dry_run:
                    wanted = resources.reservation_labels(complete, key.network, key.cidr)
                    patch = {"metadata": {"labels": wanted, "resourceVersion": found["metadata"]["resourceVersion"]}}
                    if complete != holder:
                        patch["spec"] = {"containerid": complete.container_id, "ifname": complete.ifname}
                    try:
                        client.merge_patch(client.path(RESERVATIONS, name), patch)
                    except Conflict:
                        lines.append(f"  {name} changed meanwhile: run mirror off again")
    _ambiguous(names, lines)
    verb = "would create" if dry_run else "created"
    lines.append(f"{verb} {created} reservation(s), {'would label' if dry_run else 'labelled'} {labelled}; "
                 "every pool entry has its reservation once this reports 0 and 0")  # fmt: skip
    return lines, any(line.startswith("left alone") for line in lines)


def finish_off(client: KubeClient, networks: set[str], *, dry_run: bool) -> tuple[list[str], bool]:
    """After kubernetes.ippool_mirror is false on every node: remove the frozen IPPool entries whose address's
    reservation names the same attachment (the reservation is the record; frozen, the entry would mislead
    readers of the Go format). An entry with no such reservation is the only record of its address (a network
    still written without overlapping ranges) or of one released since: listed, never removed."""
    reservations = {obj["metadata"]["name"]: obj for obj in client.list(client.path(RESERVATIONS))}
    names, _ = _names(client, networks)
    lines: list[str] = []
    removed = kept = 0
    for pool in client.list(client.path(IPPOOLS)):
        key = names.key(pool)
        entries = resources.pool_entries(pool)
        if key is None or not entries:
            continue
        version, base = parse_request(key.cidr)
        operations: list[list[Any]] = []
        for text, offset, raw in resources.pool_offsets(pool):
            owner = resources.entry_owner(raw)
            found = reservations.get(resources.reservation_name(key.network, version, base + offset))
            if found is not None and resources.reservation_owner(found).same_attachment(owner):
                operations.append(resources.entry_patch(text, None, owner, exact=True))
                removed += 1
            else:
                kept += 1
                address = format_ip(version, base + offset)
                lines.append(f"kept: IPPool {key.name} entry {address} of {who(owner)}: no reservation of its "
                             "attachment (its only record, or released since)")  # fmt: skip
        if operations and not dry_run:
            try:
                _patch(client, client.path(IPPOOLS, key.name), operations)
            except Conflict:
                lines.append(f"IPPool {key.name} changed meanwhile (a node still mirrors it?): run it again")
    left = _ambiguous(names, lines)
    lines.append(f"{'would remove' if dry_run else 'removed'} {removed} frozen entr(ies) backed by their "
                 f"reservation; kept {kept}")  # fmt: skip
    return lines, left


def mirror_on(client: KubeClient, networks: set[str], *, dry_run: bool, prune: bool) -> tuple[list[str], bool]:
    names, slice_pools = _names(client, networks)
    slices = resources.slice_nodes(slice_pools)
    wanted: dict[PoolKey, dict[int, Owner]] = defaultdict(dict)
    listed = client.list(client.path(RESERVATIONS))
    labelled = resources.labelled_reservations(listed, networks)
    keep = _backing(client, {obj["metadata"]["name"] for obj in listed})
    unlabelled = len(listed) - len(labelled)  # the Go plugin's (its entry is in the pool: it writes that first)
    for (network, _, ip), (subnet, owner) in labelled.items():
        wanted[resources.subnet_pool_key(network, subnet, slices)][ip] = owner
    lines: list[str] = []
    written = removed = 0
    for key in sorted(wanted):
        for attempt in (1, 2, 3):
            try:
                added, gone = _write_pool(client, key, wanted[key], dry_run=dry_run, prune=prune, lines=lines,
                                          keep=keep)  # fmt: skip
            except Conflict:
                if attempt == 3:
                    lines.append(f"IPPool {key.name} kept changing: run mirror on again")
                continue
            written, removed = written + added, removed + gone
            break
    left = False
    if prune:
        written_names = {key.name for key in wanted}  # by name: whatever its name reads as, the pool written above
        for pool in client.list(client.path(IPPOOLS)):
            found = names.key(pool)
            if found is not None and found.name not in written_names and resources.pool_entries(pool):
                _, gone = _write_pool(client, found, {}, dry_run=dry_run, prune=True, lines=lines, keep=keep)
                removed += gone
        left = _ambiguous(names, lines)
    verb = "would write" if dry_run else "wrote"
    lines.append(f"{verb} {written} IPPool entr(ies) from their reservations, "
                 f"{'would remove' if dry_run else 'removed'} {removed} with no reservation "
                 f"({unlabelled} reservation(s) without a range label left to their pool entries)")  # fmt: skip
    return lines, left


def _backing(client: KubeClient, names: set[str]) -> Callable[[PoolKey, int, Owner], str]:
    """What keeps an entry `--prune` would remove ('': nothing): a reservation of its address (any: the Go
    plugin's carry no range label, and hold the address as ours do), else its pod, there and not finished (an
    entry of a network without reservations; the reconciler judges it once the pod is gone)."""

    def why(key: PoolKey, ip: int, owner: Owner) -> str:
        name = resources.reservation_name(key.network, key.version, ip)
        if name in names:
            return f"its address has reservation {name}"
        namespace, _, pod = owner.podref.partition("/")
        if not namespace or not pod:
            return ""
        try:
            obj = client.get(client.resource("pods", pod, namespace=namespace), named=True)
        except APIError as exc:
            if not exc.status:
                raise
            return f"its pod {owner.podref} could not be read ({exc.status})"
        judgement = judge_pod(owner.podref, None if obj is None else pod_state(obj))
        return "" if judgement.verdict in (Verdict.RELEASE, Verdict.UNKNOWN) else judgement.reason

    return why


def _write_pool(
    client: KubeClient, key: PoolKey, wanted: dict[int, Owner], *, dry_run: bool, prune: bool, lines: list[str],
    keep: Callable[[PoolKey, int, Owner], str] | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Make the pool's entries say what `wanted` says (and, `prune`, nothing else but what `keep` keeps: a
    reason); (written, removed)."""
    path = client.path(IPPOOLS, key.name)
    _, base = parse_request(key.cidr)
    obj = client.get(path)
    if obj is None:
        lines.append(f"create IPPool {key.name} with {len(wanted)} entr(ies)")
        if not dry_run:
            pool = resources.new_pool(key, client.namespace)
            pool["spec"]["allocations"] = {
                str(ip - base): resources.entry(o, reserved=True) for ip, o in sorted(wanted.items())
            }
            client.create(client.path(IPPOOLS), pool)
        return len(wanted), 0
    entries = resources.pool_entries(obj)
    operations: list[list[Any]] = []
    written = removed = 0
    for ip, owner in sorted(wanted.items()):
        raw = entries.get(str(ip - base))
        if raw != resources.entry(owner, reserved=True):
            have = None if raw is None else resources.entry_owner(raw)
            operations.append(resources.entry_patch(ip - base, owner, have, exact=have is not None, reserved=True))
            written += 1
    if prune:
        for text, offset, raw in resources.pool_offsets(obj):
            owner = resources.entry_owner(raw)
            if base + offset in wanted:
                continue
            if keep is not None and (why := keep(key, base + offset, owner)):
                lines.append(f"kept: IPPool {key.name} entry {format_ip(key.version, base + offset)} of {who(owner)}: "
                             f"{why}")  # fmt: skip
                continue
            operations.append(resources.entry_patch(text, None, owner, exact=True))
            removed += 1
    if written or removed:
        lines.append(f"IPPool {key.name}: write {written}, remove {removed}")
    if operations and not dry_run:
        _patch(client, path, operations)
    return written, removed
