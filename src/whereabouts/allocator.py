"""The allocator: (ranges, snapshot, request) -> decision. Pure: it never sees a store."""

from __future__ import annotations

from itertools import islice

from whereabouts.model import EXHAUSTED, OUTSIDE, TAKEN, Change, ChangeSet, Owner, PoolKey, Refusal, Snapshot
from whereabouts.occupancy import Occupancy
from whereabouts.ranges import IPRange, RangeIndex, format_ip
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Sequence

    from whereabouts.sticky import FixedReservation

    Retain = Callable[[Owner, Owner], Owner | None]  # (recorded holder, releasing owner) -> retained owner or None


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
    # Whether it resumed a reservation: one the attachment's entry in a pool outside the snapshot may back (a
    # range dropped from its config), which the caller must rule out by deciding again with those pools read.
    resumed: bool = False


def allocate(
    *,
    ranges: Sequence[PoolRange],
    snapshot: Snapshot,
    owner: Owner,
    requested: Sequence[tuple[int, int]] = (),
    overlapping: bool = True,
    skip: int = 0,
    fixed: Sequence[FixedReservation] = (),
    fixed_mine: Collection[tuple[int, int]] = (),
    elsewhere: Sequence[PoolKey] = (),
) -> Decision | Refusal:
    """Decide which address each range gives `owner`, or refuse.

    Per range, in order: what the attachment already holds (idempotent ADD; an entry recorded under another
    network config name, or none, is rewritten under `owner`'s, the config the runtime now says it is in);
    else what its sticky key holds (retained after a DEL, or held by another container of the key), in the
    range's pool or, with node slices, in another pool of the network listed in `elsewhere`; else the address
    its pod held under an older container (recreated pod keeps its IP); else an address the attachment
    reserved network-wide without its pool entry (a call interrupted between its writes, on stores that write
    them one at a time), unless another pool of the snapshot has an entry there (`Decision.resumed`); else the
    requested addresses that fall in this range; else the lowest free address (passing over `skip` free ones:
    see `lowest_free`). Addresses of `fixed` reservations are never picked nor given on request, except those
    in `fixed_mine` (the attachment's own, which the caller requests). A Refusal when a requested address is
    in no range or held by another, or a range has no free address left.
    Costs O((ranges + allocations + reservations) log n): see `whereabouts.occupancy`.
    """
    by_range = _assign_requests(ranges, requested, owner)
    if isinstance(by_range, Refusal):
        return by_range
    seen = Occupancy(snapshot, owner, overlapping)
    _block_fixed(ranges, seen, fixed, fixed_mine)
    readers: dict[PoolKey, int] = {}  # ranges still to come per pool: several may share one
    for pool_range in ranges:
        readers[pool_range.key] = readers.get(pool_range.key, 0) + 1
    held: list[tuple[PoolRange, tuple[int, ...]]] = []
    resumed = False
    for pool_range in ranges:
        wanted = by_range.get(pool_range, {}) if by_range else {}
        readers[pool_range.key] -= 1
        last = not readers[pool_range.key]
        mine = seen.take_held(pool_range, wanted, last)
        _record_under_owners_name(pool_range, seen, mine, fixed_mine)
        if not mine and owner.sticky:
            mine = _take_sticky(pool_range, seen, wanted, last, elsewhere, fixed_mine)
        if not mine:
            mine = _adopt_pod_address(pool_range, seen, wanted, last)
        if not mine and not wanted and overlapping:
            mine = _resume_reservation(pool_range, seen)
            resumed = resumed or bool(mine)
        if not mine and wanted:
            claimed = _claim_all_requested(pool_range, wanted, seen, fixed_mine)
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
    return Decision(tuple(held), ChangeSet(tuple(seen.planned), expected, overlapping), resumed)


