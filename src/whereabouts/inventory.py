"""What the operator's tools (whereabouts.tools) read from a store beyond what a CNI call needs: every pool,
counts of a pool's entries over spans of addresses, and every network-wide reservation.

The stores implement `Inventory` beside `storage.Store`; the IPAM service never uses it. Counting is the
store's job so that a pool of a million entries is counted where it lives (SQLite counts an index range)
rather than read whole: `kubectl whereabouts pools` answers in well under 2 s for a /8 that full.
"""

from __future__ import annotations

from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from typing import Protocol

    from whereabouts.model import Owner, PoolKey

    class Inventory(Protocol):
        def pool_keys(self, networks: Collection[str] = ()) -> list[PoolKey]:
            """Every pool the store holds (etcd: those holding an entry; the others list empty ones too).
            `networks`: network names the caller knows of, which Kubernetes needs to tell a network's
            prefix from a node's in a pool's name ('blue-10.0.0.0-24'); the other stores ignore them."""
            ...

        def tally(self, key: PoolKey, spans: Sequence[tuple[int, int]]) -> list[Tally]:
            """For each span [lo, hi] of addresses (the pool's IP version): its entries counted."""
            ...

        def reserved(self, networks: Collection[str] = ()) -> dict[tuple[str, int, int], Owner]:
            """Every network-wide reservation, (network, IP version, address) -> holder (Kubernetes: those
            whose name it can read, with `networks` as for pool_keys)."""
            ...


@record(frozen=True)
class Tally:
    """A span's entries: all of them, the retained ones (sticky, no attachment's), and the IPv4 ones on an
    address ending in .0 (inside a pickable span they are held but were never pickable: not taken from
    the free count)."""

    entries: int = 0
    retained: int = 0
    dot_zero: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.entries + other.entries, self.retained + other.retained, self.dot_zero + other.dot_zero)


def tally_allocations(version: int, allocations: Mapping[int, Owner], spans: Sequence[tuple[int, int]]) -> list[Tally]:
    """Tally a pool read whole (the stores that cannot count where the entries live)."""
    from bisect import bisect_left, bisect_right

    ips = sorted(allocations)
    counted = []
    for lo, hi in spans:
        inside = ips[bisect_left(ips, lo) : bisect_right(ips, hi)]
        retained = sum(1 for ip in inside if allocations[ip].retained)
        zeros = sum(1 for ip in inside if not ip & 0xFF) if version == 4 else 0
        counted.append(Tally(len(inside), retained, zeros))
    return counted
