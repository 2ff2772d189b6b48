"""Who holds which address, kept up to date one change at a time, with the lookups a decision asks for.

A decision reads a snapshot of its pools, and `Occupancy` used to index it afresh every call: every address
held walked in Python to sort the taken ones and to find the attachment's own, its sticky key's and its pod's.
At 10,000 addresses held that was ~55 of the node daemon's ~60 ms per ADD, and it grew with the pool.

A store that keeps a live copy of its holders (the node daemon's watch-fed cache of the Kubernetes store)
files each one here as its change arrives (`Holdings.put`, `drop`): per network its holders, per network and
IP version the sorted set of their addresses, per pool (the range an address was taken in) its entries with
lookups by attachment, sticky key and pod interface. A snapshot then carries a `HoldingsView`: its sorted sets
copied from the live ones (one list copy per 512 addresses, no sort), and lookups that answer only the
entries that concern one attachment. A decision's cost then grows with what concerns its attachment, not
with the pool.

The view's lookups read the live holdings when asked, which may be newer than the snapshot: each answer is
filtered through the snapshot's own entries (a holder that came since is not in them; one that went since is
no candidate, as if the snapshot were that much newer: the create of an address's reservation, not the
snapshot, decides who holds it). Changes a batch applies to its working copy are applied to its view too.
"""

from __future__ import annotations

from whereabouts.ranges import TakenAddresses
from whereabouts.sortedints import SortedInts

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Collection, Iterable, Mapping
    from typing import Any

    from whereabouts.model import Change, Owner, PoolKey, PoolState

Address = tuple[str, int, int]  # (network, IP version, value)
Subnet = tuple[int, int, int]  # (IP version, network address, prefix length) of the range an address was taken in


class PoolEntries:
    """One pool's entries (address -> holder), filed by attachment, sticky key and pod interface."""

    __slots__ = ("attachments", "bare", "entries", "pods", "retained", "sticky")

    def __init__(self, entries: Mapping[int, Owner] | None = None) -> None:
        self.entries: dict[int, Owner] = {}
        self.attachments: dict[tuple[str, str], set[int]] = {}  # (container ID, ifname) -> addresses
        self.sticky: dict[str, set[int]] = {}
        self.pods: dict[tuple[str, str], set[int]] = {}  # (podref, ifname) -> addresses
        self.bare: set[int] = set()  # held under no network config name
        self.retained: set[int] = set()  # kept for a sticky key after the DEL
        for ip, owner in (entries or {}).items():
            self.put(ip, owner)

    def put(self, ip: int, owner: Owner) -> None:
        self.drop(ip)
        self.entries[ip] = owner
        self.attachments.setdefault((owner.container_id, owner.ifname), set()).add(ip)
        if owner.sticky:
            self.sticky.setdefault(owner.sticky, set()).add(ip)
        if owner.podref:
            self.pods.setdefault((owner.podref, owner.ifname), set()).add(ip)
        if not owner.netconf:
            self.bare.add(ip)
        if owner.retained:
            self.retained.add(ip)

    def drop(self, ip: int) -> None:
        owner = self.entries.pop(ip, None)
        if owner is None:
            return
        _unfile(self.attachments, (owner.container_id, owner.ifname), ip)
        if owner.sticky:
            _unfile(self.sticky, owner.sticky, ip)
        if owner.podref:
            _unfile(self.pods, (owner.podref, owner.ifname), ip)
        self.bare.discard(ip)
        self.retained.discard(ip)

    def evolved(self, changes: Mapping[int, Owner | None]) -> PoolEntries:
        """A new PoolEntries with `changes` applied (None: the address's entry goes), this one left as it was (a
        snapshot may be reading it). What the changes do not touch is shared: the copy costs a few copies of
        flat dicts and sets, not a walk that files every entry again (the next version of a 10,000-entry IPPool
        differs from the last by a round of changes)."""
        new = PoolEntries()
        new.entries = dict(self.entries)
        new.attachments, new.sticky, new.pods = dict(self.attachments), dict(self.sticky), dict(self.pods)
        new.bare, new.retained = set(self.bare), set(self.retained)
        touched: tuple[set[Any], set[Any], set[Any]] = (set(), set(), set())
        for ip, owner in changes.items():
            for who in (self.entries.get(ip), owner):
                if who is not None:  # (filed as `put` files them)
                    touched[0].add((who.container_id, who.ifname))
                    if who.sticky:
                        touched[1].add(who.sticky)
                    if who.podref:
                        touched[2].add((who.podref, who.ifname))
        filings: tuple[dict[Any, set[int]], ...] = (new.attachments, new.sticky, new.pods)
        for filed, keys in zip(filings, touched, strict=True):
            for key in keys & filed.keys():  # the sets the changes touch are the copy's own: the rest are shared
                filed[key] = set(filed[key])
        for ip, owner in changes.items():
            if owner is None:
                new.drop(ip)
            else:
                new.put(ip, owner)
        return new

    def concerning(self, owner: Owner) -> set[int]:
        """The addresses held by `owner`'s attachment, its sticky key or its pod's interface (a superset of
        what a decision for it looks for in the pool)."""
        found = set(self.attachments.get((owner.container_id, owner.ifname), ()))
        if owner.sticky:
            found.update(self.sticky.get(owner.sticky, ()))
        if owner.podref:
            found.update(self.pods.get((owner.podref, owner.ifname), ()))
        return found