def release(
    *, keys: Sequence[PoolKey], snapshot: Snapshot, owner: Owner, overlapping: bool, retain: Retain | None = None
) -> ChangeSet:
    """Release every address `owner`'s attachment holds in the given pools; with `retain` (sticky networks),
    an entry it turns into a retained owner stays, retained for its key, instead."""
    planned = [
        Change(key, key.version, ip, retain(who, owner) if retain else None, previous=who)
        for key in keys
        for ip, who in sorted(_concerning(snapshot, key, owner, overlapping).items())
        if who.held_by(owner)
    ]
    expected = tuple((key, snapshot.pools[key].version) for key in keys)
    return ChangeSet(tuple(planned), expected, overlapping)


def _concerning(snapshot: Snapshot, key: PoolKey, owner: Owner, overlapping: bool) -> dict[int, Owner]:
    """The pool's entries that may concern `owner`: by the snapshot's index where it has one, else all."""
    allocations = snapshot.pools[key].allocations
    index = snapshot.index
    if overlapping and index is not None and index.knows(key):
        return index.concerning(key, owner, allocations)
    return allocations


def release_all_but(
    *,
    keys: Sequence[PoolKey],
    snapshot: Snapshot,
    netconf: str,
    keep: set[tuple[str, str]],
    overlapping: bool,
    retain: Retain | None = None,
    node: str | None = None,
) -> ChangeSet:
    """GC of network config `netconf`: release every allocation recorded under that name whose (container ID,
    ifname) is not in `keep` (with `retain`, keep it retained for its sticky key, as its DEL would have). Other
    network configs' allocations, those whose name is unknown, and retained ones (no attachment's any more)
    are not this GC's to judge: `keep` lists only `netconf`'s attachments. With `node` (a store every node
    shares), only the allocations recorded on that node are: `keep` lists one host's attachments."""
    planned = [
        Change(key, key.version, ip, retain(who, who) if retain else None, previous=who)
        for key in keys
        for ip, who in sorted(snapshot.pools[key].allocations.items())
        if netconf
        and who.netconf == netconf
        and not who.retained
        and (who.container_id, who.ifname) not in keep
        and (node is None or (node and who.node == node))
    ]
    expected = tuple((key, snapshot.pools[key].version) for key in keys)
    return ChangeSet(tuple(planned), expected, overlapping)


def lapsed(*, keys: Sequence[PoolKey], snapshot: Snapshot, now: int, expire_pods: bool) -> list[Change]:
    """Retained entries an ADD may release on its way: a MAC's (and, where no reconciler can look for the pod,
    a pod's) once its retention has passed. A claim's waits for its IPAMClaim's deletion (the reconciler's to
    see). Not one because the calling config has `sticky` off: another config of the same name (a NAD of
    another namespace) may keep it on, and its keys come back."""
    found = []
    index = snapshot.index
    for key in keys:
        allocations = snapshot.pools[key].allocations
        lapsing = []
        for ip, who in (index.retained(key, allocations) if index and index.knows(key) else allocations).items():
            kind = who.sticky_kind
            expiring = kind == "mac" or (kind == "pod" and expire_pods)
            if expiring and who.retained and who.expires and now >= who.expires:
                lapsing.append(Change(key, key.version, ip, None, previous=who))
        found += sorted(lapsing, key=lambda change: change.ip)  # (in address order, however the pool was read)
    return found


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
        if ip == home.rng.gateway:  # the router's address: a pod holding it breaks its own network's routing
            return Refusal(
                OUTSIDE,
                f"requested address {format_ip(version, ip)} for {_who(owner)} is the gateway of range {home.rng.cidr}",
            )
        by_range.setdefault(home, {})[ip] = None
    return by_range


def _record_under_owners_name(
    pool_range: PoolRange, seen: Occupancy, held: list[int], fixed_mine: Collection[tuple[int, int]]
) -> None:
    """Entries the attachment holds under another network config name (or none) are rewritten under its
    current one: left as they were, a GC of that other config would free a live address. So are entries whose
    sticky record differs (retained by an earlier DEL of this container; sticky turned on or off since)."""
    for ip in held:
        recorded = seen.holder(pool_range, ip)
        target = _target(seen.owner, pool_range.rng.version, ip, fixed_mine)
        if recorded is not None and _recorded_differently(recorded, target):
            seen.plan(Change(pool_range.key, pool_range.rng.version, ip, target, previous=recorded))


