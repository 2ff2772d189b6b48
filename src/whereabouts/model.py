"""Plain values shared by the allocator, the stores and the service."""

from __future__ import annotations

from whereabouts.record import field, record


@record(frozen=True)
class Owner:
    """Who holds an address: one attachment (container + interface), and the pod behind it if known."""

    container_id: str
    ifname: str
    podref: str = ""  # "<namespace>/<pod>", empty when the runtime did not say

    def same_attachment(self, other: Owner) -> bool:
        return self.container_id == other.container_id and self.ifname == other.ifname

    def same_pod_interface(self, other: Owner) -> bool:
        return bool(self.podref) and self.podref == other.podref and self.ifname == other.ifname


@record(frozen=True, order=True)
class PoolKey:
    """One pool of allocations: a range's CIDR within an allocation domain (`network_name`).

    `node` names a per-node slice of a range (Fast IPAM); empty for a whole-range pool.
    """

    network: str
    cidr: str
    node: str = ""

    @property
    def name(self) -> str:
        """The Go plugin's IPPool name: '10.0.0.0-8', 'caa5---64', '<net>-<node>-<cidr>'."""
        base = self.cidr.replace(":", "-").replace("/", "-")
        prefixes = [p for p in (self.network, self.node) if p]
        return "-".join([*prefixes, base])


@record(frozen=True)
class Address:
    """An address held in a pool: IP version plus the address as an int."""

    version: int
    value: int


@record
class PoolState:
    """A pool as read: its allocations and an opaque version token for compare-and-swap."""

    key: PoolKey
    version: object = None  # None: the pool does not exist yet
    allocations: dict[int, Owner] = field(default_factory=dict)


@record
class Snapshot:
    """What one decision is made from: the pools involved and, for overlapping ranges, the network's
    address reservations that fall inside those pools' CIDRs."""

    pools: dict[PoolKey, PoolState]
    reservations: dict[tuple[str, int, int], Owner] = field(default_factory=dict)  # (network, IP version, ip)


@record(frozen=True)
class Change:
    """Hold (`owner` set) or release (`owner` None) one address of one pool."""

    key: PoolKey
    version: int  # IP version
    ip: int
    owner: Owner | None
    previous: Owner | None = None  # who held it in the snapshot: a release only removes that holder


@record(frozen=True)
class ChangeSet:
    """What a decision writes. `expected` holds the version token of every pool read, for the CAS;
    with `overlapping`, every held or released address updates the network-wide reservation too."""

    changes: tuple[Change, ...]
    expected: tuple[tuple[PoolKey, object], ...]
    overlapping: bool

    def __bool__(self) -> bool:
        return bool(self.changes)