def _unfile(filed: dict[Any, set[Any]], key: object, value: object) -> None:
    addresses = filed.get(key)
    if addresses is not None:
        addresses.discard(value)
        if not addresses:  # attachments come and go for months: keep no key that holds nothing
            del filed[key]


class Holdings:
    """Every holder of the networks a store serves, filed for decisions (see the module). Not locked: its
    owner changes and reads it under its own lock."""

    def __init__(self) -> None:
        self.reserved: dict[str, dict[Address, Owner]] = {}  # network -> its holders
        self.sorted: dict[tuple[str, int], tuple[SortedInts, SortedInts]] = {}  # (network, version) -> all, .0 ones
        self.sets: dict[tuple[str, int], set[int]] = {}  # the same, as a set: `covers` tests thousands at C speed
        self.attachments: dict[tuple[str, str, str], set[Address]] = {}  # (network, container ID, ifname)
        self.pools: dict[tuple[str, Subnet], PoolEntries] = {}
        self.filed: dict[Address, Subnet] = {}  # the pool each address is filed in

    def put(self, address: Address, owner: Owner, subnet: Subnet | None) -> None:
        """`address` is held by `owner`, taken in the range `subnet` (None: unknown, in no pool)."""
        self.drop(address)
        network, version, ip = address
        self.reserved.setdefault(network, {})[address] = owner
        values, zeros = self.sorted.setdefault((network, version), (SortedInts(), SortedInts()))
        values.add(ip)
        if ip & 0xFF == 0:
            zeros.add(ip)
        self.sets.setdefault((network, version), set()).add(ip)
        self.attachments.setdefault((network, owner.container_id, owner.ifname), set()).add(address)
        if subnet is not None and inside(subnet, version, ip):
            self.pools.setdefault((network, subnet), PoolEntries()).put(ip, owner)
            self.filed[address] = subnet

    def drop(self, address: Address) -> None:
        network, version, ip = address
        owner = self.reserved.get(network, {}).pop(address, None)
        if owner is None:
            return
        if not self.reserved[network]:
            del self.reserved[network]
        values, zeros = self.sorted[(network, version)]
        values.discard(ip)
        zeros.discard(ip)
        ips = self.sets[(network, version)]
        ips.discard(ip)
        if not ips:
            del self.sorted[(network, version)], self.sets[(network, version)]
        _unfile(self.attachments, (network, owner.container_id, owner.ifname), address)
        subnet = self.filed.pop(address, None)
        if subnet is not None:
            pool = self.pools[(network, subnet)]
            pool.drop(ip)
            if not pool.entries:
                del self.pools[(network, subnet)]

    def holders(self, networks: Iterable[str]) -> dict[Address, Owner]:
        """Every holder of the networks: a copy."""
        found: dict[Address, Owner] = {}
        for network in networks:
            found.update(self.reserved.get(network, {}))
        return found

    def pool(self, network: str, subnet: Subnet) -> PoolEntries | None:
        return self.pools.get((network, subnet))

    def covers(self, network: str, version: int, ips: Collection[int]) -> bool:
        """Whether every address of `ips` has a holder here."""
        return all(map(self.sets.get((network, version), set()).__contains__, ips))

    def view(self, lock: threading.Lock, networks: Iterable[str], pools: dict[PoolKey, PoolSources]) -> HoldingsView:
        """A snapshot's view (the caller holds `lock`, as it copies the pools' entries into the snapshot)."""
        wanted = set(networks)
        copies = {where: (values.copy(), zeros.copy()) for where, (values, zeros) in self.sorted.items()
                  if where[0] in wanted}  # fmt: skip
        return HoldingsView(self, lock, copies, pools, {})


class PoolSources:
    """Where a view finds one pool's entries: the live holdings' pool, if it has one (read under the lock),
    another set of entries that does not change (the decoded IPPool mirror), and whether every entry of the
    snapshot's pool has a network-wide holder (so its domain's taken set covers it)."""

    __slots__ = ("covered", "fixed", "network", "subnet")

    def __init__(self, network: str, subnet: Subnet | None, fixed: PoolEntries | None, covered: bool) -> None:
        self.network, self.subnet, self.fixed, self.covered = network, subnet, fixed, covered