def _recorded_differently(recorded: Owner, target: Owner) -> bool:
    return (recorded.netconf, recorded.sticky, recorded.retained, recorded.expires, recorded.fixed) != (
        target.netconf, target.sticky, target.retained, target.expires, target.fixed)  # fmt: skip


def _target(owner: Owner, version: int, ip: int, fixed_mine: Collection[tuple[int, int]]) -> Owner:
    """How `owner` records `ip`: marked fixed when the address is one of its fixed reservations."""
    return owner.but(fixed=True) if (version, ip) in fixed_mine else owner


def _block_fixed(
    ranges: Sequence[PoolRange], seen: Occupancy, fixed: Sequence[FixedReservation], mine: Collection[tuple[int, int]]
) -> None:
    for reservation in fixed:
        if (reservation.version, reservation.ip) in mine:
            continue
        for pool_range in ranges:
            if pool_range.rng.contains(reservation.version, reservation.ip):
                seen.block(pool_range, reservation.ip, reservation.key)


def _take_sticky(
    pool_range: PoolRange,
    seen: Occupancy,
    wanted: dict[int, None],
    last: bool,
    elsewhere: Sequence[PoolKey],
    fixed_mine: Collection[tuple[int, int]],
) -> list[int]:
    """The sticky key's addresses: taken over from whoever records them (a retained entry, or another
    container of the key: a StatefulSet pod recreated before its DEL, a VM's migration target)."""
    version = pool_range.rng.version
    found = [(pool_range.key, ip, who) for ip, who in seen.take_sticky(pool_range, wanted, last)]
    if not found and elsewhere:
        found = seen.sticky_elsewhere(pool_range, elsewhere)
    for key, ip, previous in found:
        seen.plan(Change(key, version, ip, _target(seen.owner, version, ip, fixed_mine), previous=previous))
    return [ip for _, ip, _ in found]


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


def _claim_all_requested(
    pool_range: PoolRange, wanted: dict[int, None], seen: Occupancy, fixed_mine: Collection[tuple[int, int]]
) -> list[int] | Refusal:
    claimed = []
    for ip in wanted:
        outcome = _claim_requested(pool_range, ip, seen, fixed_mine)
        if isinstance(outcome, Refusal):
            return outcome  # the whole decision is refused: what `seen` planned so far goes with it
        claimed.append(outcome)
    return claimed


def _claim_requested(
    pool_range: PoolRange, ip: int, seen: Occupancy, fixed_mine: Collection[tuple[int, int]]
) -> int | Refusal:
    version = pool_range.rng.version
    address = f"requested address {format_ip(version, ip)} in range {pool_range.rng.cidr}"
    reserved_for = seen.blocked_for(version, ip)
    if reserved_for:
        return Refusal(TAKEN, f"{address} is reserved for {reserved_for}; cannot give it to {_who(seen.owner)}")
    holder = seen.holder(pool_range, ip)
    if holder is not None and not holder.same_attachment(seen.owner):
        state = f"retained for {holder.sticky} after the DEL of" if holder.retained else "already held by"
        return Refusal(TAKEN, f"{address} is {state} {_who(holder)}; cannot give it to {_who(seen.owner)}")
    previous = holder if holder is not None and holder.retained else None  # its own entry, retained by its DEL
    seen.plan(Change(pool_range.key, version, ip, _target(seen.owner, version, ip, fixed_mine), previous=previous))
    return ip


def _claim_lowest(pool_range: PoolRange, seen: Occupancy, skip: int) -> int | Refusal:
    rng = pool_range.rng
    ip = seen.lowest(pool_range, skip)
    if ip is None:
        return Refusal(
            EXHAUSTED,
            f"no free address in range {rng.cidr} (window {format_ip(rng.version, rng.first)}-"
            f"{format_ip(rng.version, rng.last)}, {seen.held_in(pool_range)} held, of which "
            f"{seen.retained_in(pool_range)} retained for sticky keys) for {_who(seen.owner)}",
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
