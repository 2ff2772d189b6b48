"""The allocator: (ranges, snapshot, request) -> decision. Pure: it never sees a store."""

from __future__ import annotations

from whereabouts.errors import AddressOutsideRanges, AddressTaken, RangeExhausted
from whereabouts.model import Change, ChangeSet, Owner, PoolKey, Snapshot
from whereabouts.ranges import IPRange, TakenAddresses, format_ip, lowest_free
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Sequence


@record(frozen=True)
class PoolRange:
    """A configured range and the pool its allocations live in."""

    key: PoolKey
    rng: IPRange


@record(frozen=True)
class Decision:
    """The addresses the attachment ends up holding, per range in config order, and what to write."""

    held: tuple[tuple[PoolRange, tuple[int, ...]], ...]
    changes: ChangeSet


def allocate(
    *,
    ranges: Sequence[PoolRange],
    snapshot: Snapshot,
    owner: Owner,
    requested: Sequence[tuple[int, int]] = (),
    overlapping: bool = True,
    skip: int = 0,
) -> Decision:
    """Decide which address each range gives `owner`.

    Per range, in order: what the attachment already holds (idempotent ADD; an entry recorded under another
    network config name, or none, is rewritten under `owner`'s, the config the runtime now says it is in);
    else the address its pod held under an older container (recreated pod keeps its IP); else an address the
    attachment reserved network-wide without its pool entry (a call interrupted between its writes, on stores
    that write them one at a time); else the requested addresses that fall in this range; else the lowest free
    address (passing over `skip` free ones: see `lowest_free`). Raises the CNI error that ends the call otherwise.
    """
    by_range = _assign_requests(ranges, requested, owner)
    planned: list[Change] = []
    held: list[tuple[PoolRange, tuple[int, ...]]] = []
    for pool_range in ranges:
        state = snapshot.pools[pool_range.key]
        mine = _already_held(pool_range, state.allocations, owner, planned)
        if not mine:
            mine = _adopt_pod_address(pool_range, state.allocations, owner, planned)
        if not mine and not by_range[pool_range]:
            mine = _resume_reservation(pool_range, snapshot, owner, overlapping, planned)
        if not mine and by_range[pool_range]:
            mine = [
                _claim_requested(pool_range, ip, snapshot, owner, overlapping, planned) for ip in by_range[pool_range]
            ]
        if not mine:
            mine = [_claim_lowest(pool_range, snapshot, owner, overlapping, planned, skip)]
        held.append((pool_range, tuple(mine)))
    expected = tuple((key, snapshot.pools[key].version) for key in dict.fromkeys(r.key for r in ranges))
    return Decision(tuple(held), ChangeSet(tuple(planned), expected, overlapping))


def release(*, keys: Sequence[PoolKey], snapshot: Snapshot, owner: Owner, overlapping: bool) -> ChangeSet:
    """Release every address `owner`'s attachment holds in the given pools."""
    planned = [
        Change(key, _ip_version(key), ip, None, previous=who)
        for key in keys
        for ip, who in sorted(snapshot.pools[key].allocations.items())
        if who.same_attachment(owner)
    ]
    expected = tuple((key, snapshot.pools[key].version) for key in keys)
    return ChangeSet(tuple(planned), expected, overlapping)


def release_all_but(
    *, keys: Sequence[PoolKey], snapshot: Snapshot, netconf: str, keep: set[tuple[str, str]], overlapping: bool
) -> ChangeSet:
    """GC of network config `netconf`: release every allocation recorded under that name whose (container ID,
    ifname) is not in `keep`. Other network configs' allocations, and those whose name is unknown, are not
    this GC's to judge: `keep` lists only `netconf`'s attachments."""
    planned = [
        Change(key, _ip_version(key), ip, None, previous=who)
        for key in keys
        for ip, who in sorted(snapshot.pools[key].allocations.items())
        if netconf and who.netconf == netconf and (who.container_id, who.ifname) not in keep
    ]
    expected = tuple((key, snapshot.pools[key].version) for key in keys)
    return ChangeSet(tuple(planned), expected, overlapping)


def _ip_version(key: PoolKey) -> int:
    return 6 if ":" in key.cidr else 4


def _assign_requests(
    ranges: Sequence[PoolRange], requested: Sequence[tuple[int, int]], owner: Owner
) -> dict[PoolRange, list[int]]:
    by_range: dict[PoolRange, list[int]] = {r: [] for r in ranges}
    for version, ip in requested:
        home = next((r for r in ranges if r.rng.contains(version, ip)), None)
        if home is None:
            cidrs = ", ".join(r.rng.cidr for r in ranges)
            raise AddressOutsideRanges(
                f"requested address {format_ip(version, ip)} for {_who(owner)} is in no configured range ({cidrs})"
            )
        if home.rng.is_edge(ip):
            raise AddressOutsideRanges(
                f"requested address {format_ip(version, ip)} for {_who(owner)} is the network or broadcast "
                f"address of range {home.rng.cidr}"
            )
        if ip not in by_range[home]:
            by_range[home].append(ip)
    return by_range


