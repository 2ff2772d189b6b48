"""What one allocation decision sees as held: the snapshot, indexed once, plus the holds it plans.

The allocator takes the configured ranges one by one. Looking through the pool's allocations, every
reservation and every planned change again for each range made a call with thousands of ranges quadratic
(20,000 ranges took minutes, with the local store's write lock held all along). Here the snapshot is indexed
once per decision and each planned hold updates the indexes it affects: a decision costs
O((ranges + allocations + reservations) log n).

A store that keeps its holders indexed as they change (the node daemon: whereabouts.holdings) hands the
snapshot a view instead: a domain's taken set is a copy of one kept sorted, and a pool's entries of the
attachment, its sticky key and its pod come by lookup, so the decision no longer walks every address held.

An allocation domain is what competes for one address: with overlapping ranges, every pool of the same
`network_name` and IP version (they share the network-wide reservations); without, each pool alone.
"""

from __future__ import annotations

from bisect import bisect_left

from whereabouts.model import Owner
from whereabouts.ranges import TakenAddresses, lowest_free

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Iterable

    from whereabouts.allocator import PoolRange
    from whereabouts.model import Change, PoolKey, Snapshot
    from whereabouts.ranges import IPRange


class _Domain:
    """One allocation domain: the addresses every pool of it passes over (its reservations and the holds this
    decision plans), and the taken-sets of pools that hold more than that, filed by CIDR so that a planned
    hold reaches those whose CIDR holds it."""

    __slots__ = ("planned", "prefixes", "stray", "taken")

    def __init__(self, taken: TakenAddresses) -> None:
        self.taken = taken
        self.planned: set[int] = set()
        self.stray: dict[tuple[int, int], list[TakenAddresses]] = {}  # (prefix, network address) -> sets
        self.prefixes: list[int] = []  # the prefix lengths in `stray`


class _Deck:
    """Addresses held in one pool (by the attachment, or by its pod under an older container), dealt out to
    the ranges that read the pool: each address to one range only, however many ranges share the pool."""

    __slots__ = ("_next", "left", "values")

    def __init__(self, values: list[int]) -> None:
        self.values = sorted(values)
        self.left = len(self.values)
        self._next: dict[int, int] = {}  # dealt index -> an index at or before the next undealt one

    def deal(self, rng: IPRange, wanted: Iterable[int], last: bool) -> list[int]:
        """What one range gets: the addresses its call requests (every range requesting one gets it, as the
        first ADD gave it), then for the last range reading the pool every address left, for an earlier one
        the lowest address left that it could have picked itself, else the lowest left. So an ADD repeated
        gives each range what the first one gave it."""
        if not self.values:
            return []
        hits = [i for i in map(self._index_of, wanted) if i is not None]
        for i in hits:
            self._deal(i)
        if last:
            return [self.values[i] for i in sorted({*hits, *self._take_all()})]
        if hits or not self.left:
            return [self.values[i] for i in hits]
        i = self._find(bisect_left(self.values, rng.first))
        while i < len(self.values) and self.values[i] <= rng.last and not rng.pickable(self.values[i]):
            i = self._find(i + 1)
        if i == len(self.values) or not rng.pickable(self.values[i]):
            i = self._find(0)
        self._deal(i)
        return [self.values[i]]

    def _index_of(self, value: int) -> int | None:
        i = bisect_left(self.values, value)
        return i if i < len(self.values) and self.values[i] == value else None

    def _find(self, i: int) -> int:
        """The first undealt index at or after i (len(values) when none)."""
        start, nxt = i, self._next
        while i in nxt:
            i = nxt[i]
        while start in nxt and nxt[start] != i:  # path compression: the next search jumps straight there
            nxt[start], start = i, nxt[start]
        return i

    def _deal(self, i: int) -> None:
        if i not in self._next:
            self._next[i] = i + 1
            self.left -= 1

    def _take_all(self) -> list[int]:
        taken, i = [], self._find(0)
        while i < len(self.values):
            taken.append(i)
            self._deal(i)
            i = self._find(i + 1)
        return taken


