"""The allocator: (ranges, snapshot, request) -> decision. Pure: it never sees a store."""

from __future__ import annotations

from itertools import islice

from whereabouts.model import EXHAUSTED, OUTSIDE, TAKEN, Change, ChangeSet, Owner, PoolKey, Refusal, Snapshot
from whereabouts.occupancy import Occupancy
from whereabouts.ranges import IPRange, RangeIndex, format_ip
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


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
) -> Decision | Refusal:
    """Decide which address each range gives `owner`, or refuse.

    Per range, in order: what the attachment already holds (idempotent ADD; an entry recorded under another
    network config name, or none, is rewritten under `owner`'s, the config the runtime now says it is in);
    else the address its pod held under an older container (recreated pod keeps its IP); else an address the
    attachment reserved network-wide without its pool entry (a call interrupted between its writes, on stores
    that write them one at a time); else the requested addresses that fall in this range; else the lowest free
    address (passing over `skip` free ones: see `lowest_free`). A Refusal when a requested address is in no
    range or held by another, or a range has no free address left.
    Costs O((ranges + allocations + reservations) log n): see `whereabouts.occupancy`.
    """
    by_range = _assign_requests(ranges, requested, owner)
    if isinstance(by_range, Refusal):
        return by_range
    seen = Occupancy(snapshot, owner, overlapping)
    readers: dict[PoolKey, int] = {}  # ranges still to come per pool: several may share one
    for pool_range in ranges:
        readers[pool_range.key] = readers.get(pool_range.key, 0) + 1
    held: list[tuple[PoolRange, tuple[int, ...]]] = []
    for pool_range in ranges:
        wanted = by_range.get(pool_range, {}) if by_range else {}
        readers[pool_range.key] -= 1
        last = not readers[pool_range.key]
        mine = seen.take_held(pool_range, wanted, last)
        _record_under_owners_name(pool_range, seen, mine)
        if not mine:
            mine = _adopt_pod_address(pool_range, seen, wanted, last)
        if not mine and not wanted and overlapping:
            mine = _resume_reservation(pool_range, seen)
        if not mine and wanted:
            claimed = _claim_all_requested(pool_range, wanted, seen)
            if isinstance(claimed, Refusal):
                return claimed
            mine = claimed
        if not mine:
            lowest = _claim_lowest(pool_range, seen, skip)
            if isinstance(lowest, Refusal):
                return lowest
            mine = [lowest]
        held.append((pool_range, tuple(mine)))
    expected = tuple((key, snapshot.pools[key].version) for key in dict.fromkeys(r.key for r in ranges))
    return Decision(tuple(held), ChangeSet(tuple(seen.planned), expected, overlapping))


def release(*, keys: Sequence[PoolKey], snapshot: Snapshot, owner: Owner, overlapping: bool) -> ChangeSet:
    """Release every address `owner`'s attachment holds in the given pools."""
    planned = [
        Change(key, key.version, ip, None, previous=who)
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
        Change(key, key.version, ip, None, previous=who)
        for key in keys
        for ip, who in sorted(snapshot.pools[key].allocations.items())
        if netconf and who.netconf == netconf and (who.container_id, who.ifname) not in keep
    ]
    expected = tuple((key, snapshot.pools[key].version) for key in keys)
    return ChangeSet(tuple(planned), expected, overlapping)


def _assign_requests(
    ranges: Sequence[PoolRange], requested: Sequence[tuple[int, int]], owner: Owner
) -> dict[PoolRange, dict[int, None]] | Refusal:
    """Each requested address goes to the first range (in config order) whose CIDR holds it (and to the
    ranges equal to that one)."""
    by_range: dict[PoolRange, dict[int, None]] = {}
    if not requested:
        return by_range
    index = RangeIndex([r.rng for r in ranges])
    for version, ip in requested:
        position = index.first(version, ip)
        if position is None:
            return Refusal(
                OUTSIDE,
                f"requested address {format_ip(version, ip)} for {_who(owner)} is in no configured range "
                f"({_listed(r.rng.cidr for r in ranges)})",
            )
        home = ranges[position]
        if home.rng.is_edge(ip):
            return Refusal(
                OUTSIDE,
                f"requested address {format_ip(version, ip)} for {_who(owner)} is the network or broadcast "
                f"address of range {home.rng.cidr}",
            )
        by_range.setdefault(home, {})[ip] = None
    return by_range


def _record_under_owners_name(pool_range: PoolRange, seen: Occupancy, held: list[int]) -> None:
    """Entries the attachment holds under another network config name (or none) are rewritten under its
    current one: left as they were, a GC of that other config would free a live address."""
    for ip in held:
        recorded = seen.holder(pool_range, ip)
        if recorded is not None and recorded.netconf != seen.owner.netconf:
            seen.plan(Change(pool_range.key, pool_range.rng.version, ip, seen.owner, previous=recorded))


def _adopt_pod_address(pool_range: PoolRange, seen: Occupancy, wanted: dict[int, None], last: bool) -> list[int]:
    """A pod recreated under the same name (StatefulSet) takes over the address its old container held."""
    adopted = seen.take_pod_held(pool_range, wanted, last)
    for ip, previous in adopted:
        seen.plan(Change(pool_range.key, pool_range.rng.version, ip, seen.owner, previous=previous))
    return [ip for ip, _ in adopted]


def _resume_reservation(pool_range: PoolRange, seen: Occupancy) -> list[int]:
    ip = seen.resumable(pool_range)
    if ip is None:
        return []
    seen.plan(Change(pool_range.key, pool_range.rng.version, ip, seen.owner, previous=None))
    return [ip]


def _claim_all_requested(pool_range: PoolRange, wanted: dict[int, None], seen: Occupancy) -> list[int] | Refusal:
    claimed = []
    for ip in wanted:
        outcome = _claim_requested(pool_range, ip, seen)
        if isinstance(outcome, Refusal):
            return outcome  # the whole decision is refused: what `seen` planned so far goes with it
        claimed.append(outcome)
    return claimed


def _claim_requested(pool_range: PoolRange, ip: int, seen: Occupancy) -> int | Refusal:
    holder = seen.holder(pool_range, ip)
    if holder is not None and not holder.same_attachment(seen.owner):
        return Refusal(
            TAKEN,
            f"requested address {format_ip(pool_range.rng.version, ip)} in range {pool_range.rng.cidr} "
            f"is already held by {_who(holder)}; cannot give it to {_who(seen.owner)}",
        )
    seen.plan(Change(pool_range.key, pool_range.rng.version, ip, seen.owner))
    return ip


def _claim_lowest(pool_range: PoolRange, seen: Occupancy, skip: int) -> int | Refusal:
    rng = pool_range.rng
    ip = seen.lowest(pool_range, skip)
    if ip is None:
        return Refusal(
            EXHAUSTED,
            f"no free address in range {rng.cidr} (window {format_ip(rng.version, rng.first)}-"
            f"{format_ip(rng.version, rng.last)}, {seen.held_in(pool_range)} held) for {_who(seen.owner)}",
        )
    seen.plan(Change(pool_range.key, rng.version, ip, seen.owner))
    return ip


def _listed(items: Iterable[str], limit: int = 10) -> str:
    """At most `limit` items: an error naming 20,000 ranges would bury the point."""
    shown = list(islice(items, limit + 1))
    if len(shown) <= limit:
        return ", ".join(shown)
    return ", ".join(shown[:limit]) + ", ..."


def _who(owner: Owner) -> str:
    pod = f" (pod {owner.podref})" if owner.podref else ""
    return f"container {owner.container_id} interface {owner.ifname}{pod}"