def _already_held(
    pool_range: PoolRange, allocations: dict[int, Owner], owner: Owner, planned: list[Change]
) -> list[int]:
    """What the attachment holds in the pool; entries recorded under another network config name are
    rewritten under `owner`'s (left as they were, a GC of that other config would free a live address)."""
    mine = sorted(ip for ip, who in allocations.items() if who.same_attachment(owner))
    for ip in mine:
        if allocations[ip].netconf != owner.netconf:
            planned.append(Change(pool_range.key, pool_range.rng.version, ip, owner, previous=allocations[ip]))
    return mine


def _adopt_pod_address(
    pool_range: PoolRange, allocations: dict[int, Owner], owner: Owner, planned: list[Change]
) -> list[int]:
    """A pod recreated under the same name (StatefulSet) takes over the address its old container held."""
    if not owner.podref:
        return []
    adopted = sorted(ip for ip, who in allocations.items() if who.same_pod_interface(owner))
    for ip in adopted:
        planned.append(Change(pool_range.key, pool_range.rng.version, ip, owner, previous=allocations[ip]))
    return adopted


def _resume_reservation(
    pool_range: PoolRange, snapshot: Snapshot, owner: Owner, overlapping: bool, planned: list[Change]
) -> list[int]:
    if not overlapping:
        return []
    rng, allocations = pool_range.rng, snapshot.pools[pool_range.key].allocations
    for (network, version, ip), who in sorted(snapshot.reservations.items()):
        free_here = ip not in allocations and not any(c.ip == ip for c in _planned_holds(pool_range, planned, True))
        if network == pool_range.key.network and rng.contains(version, ip) and who.same_attachment(owner) and free_here:
            planned.append(Change(pool_range.key, version, ip, owner, previous=None))
            return [ip]
    return []


def _planned_holds(pool_range: PoolRange, planned: list[Change], overlapping: bool) -> list[Change]:
    """Addresses this decision already gives out that compete with `pool_range`'s: same pool, or with
    overlapping ranges the same allocation domain."""
    key = pool_range.key
    return [
        c
        for c in planned
        if c.owner is not None
        and c.version == pool_range.rng.version
        and (c.key == key or (overlapping and c.key.network == key.network))
    ]


def _holder(
    pool_range: PoolRange, ip: int, snapshot: Snapshot, overlapping: bool, planned: list[Change]
) -> Owner | None:
    for change in _planned_holds(pool_range, planned, overlapping):
        if change.ip == ip:
            return change.owner
    holder = snapshot.pools[pool_range.key].allocations.get(ip)
    if holder is None and overlapping:
        holder = snapshot.reservations.get((pool_range.key.network, pool_range.rng.version, ip))
    return holder


def _claim_requested(
    pool_range: PoolRange, ip: int, snapshot: Snapshot, owner: Owner, overlapping: bool, planned: list[Change]
) -> int:
    holder = _holder(pool_range, ip, snapshot, overlapping, planned)
    if holder is not None and not holder.same_attachment(owner):
        raise AddressTaken(
            f"requested address {format_ip(pool_range.rng.version, ip)} in range {pool_range.rng.cidr} "
            f"is already held by {_who(holder)}; cannot give it to {_who(owner)}"
        )
    planned.append(Change(pool_range.key, pool_range.rng.version, ip, owner))
    return ip


def _claim_lowest(
    pool_range: PoolRange, snapshot: Snapshot, owner: Owner, overlapping: bool, planned: list[Change], skip: int
) -> int:
    rng = pool_range.rng
    taken = TakenAddresses(snapshot.pools[pool_range.key].allocations)
    if overlapping:
        for network, version, ip in snapshot.reservations:
            if network == pool_range.key.network and rng.contains(version, ip):
                taken.add(ip)
    for change in _planned_holds(pool_range, planned, overlapping):
        taken.add(change.ip)
    ip = lowest_free(rng, taken, skip)
    if ip is None:
        raise RangeExhausted(
            f"no free address in range {rng.cidr} (window {format_ip(rng.version, rng.first)}-"
            f"{format_ip(rng.version, rng.last)}, {len(taken)} held) for {_who(owner)}"
        )
    planned.append(Change(pool_range.key, rng.version, ip, owner))
    return ip


def _who(owner: Owner) -> str:
    pod = f" (pod {owner.podref})" if owner.podref else ""
    return f"container {owner.container_id} interface {owner.ifname}{pod}"