def takes_over(owner: Owner, recorded: Owner) -> bool:
    """Whether `owner`'s sticky key takes over `recorded`'s entry (held or retained): the same key and, for a
    MAC (which any pod may claim to have), a pod of the same namespace (none for none), unless the config
    reserves the address for that MAC (`fixed`)."""
    if not owner.sticky or recorded.sticky != owner.sticky:
        return False
    same_namespace = recorded.podref.partition("/")[0] == owner.podref.partition("/")[0]
    return owner.sticky_kind != "mac" or recorded.fixed or same_namespace


_NO_DECK = _Deck([])  # nothing to deal: shared, as dealing from it changes nothing


class _Pool:
    """One pool as this decision reads it: its allocations and the decks of what the attachment, its sticky key
    and its pod hold there. `covered`: the domain's taken-set holds all its allocations already (with
    overlapping ranges, each is reserved network-wide too), so automatic picks need no taken-set of its own."""

    __slots__ = ("allocations", "covered", "mine", "pod", "sticky")

    def __init__(
        self, allocations: dict[int, Owner], owner: Owner, covered: bool, concerning: dict[int, Owner] | None = None
    ) -> None:
        """`concerning`: the entries that may concern `owner` (a snapshot's index found them), else all of them."""
        self.allocations, self.covered = allocations, covered
        mine: list[int] = []
        sticky: list[int] = []
        pod: list[int] = []
        for ip, who in (allocations if concerning is None else concerning).items():
            if who.same_attachment(owner):
                mine.append(ip)
            elif takes_over(owner, who):
                sticky.append(ip)
            elif owner.podref and who.same_pod_interface(owner) and not who.retained:
                pod.append(ip)
        self.mine = _Deck(mine) if mine else _NO_DECK
        self.sticky = _Deck(sticky) if sticky else _NO_DECK
        self.pod = _Deck(pod) if pod else _NO_DECK


_EMPTY_POOL = _Pool({}, Owner("", ""), covered=True)


