"""Plain values shared by the allocator, the stores and the service."""

from __future__ import annotations

from whereabouts.iptext import format_address, parse_network
from whereabouts.record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from whereabouts.holdings import HoldingsView


@record(frozen=True)
class Owner:
    """Who holds an address: one attachment (container + interface), the pod behind it if known, and the
    network config `name` the address was allocated under.

    `netconf` is what lets a CNI GC (which speaks for one network config) tell its own allocations from
    those of other network configs sharing the range. It is recorded with pool entries only, never with
    overlapping-range reservations; empty means unknown (written by the Go plugin, or by this plugin before
    it recorded names), and such an entry is never collected by GC.

    Sticky addresses (see docs/sticky.md): `sticky` is the key the address sticks to ("pod:<ns>/<name>/<if>",
    "mac:<mac>", "claim:<ns>/<claim>"; "" for none). After the attachment's DEL the entry stays, `retained`
    (the DEL's time, epoch seconds; 0 while an attachment holds it), until `expires` (epoch seconds; 0: only
    when its owner is proven gone). `controller` is the pod's controlling owner ("<apiVersion>/<Kind>/<name>/
    <uid>", Kubernetes only): its deletion proves a pod key gone. `fixed`: the config reserves the address for
    this key (`reservations`). `node` is where the attachment was made (for operators; "" when unknown).
    """

    container_id: str
    ifname: str
    podref: str = ""  # "<namespace>/<pod>", empty when the runtime did not say
    netconf: str = ""
    sticky: str = ""
    retained: int = 0
    expires: int = 0
    controller: str = ""
    fixed: bool = False
    node: str = ""

    def same_attachment(self, other: Owner) -> bool:
        return self.container_id == other.container_id and self.ifname == other.ifname

    def held_by(self, other: Owner) -> bool:
        """Held by `other`'s attachment now: a retained entry is no attachment's any more (its DEL is done;
        a second DEL or a GC must not release it, a CHECK must not find it)."""
        return not self.retained and self.same_attachment(other)

    def same_holder(self, other: Owner | None) -> bool:
        """The same attachment and pod, whatever network config name either records: how a reservation
        (which records none) is matched with the pool entry it backs."""
        return other is not None and self.same_attachment(other) and self.podref == other.podref

    def recorded_in(self, record: Owner | None) -> bool:
        """Whether the reservation `record` names this attachment: the same container and interface; or, written
        by a Go plugin that records less, as far as it says: v0.7 and later write no container ID (the same pod
        and interface), 0.5 and earlier no interface (the same container), and with neither, the same pod. Never
        one that names another container or another interface."""
        if record is None or record.ifname not in (self.ifname, ""):
            return False
        if record.container_id:
            return record.container_id == self.container_id
        return bool(record.podref) and record.podref == self.podref

    def named(self, netconf: str) -> Owner:
        """This holder as recorded under network config `netconf` ("": as a reservation records it)."""
        return self if netconf == self.netconf else self.but(netconf=netconf)

    def but(self, **changes: object) -> Owner:
        """A copy with some fields changed (records have no dataclasses.replace)."""
        values = {name: getattr(self, name) for name in OWNER_FIELDS}
        values.update(changes)
        return Owner(**values)

    def same_pod_interface(self, other: Owner) -> bool:
        return bool(self.podref) and self.podref == other.podref and self.ifname == other.ifname

    @property
    def state(self) -> str:
        """As operators see it: 'retained' after the DEL, 'reserved' for a fixed reservation, else 'held'."""
        return "retained" if self.retained else "reserved" if self.fixed else "held"

    @property
    def sticky_kind(self) -> str:
        """'pod', 'mac', 'claim', or '' for an address that sticks to nothing."""
        return self.sticky.partition(":")[0] if self.sticky else ""


OWNER_FIELDS = ("container_id", "ifname", "podref", "netconf", "sticky", "retained", "expires", "controller",
                "fixed", "node")  # fmt: skip


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

    @property
    def version(self) -> int:
        """The IP version of its CIDR (parsed, not guessed from the text)."""
        return parse_network(self.cidr, strict=False)[0]


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
    # A store that keeps its holders indexed (the node daemon's cache) answers a decision's lookups without
    # a walk over every address (whereabouts.holdings); None: the decision indexes the snapshot itself.
    index: HoldingsView | None = None


@record(frozen=True)
class Change:
    """Hold (`owner` set) or release (`owner` None) one address of one pool."""

    key: PoolKey
    version: int  # IP version
    ip: int
    owner: Owner | None
    previous: Owner | None = None  # who held it in the snapshot: a release only removes that holder


def overwrite_refused(change: Change, recorded: Owner | None) -> str:
    """Why the hold `change` must not be written over `recorded`, the record found at its address ("" when it
    may: nothing there, the same attachment's, or the holder its decision replaces, `previous`). A store
    refuses it rather than let its own guard (a revision read unchanged, an upsert) write over anyone else's."""
    owner, previous = change.owner, change.previous
    if owner is None or recorded is None or recorded.same_attachment(owner):
        return ""
    if previous is not None and recorded.same_attachment(previous):
        return ""
    return (f"address {format_address(change.version, change.ip)} of pool {change.key.name} is held by container "
            f"{recorded.container_id} interface {recorded.ifname}: not written over for container "
            f"{owner.container_id} interface {owner.ifname}")  # fmt: skip


@record(frozen=True)
class ChangeSet:
    """What a decision writes. `expected` holds the version token of every pool read, for the CAS;
    with `overlapping`, every held or released address updates the network-wide reservation too."""

    changes: tuple[Change, ...]
    expected: tuple[tuple[PoolKey, object], ...]
    overlapping: bool

    def __bool__(self) -> bool:
        return bool(self.changes)


@record(frozen=True)
class SlicePool:
    """A network's node slices as listed (Fast IPAM): the range and slice size it slices, and for each
    slice the node holding it ("" when free). `where` names it in messages."""

    range: str
    slice_size: str
    listing: tuple[tuple[str, str], ...]  # (node, slice CIDR)
    where: str


@record(frozen=True)
class Refusal:
    """What a decision answers when it cannot give the attachment what it asked for: an expected outcome,
    not a failure of anything (those are exceptions: an unreachable store is TryAgainLater). Only the CNI
    front end turns one into an error, by its `kind`."""

    kind: str  # one of the kinds below
    msg: str  # names the range, the address and the attachments involved


EXHAUSTED = "exhausted"  # no free address left in a range
TAKEN = "taken"  # a requested address is held by another attachment
OUTSIDE = "outside"  # a requested address lies in no configured range (or not in this node's slice)
GONE = "gone"  # CHECK: an address the attachment held is gone
ABANDONED = "abandoned"  # ADD: its caller hung up (or its deadline passed) before the commit: nothing committed


@record(frozen=True)
class PodFacts:
    """What sticky addresses need to know of a pod (Kubernetes store): its controlling owner as
    "<apiVersion>/<Kind>/<name>/<uid>" ("" for none) and its network-selection annotation's text."""

    controller: str = ""
    networks: str = ""
