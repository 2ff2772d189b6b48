"""`mirror off|on`: the migration between a namespace whose IPPools mirror the per-address reservations (the Go
plugin's format, kept while a Go plugin may run beside this one) and one where the reservations alone are the
record (kubernetes.ippool_mirror false: no IPPool is read or written). docs/operators.md, "The IPPool mirror".

- `off`, before the config is switched: every IPPool entry gets its reservation, labelled with its range (a
  Go-plugin entry of a network written without overlapping ranges has none; a reservation the Go plugin wrote
  has no labels). With the mirror off a call reads a pool as the reservations labelled with its range, so an
  entry without one would be an address handed out twice. Entries and reservations that disagree are reported,
  never changed (`check` says more).
- `on`, after the config is switched back, before a Go plugin returns: each pool's entries are written from the
  reservations (the pool created where there is none); with `--prune`, entries whose address has no reservation
  go (they were frozen while the mirror was off: only for namespaces whose networks all use overlapping
  ranges, whose every hold has a reservation).

Every write is guarded (a reservation is created only where there is none; an entry is written only from what
was read there), so either runs safely beside the plugin; run it again until it reports nothing to do.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from whereabouts.kube import resources
from whereabouts.kube.client import Conflict, KubeClient
from whereabouts.kube.reserving import reserve_entry
from whereabouts.kube.resources import IPPOOLS, NODE_SLICE_POOLS, RESERVATIONS
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import format_ip, parse_request
from whereabouts.tools.errors import BadInput
from whereabouts.tools.findings import who
from whereabouts.tools.target import Target


def run(target: Target, direction: str, *, dry_run: bool, prune: bool, finish: bool = False) -> tuple[list[str], bool]:
    """What was done (or would be, `dry_run`), and whether something is left that needs an operator."""
    client = target.kube()
    if target.datastore != "kubernetes" or client is None:
        raise BadInput(f"mirror: the IPPool mirror is the Kubernetes datastore's; this target is {target.datastore}")
    if direction == "off" and finish:
        return finish_off(client, target.networks(), dry_run=dry_run)
    if direction == "off":
        return mirror_off(client, target.networks(), dry_run=dry_run)
    return mirror_on(client, target.networks(), dry_run=dry_run, prune=prune)


def _nodes(client: KubeClient) -> dict[str, str]:
    return resources.slice_nodes(client.list(client.path(NODE_SLICE_POOLS)))


def _patch(client: KubeClient, path: str, operations: list[list[Any]]) -> None:
    """Each entry's operations (its guards and its write) are a group, never split between two patches."""
    for chunk in resources.patch_chunks(operations):
        client.patch(path, chunk)


def mirror_off(client: KubeClient, networks: set[str], *, dry_run: bool) -> tuple[list[str], bool]:
    reservations = {obj["metadata"]["name"]: obj for obj in client.list(client.path(RESERVATIONS))}
    nodes = set(_nodes(client).values())
    created = labelled = 0
    lines: list[str] = []
    for pool in client.list(client.path(IPPOOLS)):
        key = resources.guess_pool_key(pool, networks, nodes)
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
            if not holder.same_attachment(owner):
                lines.append(f"left alone: IPPool {key.name} entry {format_ip(version, ip)} is {who(owner)}, "
                             f"its reservation {name} says {who(holder)} (see kubectl whereabouts check)")  # fmt: skip
                continue
            labels = found["metadata"].get("labels") or {}
            if resources.reservation_subnet(labels) != resources.pool_subnet(key):
                labelled += 1
                lines.append(f"label reservation {name} with its range {key.cidr}")
                if not dry_run:
                    wanted = resources.reservation_labels(holder, key.network, key.cidr)
                    patch = {"metadata": {"labels": wanted, "resourceVersion": found["metadata"]["resourceVersion"]}}
                    try:
                        client.merge_patch(client.path(RESERVATIONS, name), patch)
                    except Conflict:
                        lines.append(f"  {name} changed meanwhile: run mirror off again")
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
    nodes = set(_nodes(client).values())
    lines: list[str] = []
    removed = kept = 0
    for pool in client.list(client.path(IPPOOLS)):
        key = resources.guess_pool_key(pool, networks, nodes)
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
    lines.append(f"{'would remove' if dry_run else 'removed'} {removed} frozen entr(ies) backed by their "
                 f"reservation; kept {kept}")  # fmt: skip
    return lines, False


def mirror_on(client: KubeClient, networks: set[str], *, dry_run: bool, prune: bool) -> tuple[list[str], bool]:
    slices = _nodes(client)
    wanted: dict[PoolKey, dict[int, Owner]] = defaultdict(dict)
    listed = client.list(client.path(RESERVATIONS))
    labelled = resources.labelled_reservations(listed, networks)
    unlabelled = len(listed) - len(labelled)  # the Go plugin's (its entry is in the pool: it writes that first)
    for (network, _, ip), (subnet, owner) in labelled.items():
        wanted[resources.subnet_pool_key(network, subnet, slices)][ip] = owner
    lines: list[str] = []
    written = removed = 0
    for key in sorted(wanted):
        for attempt in (1, 2, 3):
            try:
                added, gone = _write_pool(client, key, wanted[key], dry_run=dry_run, prune=prune, lines=lines)
            except Conflict:
                if attempt == 3:
                    lines.append(f"IPPool {key.name} kept changing: run mirror on again")
                continue
            written, removed = written + added, removed + gone
            break
    if prune:
        for pool in client.list(client.path(IPPOOLS)):
            found = resources.guess_pool_key(pool, networks, set(slices.values()))
            if found is not None and found not in wanted and resources.pool_entries(pool):
                _, gone = _write_pool(client, found, {}, dry_run=dry_run, prune=True, lines=lines)
                removed += gone
    verb = "would write" if dry_run else "wrote"
    lines.append(f"{verb} {written} IPPool entr(ies) from their reservations, "
                 f"{'would remove' if dry_run else 'removed'} {removed} with no reservation "
                 f"({unlabelled} reservation(s) without a range label left to their pool entries)")  # fmt: skip
    return lines, False


def _write_pool(
    client: KubeClient, key: PoolKey, wanted: dict[int, Owner], *, dry_run: bool, prune: bool, lines: list[str]
) -> tuple[int, int]:
    """Make the pool's entries say what `wanted` says (and, `prune`, nothing else); (written, removed)."""
    path = client.path(IPPOOLS, key.name)
    _, base = parse_request(key.cidr)
    obj = client.get(path)
    if obj is None:
        lines.append(f"create IPPool {key.name} with {len(wanted)} entr(ies)")
        if not dry_run:
            pool = resources.new_pool(key, client.namespace)
            pool["spec"]["allocations"] = {str(ip - base): resources.entry(o) for ip, o in sorted(wanted.items())}
            client.create(client.path(IPPOOLS), pool)
        return len(wanted), 0
    entries = resources.pool_entries(obj)
    operations: list[list[Any]] = []
    written = removed = 0
    for ip, owner in sorted(wanted.items()):
        raw = entries.get(str(ip - base))
        if raw != resources.entry(owner):
            have = None if raw is None else resources.entry_owner(raw)
            operations.append(resources.entry_patch(ip - base, owner, have, exact=have is not None))
            written += 1
    if prune:
        for text, offset, raw in resources.pool_offsets(obj):
            if base + offset not in wanted:
                operations.append(resources.entry_patch(text, None, resources.entry_owner(raw), exact=True))
                removed += 1
    if written or removed:
        lines.append(f"IPPool {key.name}: write {written}, remove {removed}")
    if operations and not dry_run:
        _patch(client, path, operations)
    return written, removed
