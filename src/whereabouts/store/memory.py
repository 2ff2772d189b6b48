"""An in-memory store: the reference backend for tests and the contract suite.

It keeps the same model as the persistent stores: pools with a version bumped on every write (entries
record the network config name), and network-wide reservations for overlapping ranges (which do not).
Thread-safe; a transaction holds the store's lock.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from whereabouts.errors import AddressTaken
from whereabouts.holdings import index_of
from whereabouts.inventory import Tally, tally_allocations
from whereabouts.model import Change, ChangeSet, Owner, PoolKey, PoolState, Snapshot, overwrite_refused


@dataclass
class MemoryTransaction:
    store: MemoryStore
    snapshot: Snapshot
    informed: bool = False

    def commit(self, changes: ChangeSet) -> bool:
        return self.store.apply(changes)


@dataclass
class MemoryStore:
    max_changes = 0  # (see storage.Store)
    pools: dict[PoolKey, PoolState] = field(default_factory=dict)
    reservations: dict[tuple[str, int, int], Owner] = field(default_factory=dict)
    commits: int = 0
    # Give snapshots an index (whereabouts.holdings), as the node daemon's cache does: decisions then look
    # entries up rather than walk the pools, and must decide exactly as they do without one.
    indexed: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)
    finds_attachments = True

    @contextmanager
    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> Iterator[MemoryTransaction]:
        with self._lock:
            pools = {k: self._copy(k) for k in keys}
            reserved = {r: o for r, o in self.reservations.items() if overlapping and _inside(r, keys)}
            snapshot = Snapshot(pools, reserved, index_of(pools, reserved) if self.indexed else None)
            yield MemoryTransaction(self, snapshot)

    def _copy(self, key: PoolKey) -> PoolState:
        state = self.pools.get(key)
        return PoolState(key, state.version, dict(state.allocations)) if state else PoolState(key)

    def apply(self, changes: ChangeSet) -> bool:
        with self._lock:
            for key, version in changes.expected:
                current = self.pools.get(key)
                if (current.version if current else None) != version:
                    return False
            freed: set[tuple[PoolKey, int]] = set()  # entries released earlier in the change set
            for change in changes.changes:
                if change.owner is None:
                    freed.add((change.key, change.ip))
                else:
                    self._refuse_overwrite(change, changes.overlapping, freed)
            for change in changes.changes:
                pool = self.pools.setdefault(change.key, PoolState(change.key, 0))
                reservation = (change.key.network, change.version, change.ip)
                if change.owner is None:
                    if pool.allocations.get(change.ip) == change.previous:
                        pool.allocations.pop(change.ip, None)
                    reserved = self.reservations.get(reservation)
                    if (changes.overlapping and reserved is not None and reserved.same_holder(change.previous)
                            and not self._backed(change)):  # fmt: skip
                        self.reservations.pop(reservation, None)
                else:
                    pool.allocations[change.ip] = change.owner
                    if changes.overlapping:
                        self.reservations[reservation] = change.owner.named("")  # names go with pool entries
            for key in dict.fromkeys(c.key for c in changes.changes):
                pool = self.pools[key]
                pool.version = (pool.version if isinstance(pool.version, int) else 0) + 1  # None: a new pool
            self.commits += 1
            return True

    def _refuse_overwrite(self, change: Change, overlapping: bool, freed: set[tuple[PoolKey, int]]) -> None:
        """See model.overwrite_refused (`freed`: released earlier in its change set)."""
        pool = self.pools.get(change.key)
        found = [pool.allocations.get(change.ip) if pool and (change.key, change.ip) not in freed else None]
        if overlapping and not any(ip == change.ip and key.network == change.key.network for key, ip in freed):
            found.append(self.reservations.get((change.key.network, change.version, change.ip)))
        for recorded in found:
            refused = overwrite_refused(change, recorded)
            if refused:
                raise AddressTaken(refused)

    def _backed(self, change: Change) -> bool:
        """Whether an entry of the released holder's attachment in another pool of the network still holds the
        address (its reservation stands behind that entry: see LocalTransaction._release)."""
        previous = change.previous
        return previous is not None and any(
            key != change.key and key.network == change.key.network and key.version == change.version
            and (who := pool.allocations.get(change.ip)) is not None and who.same_attachment(previous)
            for key, pool in self.pools.items()
        )  # fmt: skip

    def pools_holding(self, network: str, container_id: str, ifname: str) -> list[PoolKey]:
        with self._lock:
            probe = Owner(container_id, ifname)
            return sorted(
                key
                for key, pool in self.pools.items()
                if key.network == network and any(o.same_attachment(probe) for o in pool.allocations.values())
            )

    def pools_of(self, network: str) -> list[PoolKey]:
        with self._lock:
            return sorted(key for key in self.pools if key.network == network)

    def pools_with_sticky(self, network: str, sticky: str) -> list[PoolKey]:
        with self._lock:
            return sorted(
                key
                for key, pool in self.pools.items()
                if key.network == network and any(o.sticky == sticky for o in pool.allocations.values())
            )

    def pool_keys(self, networks: Collection[str] = ()) -> list[PoolKey]:
        with self._lock:
            return sorted(self.pools)

    def tally(self, key: PoolKey, spans: Sequence[tuple[int, int]]) -> list[Tally]:
        with self._lock:
            return tally_allocations(key.version, self._copy(key).allocations, spans)

    def reserved(self, networks: Collection[str] = ()) -> dict[tuple[str, int, int], Owner]:
        with self._lock:
            return dict(self.reservations)

    def pods(self) -> None:
        return None

    def forget_attachment(self, network: str, owner: Owner) -> None:
        return None  # commits are atomic: nothing is ever left half-written

    def abort(self, owner: Owner) -> None:
        return None

    def check_ready(self) -> None:
        return None

    def node_slices(self) -> None:
        return None

    def reusable(self) -> bool:
        return True

    def close(self) -> None:
        return None


def _inside(reservation: tuple[str, int, int], keys: Sequence[PoolKey]) -> bool:
    network, version, ip = reservation
    for key in keys:
        net = ipaddress.ip_network(key.cidr)
        same_domain = key.network == network and net.version == version
        if same_domain and int(net.network_address) <= ip <= int(net.broadcast_address):
            return True
    return False
