"""Node slices (Fast IPAM), decided without I/O: a network's range cut into equal slices, one per node.

    Geometry      a range and a slice prefix. Slice i is the range's network address + i * slice size:
                  slices are computed by index, never enumerated, so a /64 cut into /112 slices (2^48 of
                  them) costs what a /24 cut into /26 slices does.
    plan_slices   the current assignments, the cluster's nodes and the addresses node pools still hold
                  -> the new assignment listing, and what changed.

The rules, in order:
1. A node keeps its slice while it exists and the slice is one of this geometry's (a range that grows
   around it, or an unchanged one, keeps every assignment).
2. A node without a valid slice (a joining node, or one whose slice a re-slice made invalid) gets, first,
   the slice holding the most addresses its own pools still hold; else the lowest slice overlapping its
   old one; else the lowest free slice.
3. A slice holding an address that a pool of another node still holds is never handed out (the
   evidence outlives the assignment: a node that left, or a slice of an older geometry, blocks those
   addresses until its pool is empty). No node ever gets an address in use on another node.
4. Nodes that left lose their slice. Nodes left without one (every slice taken or blocked) are reported.

The listing (the NodeSlicePool's status) names every slice when there are at most LISTED_SLICES of them, as
the Go controller does; a bigger geometry lists the lowest LISTED_SLICES plus every assigned slice beyond
them (the Go controller lists all, and a /8 in /24 slices already makes an object etcd refuses).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

from whereabouts.iptext import format_address, parse_network
from whereabouts.model import PoolKey
from whereabouts.ranges import Network
from whereabouts.record import record

LISTED_SLICES = 1024
Listing = tuple[tuple[str, str], ...]  # (nodeName, sliceRange) in address order; "" = free


def parse_slice_size(text: str, bits: int) -> int:
    """'/24' or '24' -> 24 (the Go plugin takes both). ValueError unless a prefix length of `bits`."""
    body = text.strip().removeprefix("/")
    if not body or not all(c in "0123456789" for c in body) or int(body) > bits:
        raise ValueError(f"invalid slice size {text!r}: expected a prefix length such as /24")
    return int(body)


@record(frozen=True)
class Geometry:
    """A range cut into slices of one prefix length."""

    version: int
    network: int
    prefix: int
    slice_prefix: int

    @property
    def bits(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def total(self) -> int:
        return 1 << (self.slice_prefix - self.prefix)

    @property
    def last(self) -> int:
        """The range's last address."""
        return Network(self.version, self.network, self.prefix).last

    @property
    def range_cidr(self) -> str:
        return f"{format_address(self.version, self.network)}/{self.prefix}"

    def cidr(self, index: int) -> str:
        return f"{format_address(self.version, self.first(index))}/{self.slice_prefix}"

    def first(self, index: int) -> int:
        return self.network + (index << (self.bits - self.slice_prefix))

    def index_of_ip(self, ip: int) -> int | None:
        index = (ip - self.network) >> (self.bits - self.slice_prefix)
        return index if ip >= self.network and index < self.total else None

    def index_of_slice(self, cidr: str) -> int | None:
        """The index of `cidr` if it is exactly one of this geometry's slices."""
        parsed = _parse(cidr)
        if parsed is None or parsed[0] != self.version or parsed[2] != self.slice_prefix:
            return None
        return self.index_of_ip(parsed[1])

    def overlapping(self, cidr: str) -> range:
        """Indices of the slices overlapping `cidr` (a slice of another geometry), lazily."""
        parsed = _parse(cidr)
        if parsed is None or parsed[0] != self.version:
            return range(0)
        _, network, prefix = parsed
        lo = max(network, self.network)
        hi = min(Network(self.version, network, prefix).last, self.last)
        shift = self.bits - self.slice_prefix
        return range((lo - self.network) >> shift, ((hi - self.network) >> shift) + 1) if lo <= hi else range(0)


def geometry(range_cidr: str, slice_size: str) -> Geometry:
    """ValueError unless `range_cidr` parses and `slice_size` is no wider than it."""
    version, network, prefix = parse_network(range_cidr, strict=False)
    slice_prefix = parse_slice_size(slice_size, 32 if version == 4 else 128)
    if slice_prefix < prefix:
        raise ValueError(f"invalid slice size {slice_size!r}: wider than the range {range_cidr}")
    return Geometry(version, network, prefix, slice_prefix)


def _parse(cidr: str) -> tuple[int, int, int] | None:
    try:
        return parse_network(cidr, strict=False)
    except (ValueError, AttributeError):
        return None