class Occupancy:
    """The snapshot of one decision for one attachment (`owner`), and the changes it plans (in order)."""

    def __init__(self, snapshot: Snapshot, owner: Owner, overlapping: bool) -> None:
        self.snapshot, self.owner, self.overlapping = snapshot, owner, overlapping
        self.index = snapshot.index if overlapping else None  # the store's lookups, in place of the walks below
        self.planned: list[Change] = []
        self._pools: dict[PoolKey, _Pool] = {}
        self._domains: dict[object, _Domain] = {}
        self._stray: dict[tuple[PoolKey, int, int], TakenAddresses] = {}  # (pool, network, prefix) -> set
        self._reserved: dict[tuple[str, int], list[int]] = {}  # (network, IP version) -> reserved addresses
        self._mine: dict[tuple[str, int], list[int]] = {}  # the same, reserved by this attachment
        self._blocked: dict[tuple[int, int], str] = {}  # (IP version, ip) -> the key a fixed reservation names
        if overlapping and self.index is None:
            for (network, version, ip), who in snapshot.reservations.items():
                self._reserved.setdefault((network, version), []).append(ip)
                if who.same_attachment(owner):
                    self._mine.setdefault((network, version), []).append(ip)
            for addresses in self._mine.values():
                addresses.sort()

    def take_held(self, pool_range: PoolRange, wanted: Iterable[int], last: bool) -> list[int]:
        """What the attachment holds in the range's pool, as read, for this range (see `_Deck.deal`: `last`
        says no later range of the call reads the pool)."""
        return self._pool(pool_range).mine.deal(pool_range.rng, wanted, last)

    def take_pod_held(self, pool_range: PoolRange, wanted: Iterable[int], last: bool) -> list[tuple[int, Owner]]:
        """What the attachment's pod holds in the range's pool on the same interface under another
        container, for this range, and who holds it."""
        pool = self._pool(pool_range)
        return [(ip, pool.allocations[ip]) for ip in pool.pod.deal(pool_range.rng, wanted, last)]

    def take_sticky(self, pool_range: PoolRange, wanted: Iterable[int], last: bool) -> list[tuple[int, Owner]]:
        """What the attachment's sticky key holds (retained, or held by another container of the key) in the
        range's pool, for this range, and who holds it."""
        pool = self._pool(pool_range)
        return [(ip, pool.allocations[ip]) for ip in pool.sticky.deal(pool_range.rng, wanted, last)]

    def sticky_elsewhere(self, pool_range: PoolRange, others: Iterable[PoolKey]) -> list[tuple[PoolKey, int, Owner]]:
        """Addresses of the range that the sticky key holds in other pools of the snapshot (node slices: the
        key's address lives in the slice of the node it was on), not yet taken by this decision."""
        rng, planned = pool_range.rng, self._domain(pool_range.key, pool_range.rng.version).planned
        found = [
            (key, ip, who)
            for key in others
            for ip, who in self.snapshot.pools[key].allocations.items()
            if takes_over(self.owner, who) and rng.contains(key.version, ip) and ip not in planned
        ]
        return sorted(found, key=lambda item: item[1])[:1]

    def block(self, pool_range: PoolRange, ip: int, key: str) -> None:
        """Keep automatic picks off `ip` (a fixed reservation of another key) in the range's domain."""
        domain = self._domain(pool_range.key, pool_range.rng.version)
        self._blocked[(pool_range.rng.version, ip)] = key
        self._mark(domain, pool_range.rng.version, ip)

    def blocked_for(self, version: int, ip: int) -> str:
        """The key a fixed reservation keeps `ip` for, if it is not this attachment's ("" otherwise)."""
        return self._blocked.get((version, ip), "")

    def retained_in(self, pool_range: PoolRange) -> int:
        """How many addresses of the range's CIDR are retained for sticky keys (for the exhausted error)."""
        rng = pool_range.rng
        allocations = self._pool(pool_range).allocations
        return sum(1 for ip, who in allocations.items() if who.retained and rng.network <= ip <= rng.broadcast)

    def holder(self, pool_range: PoolRange, ip: int) -> Owner | None:
        """Who holds `ip` as this decision sees it: the attachment itself if it plans to, else the pool's
        holder, else (overlapping ranges) whoever reserved it network-wide."""
        key, version = pool_range.key, pool_range.rng.version
        if ip in self._domain(key, version).planned:
            return self.owner
        holder = self._pool(pool_range).allocations.get(ip)
        if holder is None and self.overlapping:
            holder = self.snapshot.reservations.get((key.network, version, ip))
        return holder

    def resumable(self, pool_range: PoolRange) -> int | None:
        """The lowest address in the range's CIDR that the attachment reserved network-wide, that its pool
        does not hold, and that no earlier range of this decision took (overlapping ranges only). Not one that
        an entry of another pool of the snapshot holds: the reservation backs that entry (the attachment's,
        of a range since dropped from its config), and an entry here too would share it, so that releasing
        either one frees the address while the other still holds it."""
        key, rng = pool_range.key, pool_range.rng
        mine = self._mine.get((key.network, rng.version))
        if mine is None and self.index is not None:
            mine = self._mine[(key.network, rng.version)] = self.index.attachment_holds(
                key.network, rng.version, self.owner, self.snapshot.reservations
            )
        if not mine:
            return None
        planned, allocations = self._domain(key, rng.version).planned, self._pool(pool_range).allocations
        i = bisect_left(mine, rng.network)
        while i < len(mine) and mine[i] <= rng.broadcast:
            if mine[i] in planned:
                del mine[i]  # taken by this decision for good: no later range needs to look at it again
            elif mine[i] in allocations or self._held_elsewhere(key, rng.version, mine[i]):
                i += 1
            else:
                return mine[i]
        return None

    def _held_elsewhere(self, key: PoolKey, version: int, ip: int) -> bool:
        """Whether a pool of the snapshot other than `key`, in its allocation domain, has an entry at `ip`."""
        return any(
            other != key and other.network == key.network and ip in pool.allocations and other.version == version
            for other, pool in self.snapshot.pools.items()
        )

    def lowest(self, pool_range: PoolRange, skip: int) -> int | None:
        """The lowest free address of the range's window (see `lowest_free`)."""
        return lowest_free(pool_range.rng, self._taken_for(pool_range), skip)

    def held_in(self, pool_range: PoolRange) -> int:
        """How many addresses of the range's CIDR count as held (for the error when none is free)."""
        return self._taken_for(pool_range).count(pool_range.rng.network, pool_range.rng.broadcast)

    def plan(self, change: Change) -> None:
        """Add a hold to the decision: later ranges of the same domain see the address taken."""
        self.planned.append(change)
        domain = self._domain(change.key, change.version)
        if change.ip in domain.planned:
            return
        domain.planned.add(change.ip)
        self._mark(domain, change.version, change.ip)

    @staticmethod
    def _mark(domain: _Domain, version: int, ip: int) -> None:
        domain.taken.add(ip)
        bits = 32 if version == 4 else 128
        for prefix in domain.prefixes:
            host_bits = bits - prefix
            for taken in domain.stray.get((prefix, ip >> host_bits << host_bits), ()):
                taken.add(ip)

    def _pool(self, pool_range: PoolRange) -> _Pool:
        key = pool_range.key
        pool = self._pools.get(key)
        if pool is None:
            allocations = self.snapshot.pools[key].allocations
            if not allocations:
                return _EMPTY_POOL
            if self.index is not None and self.index.knows(key):
                concerning = self.index.concerning(key, self.owner, allocations)
                pool = self._pools[key] = _Pool(allocations, self.owner, self.index.covered(key), concerning)
                return pool
            reservations, version = self.snapshot.reservations, pool_range.rng.version
            covered = self.overlapping and all((key.network, version, ip) in reservations for ip in allocations)
            pool = self._pools[key] = _Pool(allocations, self.owner, covered)
        return pool

    def _taken_for(self, pool_range: PoolRange) -> TakenAddresses:
        pool, domain = self._pool(pool_range), self._domain(pool_range.key, pool_range.rng.version)
        return domain.taken if pool.covered else self._stray_taken(pool_range, pool, domain)

    def _domain(self, key: PoolKey, version: int) -> _Domain:
        name = (key.network, version) if self.overlapping else (key, version)
        domain = self._domains.get(name)
        if domain is None:
            if self.index is not None:
                taken = self.index.taken(key.network, version)
            else:
                taken = TakenAddresses(self._reserved.get((key.network, version), []))
            domain = self._domains[name] = _Domain(taken)
        return domain

    def _stray_taken(self, pool_range: PoolRange, pool: _Pool, domain: _Domain) -> TakenAddresses:
        """The taken-set of a pool holding addresses its domain's set lacks (allocations never reserved
        network-wide, or any allocation without overlapping ranges): its allocations plus, within its CIDR
        (the window lies inside), the domain's set. Built once per pool and CIDR, kept up to date by `plan`."""
        rng = pool_range.rng
        taken = self._stray.get((pool_range.key, rng.network, rng.prefix))
        if taken is None:
            taken = TakenAddresses([*pool.allocations, *domain.taken.between(rng.network, rng.broadcast)])
            self._stray[(pool_range.key, rng.network, rng.prefix)] = taken
            if rng.prefix not in domain.prefixes:
                domain.prefixes.append(rng.prefix)
            domain.stray.setdefault((rng.prefix, rng.network), []).append(taken)
        return taken