class HoldingsView:
    """What one decision's snapshot asks the holdings instead of walking its pools (see the module)."""

    __slots__ = ("_applied", "_holdings", "_lock", "_pools", "_sorted")

    def __init__(
        self,
        holdings: Holdings,
        lock: threading.Lock,
        copies: dict[tuple[str, int], tuple[SortedInts, SortedInts]],
        pools: dict[PoolKey, PoolSources],
        applied: dict[tuple[PoolKey, int], Owner | None],
    ) -> None:
        self._holdings, self._lock, self._sorted, self._pools = holdings, lock, copies, pools
        self._applied = applied  # (pool, address) -> holder since (None: released), in order

    def fork(self) -> HoldingsView:
        """For a working copy of the snapshot: the same, with changes applied apart from this one's."""
        return HoldingsView(self._holdings, self._lock, self._sorted, self._pools, dict(self._applied))

    def knows(self, key: PoolKey) -> bool:
        return key in self._pools

    def apply(self, change: Change) -> None:
        """A change the snapshot's working copy made (its entry and its network-wide holder)."""
        self._applied.pop((change.key, change.ip), None)
        self._applied[(change.key, change.ip)] = change.owner

    def taken(self, network: str, version: int) -> TakenAddresses:
        """The addresses of the network held network-wide as the snapshot saw them, changes applied: a set of
        the decision's own (it adds the holds it plans)."""
        found = self._sorted.get((network, version))
        taken = TakenAddresses() if found is None else TakenAddresses.of_sorted(found[0].copy(), found[1].copy())
        for (key, ip), owner in self._applied.items():
            if key.network == network and key.version == version:
                if owner is not None:
                    taken.add(ip)
                else:
                    taken.discard(ip)
        return taken

    def covered(self, key: PoolKey) -> bool:
        """Whether every entry of the pool has a network-wide holder: as the snapshot was, until a release applied
        to the working copy (an entry lapsed) takes one away, which may leave another pool's entry at that
        address, of an overlapping range, uncovered (then the caller walks the pool, as it does without a view)."""
        if not self._pools[key].covered:
            return False
        return not any(owner is None and changed.network == key.network and changed.version == key.version
                       for (changed, _), owner in self._applied.items())  # fmt: skip

    def concerning(self, key: PoolKey, owner: Owner, allocations: Mapping[int, Owner]) -> dict[int, Owner]:
        """The entries of the snapshot's pool `key` (its `allocations`) that may concern `owner`: held by its
        attachment, its sticky key or its pod's interface (a superset: the caller tells them apart)."""
        return self._entries(key, allocations, lambda entries: entries.concerning(owner))

    def retained(self, key: PoolKey, allocations: Mapping[int, Owner]) -> dict[int, Owner]:
        """The entries of the snapshot's pool `key` that may be retained for a sticky key (a superset)."""
        return self._entries(key, allocations, lambda entries: entries.retained)

    def _entries(
        self, key: PoolKey, allocations: Mapping[int, Owner], pick: Callable[[PoolEntries], Iterable[int]]
    ) -> dict[int, Owner]:
        """The snapshot's entries at the addresses `pick` names in the pool's filed entries (the decoded mirror's
        and the live holdings', read under the lock), and where the snapshot's working copy changed since."""
        sources = self._pools[key]
        candidates: set[int] = set() if sources.fixed is None else set(pick(sources.fixed))
        if sources.subnet is not None:
            with self._lock:
                live = self._holdings.pool(sources.network, sources.subnet)
                if live is not None:
                    candidates.update(pick(live))
        candidates.update(ip for changed, ip in self._applied if changed == key)
        return {ip: allocations[ip] for ip in sorted(candidates) if ip in allocations}

    def attachment_holds(
        self, network: str, version: int, owner: Owner, reservations: Mapping[Address, Owner]
    ) -> list[int]:
        """The addresses of `network` (IP `version`) that `owner`'s attachment holds network-wide as the
        snapshot's `reservations` say, sorted."""
        with self._lock:
            candidates = set(self._holdings.attachments.get((network, owner.container_id, owner.ifname), ()))
        candidates.update((network, version, ip) for key, ip in self._applied if key.network == network)
        found = []
        for address in candidates:
            holder = reservations.get(address)
            if address[1] == version and holder is not None and holder.same_attachment(owner):
                found.append(address[2])
        return sorted(found)


def index_of(pools: Mapping[PoolKey, PoolState], reserved: Mapping[Address, Owner]) -> HoldingsView:
    """An index of a snapshot's pools and reservations, filed afresh (the memory store's, a test store's: the
    node daemon's cache files each change as it comes)."""
    import threading

    holdings = Holdings()
    for address, owner in reserved.items():
        holdings.put(address, owner, None)
    sources = {
        key: PoolSources(key.network, None, PoolEntries(pool.allocations),
                         holdings.covers(key.network, key.version, pool.allocations))
        for key, pool in pools.items()
    }  # fmt: skip
    return holdings.view(threading.Lock(), {key.network for key in pools}, sources)


def inside(subnet: Subnet, version: int, ip: int) -> bool:
    subnet_version, base, prefix = subnet
    bits = 32 if version == 4 else 128
    return version == subnet_version and 0 <= prefix <= bits and base <= ip < base + (1 << (bits - prefix))