@record(frozen=True)
class SlicePlan:
    listing: Listing
    assigned: tuple[tuple[str, str], ...]  # (node, slice) given this pass
    freed: tuple[tuple[str, str], ...]  # (node, slice) taken back: the node left, or a re-slice moved it
    unplaced: tuple[str, ...]  # nodes left without a slice: none free
    total: int
    free: int  # slices a joining node could be given now

    def slice_of(self, node: str) -> str:
        return next((cidr for holder, cidr in self.listing if holder == node), "")


def plan_slices(
    geo: Geometry, current: Sequence[tuple[str, str]], nodes: Iterable[str], in_use: Mapping[str, Sequence[int]]
) -> SlicePlan:
    """The new listing from the current one (any geometry), the nodes, and the addresses (of this IP
    version) that each node's pools hold."""
    present = set(nodes)
    owners = _kept(geo, current, present)
    blocked = _evidence(geo, in_use)
    placed = set(owners.values())
    previous = {node: cidr for node, cidr in current if node in present and node not in placed}
    waiting = sorted(present - placed, key=lambda node: (node not in previous, node))
    # Preferences are served stage by stage over every waiting node, so that no node takes, as its
    # fallback, the slice another node would have had by preference.
    for stage in (_by_evidence, _by_overlap, _lowest):
        for node in list(waiting):
            candidates = stage(geo, in_use.get(node, ()), previous.get(node, ""))
            index = next((i for i in candidates if _usable(i, node, owners, blocked)), None)
            if index is not None:
                owners[index] = node
                waiting.remove(node)
    return _plan(geo, current, owners, blocked, tuple(waiting))


def _kept(geo: Geometry, current: Sequence[tuple[str, str]], present: set[str]) -> dict[int, str]:
    owners: dict[int, str] = {}
    seen: set[str] = set()
    for node, cidr in current:
        index = geo.index_of_slice(cidr) if node in present and node not in seen else None
        if index is not None and index not in owners:
            owners[index] = node
            seen.add(node)
    return owners


def _evidence(geo: Geometry, in_use: Mapping[str, Sequence[int]]) -> dict[int, set[str]]:
    """Slice index -> the nodes whose pools hold an address there."""
    blocked: dict[int, set[str]] = {}
    for node, ips in in_use.items():
        for ip in ips:
            index = geo.index_of_ip(ip)
            if index is not None:
                blocked.setdefault(index, set()).add(node)
    return blocked


def _usable(index: int, node: str, owners: dict[int, str], blocked: dict[int, set[str]]) -> bool:
    return index not in owners and not blocked.get(index, set()) - {node}


# Candidate streams, lazily: each is read up to its first usable index, and the unusable ones number at most
# len(owners) + len(blocked), so even a geometry of 2^48 slices is never walked.


def _by_evidence(geo: Geometry, mine: Sequence[int], old: str) -> Iterator[int]:
    """The slices holding the node's own addresses, the most first."""
    held = Counter(i for i in map(geo.index_of_ip, mine) if i is not None)
    return (i for i, _ in sorted(held.items(), key=lambda item: (-item[1], item[0])))


def _by_overlap(geo: Geometry, mine: Sequence[int], old: str) -> Iterator[int]:
    """The slices overlapping the node's slice of the previous geometry."""
    return iter(geo.overlapping(old) if old else ())


def _lowest(geo: Geometry, mine: Sequence[int], old: str) -> Iterator[int]:
    return iter(range(geo.total))


def _plan(
    geo: Geometry,
    current: Sequence[tuple[str, str]],
    owners: dict[int, str],
    blocked: dict[int, set[str]],
    unplaced: tuple[str, ...],
) -> SlicePlan:
    indices = sorted(set(range(min(geo.total, LISTED_SLICES))) | set(owners))
    listing = tuple((owners.get(i, ""), geo.cidr(i)) for i in indices)
    before = {(node, cidr) for node, cidr in current if node}
    after = {(node, cidr) for node, cidr in listing if node}
    unusable = len(owners) + sum(1 for i in blocked if i not in owners)
    return SlicePlan(
        listing=listing,
        assigned=tuple(sorted(after - before)),
        freed=tuple(sorted(before - after)),
        unplaced=unplaced,
        total=geo.total,
        free=geo.total - unusable,
    )


def pool_node(name: str, cidr: str, network: str) -> str:
    """The node of a node-slice IPPool named `[<network>-]<node>-<cidr>` (the Go plugin's scheme, see
    PoolKey.name); "" when `name` is not of that form (a whole-range pool, another network's)."""
    head, tail = f"{network}-" if network else "", "-" + PoolKey("", cidr).name
    if not name.startswith(head) or not name.endswith(tail) or len(name) <= len(head) + len(tail):
        return ""
    return name[len(head) : len(name) - len(tail)]
