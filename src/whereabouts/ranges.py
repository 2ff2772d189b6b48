"""Range arithmetic: addresses as integers, a range as a canonical frozen value, the lowest free pick.

A range is parsed and validated once (`parse_range`); everything downstream trusts it. Addresses are plain
ints tagged by the range's IP version, so picking from a /8 or a /64 costs the same: the search below gallops
and bisects over counts, never walks the range.
"""

from __future__ import annotations

from bisect import bisect_right

from whereabouts.errors import InvalidConfig, shown
from whereabouts.iptext import format_address, parse_address, parse_network, unzero
from whereabouts.record import record
from whereabouts.sortedints import SortedInts

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import TypeVar

    T = TypeVar("T")

Interval = tuple[int, int]


def parse_ip(text: str) -> tuple[int, int]:
    """'10.0.0.1' -> (4, int). Raises ValueError on anything else, a zone ('fe80::1%eth0') included."""
    return parse_address(unzoned(text).strip())


def parse_net(text: str, *, strict: bool = True) -> tuple[int, int, int]:
    """iptext.parse_network of a network a config names: a zone refused (ValueError)."""
    return parse_network(unzoned(text), strict=strict)


def unzoned(text: str) -> str:
    """`text`, unless it names an IPv6 zone ('fe80::1%eth0', 'fe80::%eth0/64'): ValueError. The Go plugin's
    net.ParseIP and ParseCIDR refuse one, and an address in a result with its zone is none a runtime reads
    (`ipaddress` keeps it; dropping it silently would hand out a different text than the config's)."""
    if "%" in text:
        raise ValueError(f"{text!r} names a zone")
    return text


def format_ip(version: int, value: int) -> str:
    return format_address(version, value)


def as_go_reads(parse: Callable[[str], T], text: str, what: str, warnings: list[str] | None) -> T:
    """`parse(text)`; failing that, `parse` of the text the Go plugin reads there, leading zeros dropped
    (iptext.unzero), with a warning in `warnings` if given: a config the Go plugin took keeps working, and the
    log says how it was read. ValueError as `parse` raises it."""
    try:
        return parse(text)
    except ValueError:
        fixed = unzero(text.strip())
        if fixed is None:
            raise
        parsed = parse(fixed)
        if warnings is not None:
            warnings.append(zeros_dropped(what, text, fixed))
        return parsed


def zeros_dropped(what: str, text: str, fixed: str) -> str:
    return f"{what} {shown(text)} read as {fixed!r}: leading zeros dropped, in decimal, as the Go plugin reads it"


def sortable_key(version: int, value: int) -> str:
    """The address as fixed-width hex behind its version ('4:0a000005'): sorts numerically, so a CIDR is a
    key range in any ordered store."""
    return f"4:{value:08x}" if version == 4 else f"6:{value:032x}"


def from_sortable_key(key: str) -> tuple[int, int]:
    return int(key[0]), int(key[2:], 16)


@record(frozen=True)
class Network:
    """A CIDR as numbers: its IP version, network address and prefix length. The one place that knows a
    network's last address, its size and what it contains."""

    version: int
    address: int
    prefix: int

    @staticmethod
    def parse(text: str, *, strict: bool = True) -> Network:
        """'10.0.0.0/24' (host bits refused unless not `strict`); ValueError on anything else."""
        return Network(*parse_network(text, strict=strict))

    @property
    def bits(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def last(self) -> int:
        """Its last address (the broadcast address, for IPv4)."""
        return self.address | ((1 << (self.bits - self.prefix)) - 1)

    @property
    def size(self) -> int:
        return 1 << (self.bits - self.prefix)

    @property
    def text(self) -> str:
        return f"{format_address(self.version, self.address)}/{self.prefix}"

    def contains(self, version: int, value: int) -> bool:
        return version == self.version and self.address <= value <= self.last


def cidr_key_bounds(cidr: str) -> tuple[str, str]:
    """The sortable keys of a CIDR's first and last address."""
    net = Network.parse(cidr)
    return sortable_key(net.version, net.address), sortable_key(net.version, net.last)


def _last(version: int, network: int, prefix: int) -> int:
    return Network(version, network, prefix).last


def parse_request(text: str) -> tuple[int, int]:
    """A requested address: bare ('10.0.0.5') or with a prefix ('10.0.0.5/24'); the prefix is not used."""
    return parse_ip(text.split("/", 1)[0])


@record(frozen=True)
class IPRange:
    """One allocation range: its CIDR, the window automatic picks come from, and what they skip."""

    version: int
    network: int
    prefix: int
    first: int  # window start, inclusive
    last: int  # window end, inclusive
    excluded: tuple[Interval, ...]  # sorted, merged, clipped to the window; includes the gateway
    gateway: int | None

    @property
    def bits(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def net(self) -> Network:
        return Network(self.version, self.network, self.prefix)

    @property
    def broadcast(self) -> int:
        return self.net.last

    @property
    def cidr(self) -> str:
        return f"{format_ip(self.version, self.network)}/{self.prefix}"

    def contains(self, version: int, value: int) -> bool:
        return version == self.version and self.network <= value <= self.broadcast

    def is_edge(self, value: int) -> bool:
        """Network or broadcast address of a range wide enough to have them."""
        return self.bits - self.prefix >= 2 and value in (self.network, self.broadcast)

    def pickable(self, value: int) -> bool:
        """Whether an automatic pick may hand out `value`: in the window, not excluded (nor the gateway),
        not an IPv4 .0 address."""
        if not self.first <= value <= self.last or (self.version == 4 and not value & 0xFF):
            return False
        i = bisect_right(self.excluded, (value, 1 << 129)) - 1  # the last interval starting at or before value
        return i < 0 or self.excluded[i][1] < value

    def with_address(self, value: int) -> str:
        return f"{format_ip(self.version, value)}/{self.prefix}"

    def capacity(self) -> int:
        """How many addresses automatic picks can hand out (ignoring allocations)."""
        return sum(b - a + 1 - self._zeros_between(a, b) for a, b in self.free_segments())

    def free_segments(self) -> list[Interval]:
        """The window minus the excluded intervals, in order."""
        segments: list[Interval] = []
        start = self.first
        for lo, hi in self.excluded:
            if lo > start:
                segments.append((start, lo - 1))
            start = max(start, hi + 1)
        if start <= self.last:
            segments.append((start, self.last))
        return segments

    def _zeros_between(self, lo: int, hi: int) -> int:
        """IPv4 addresses ending in .0 within [lo, hi]: never picked automatically."""
        if self.version != 4 or hi < lo:
            return 0
        return (hi >> 8) - ((lo - 1) >> 8)  # floor division, so lo == 0 counts 0.0.0.0 too


class TakenAddresses:
    """A set of taken addresses (one IP version) answering range counts in O(log n).

    It also remembers, per window start, how far the addresses from there are all taken (or .0): a
    decision handing out the addresses of one window one after another starts each search where the last
    one ended instead of searching the taken run again.
    """

    def __init__(self, values: Iterable[int] = ()) -> None:
        unique = set(values)
        self._all = SortedInts(unique)
        self._zeros = SortedInts([v for v in unique if v & 0xFF == 0])
        self._dense: dict[tuple[int, int], int] = {}  # (IP version, lo) -> x: nothing in [lo, x) is pickable

    @classmethod
    def of_sorted(cls, values: SortedInts, zeros: SortedInts) -> TakenAddresses:
        """From sets kept sorted elsewhere (the node daemon's live holdings): `zeros` are the .0 ones of
        `values`. Taken over, not copied: the caller hands in copies."""
        taken = cls()
        taken._all, taken._zeros = values, zeros
        return taken

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, value: int) -> bool:
        return value in self._all

    def add(self, value: int) -> None:
        if self._all.add(value) and value & 0xFF == 0:
            self._zeros.add(value)

    def discard(self, value: int) -> None:
        """Take `value` out (a snapshot's view applying a release before any search: see holdings)."""
        if self._all.discard(value) and value & 0xFF == 0:
            self._zeros.discard(value)
        self._dense.clear()  # what it remembered assumed the set only grows

    def count(self, lo: int, hi: int) -> int:
        return self._all.count(lo, hi)

    def count_zeros(self, lo: int, hi: int) -> int:
        return self._zeros.count(lo, hi) if len(self._zeros) else 0

    def rank_queries(self) -> tuple[Callable[[int], int], Callable[[int], int] | None]:
        """How many taken addresses lie below a value, and how many taken .0 ones (None: there are none): the
        bound methods themselves, as the search for a free address calls them in a tight loop."""
        return self._all.rank, self._zeros.rank if len(self._zeros) else None

    def between(self, lo: int, hi: int) -> list[int]:
        return self._all.between(lo, hi)

    def pickable_from(self, version: int, lo: int) -> int:
        """Where a search for a free address from `lo` starts: nothing before it is pickable."""
        return self._dense.get((version, lo), lo)

    def note_first_pickable(self, version: int, lo: int, found: int) -> None:
        """Nothing in [lo, found) is pickable: all taken, or .0. True until a value is discarded."""
        self._dense[(version, lo)] = found


def lowest_free(rng: IPRange, taken: TakenAddresses, skip: int = 0) -> int | None:
    """The lowest pickable address of `rng` not in `taken`, or None when the window is full.

    `skip` passes over that many free addresses first (a caller that lost a race spreads out among the
    lowest few instead of fighting for the same one again); fewer free than that: the lowest.
    """
    remaining = skip
    for lo, hi in rng.free_segments():
        start = taken.pickable_from(rng.version, lo)
        if remaining:
            free = _free_between(rng, taken, start, hi)
            if free <= remaining:
                remaining -= free
                continue
        found = _nth_free(rng, taken, start, hi, remaining + 1)
        if found is not None:
            if not remaining:
                taken.note_first_pickable(rng.version, lo, found)
            return found
    return lowest_free(rng, taken) if skip else None


def _free_between(rng: IPRange, taken: TakenAddresses, lo: int, hi: int) -> int:
    """Pickable, untaken addresses in [lo, hi], a span with no excluded interval inside."""
    if hi < lo:
        return 0
    if rng.version != 4:
        return (hi - lo + 1) - taken.count(lo, hi)
    return (hi - lo + 1) - rng._zeros_between(lo, hi) - taken.count(lo, hi) + taken.count_zeros(lo, hi)


def _nth_free(rng: IPRange, taken: TakenAddresses, lo: int, hi: int, n: int) -> int | None:
    """The n-th pickable, untaken address in [lo, hi] (a span with no excluded interval inside), or None.

    Gallops out from `lo` and then bisects, as the free count over [lo, x] never decreases as x grows: the
    cost grows with the log of how far the answer lies, never with the width of the range."""
    if lo > hi:
        return None
    if n == 1 and lo not in taken and (rng.version != 4 or lo & 0xFF):
        return lo
    free = _free_from(rng, taken, lo)
    left, right, width = lo, min(hi, lo + n - 1), n
    while free(right) < n:
        if right >= hi:
            return None
        left, width = right + 1, width * 2
        right = min(hi, lo + width - 1)
    while left < right:
        mid = (left + right) // 2
        if free(mid) >= n:
            right = mid
        else:
            left = mid + 1
    return left


def _free_from(rng: IPRange, taken: TakenAddresses, lo: int) -> Callable[[int], int]:
    """x -> pickable, untaken addresses in [lo, x] (no excluded interval inside): one rank query a call."""
    rank, rank_zeros = taken.rank_queries()
    taken_before = rank(lo)
    if rng.version != 4:
        return lambda x: (x - lo + 1) - (rank(x + 1) - taken_before)
    zeros_before = (lo - 1) >> 8  # .0 addresses below lo: never pickable, so they count as not free
    if rank_zeros is None:
        return lambda x: (x - lo + 1) - ((x >> 8) - zeros_before) - (rank(x + 1) - taken_before)
    taken_zeros_before = rank_zeros(lo)

    def free(x: int) -> int:
        taken_zeros = rank_zeros(x + 1) - taken_zeros_before  # counted once, as .0, not again as taken
        return (x - lo + 1) - ((x >> 8) - zeros_before) - (rank(x + 1) - taken_before) + taken_zeros

    return free


class RangeIndex:
    """Which configured range's CIDR holds an address: the first in config order, found with one dict
    lookup per distinct prefix length instead of a test of every range."""

    def __init__(self, ranges: Sequence[IPRange]) -> None:
        self._first: dict[tuple[int, int, int], int] = {}  # (IP version, prefix, network) -> position
        for position, rng in enumerate(ranges):
            self._first.setdefault((rng.version, rng.prefix, rng.network), position)
        self._prefixes = sorted({(version, prefix) for version, prefix, _ in self._first})

    def first(self, version: int, value: int) -> int | None:
        """The position of the first range whose CIDR contains the address, or None."""
        best = None
        for ver, prefix in self._prefixes:
            if ver == version:
                host_bits = (32 if version == 4 else 128) - prefix
                position = self._first.get((version, prefix, value >> host_bits << host_bits))
                if position is not None and (best is None or position < best):
                    best = position
        return best


def parse_range(
    spec: str,
    *,
    key: str,
    range_start: str | None = None,
    range_end: str | None = None,
    exclude: Sequence[str] = (),
    gateway: str | None = None,
    warnings: list[str] | None = None,
) -> IPRange:
    """Parse `CIDR` or `START-END/PREFIX` plus its window and excludes into a canonical IPRange. What the Go
    plugin takes and reads its own way is read so, with a line in `warnings` if given: addresses with leading
    zeros, a `range_end` outside the range or below the window's start (ignored: picks run to the range's end)."""
    version, network, prefix, start, end = _range_spec_as_go_reads(spec, key, warnings)
    bits = 32 if version == 4 else 128
    broadcast = Network(version, network, prefix).last
    first, last = (network + 1, broadcast - 1) if bits - prefix >= 2 else (network, broadcast)
    first, last = max(first, start if start is not None else first), min(last, end if end is not None else last)

    def address(name: str, text: str) -> int:
        try:
            ver, value = as_go_reads(parse_ip, text, name, warnings)
        except ValueError:
            raise InvalidConfig(f"invalid {name} {shown(text)}: not an IP address") from None
        if ver != version or not (network <= value <= broadcast or name.endswith("range_end")):
            raise InvalidConfig(f"invalid {name} {shown(text)}: not inside range {shown(spec)}")
        return value

    first = max(first, address(f"{key} range_start", range_start)) if range_start else first
    if range_end:
        window_end = address(f"{key} range_end", range_end)
        if window_end < first or window_end > broadcast:  # the Go plugin ignores one outside [first, last usable]
            where = (
                "below the window's start"
                if window_end < first
                else f"past range {format_ip(version, network)}/{prefix}"
            )
            if warnings is not None:
                warnings.append(f"{key} range_end {shown(range_end)} lies {where}: ignored, as the Go plugin "
                                f"ignores it; automatic picks run to {format_ip(version, last)}")  # fmt: skip
        else:
            last = min(last, window_end)

    intervals = [_parse_exclude(item, key, warnings) for item in exclude]
    gw = None
    if gateway:
        gw_version, gw = parse_ip(gateway)
        if gw_version != version:
            gw = None
        else:
            intervals.append((version, gw, gw))
    clipped = [(max(lo, first), min(hi, last)) for ver, lo, hi in intervals if ver == version]
    excluded = _merge([(lo, hi) for lo, hi in clipped if lo <= hi])
    return IPRange(version, network, prefix, first, last, tuple(excluded), gw)


def _range_spec_as_go_reads(
    spec: str, key: str, warnings: list[str] | None
) -> tuple[int, int, int, int | None, int | None]:
    try:
        return _parse_range_spec(spec, key)
    except InvalidConfig as refused:
        fixed = unzero(spec.strip()) if isinstance(spec, str) else None
        if fixed is None:
            raise
        try:
            parsed = _parse_range_spec(fixed, key)
        except InvalidConfig:
            raise refused from None  # naming the range as written
        if warnings is not None:
            warnings.append(zeros_dropped(key, spec, fixed))
        return parsed


def _parse_range_spec(spec: str, key: str) -> tuple[int, int, int, int | None, int | None]:
    if not isinstance(spec, str) or "/" not in spec:
        raise InvalidConfig(f"invalid {key} {shown(spec)}: expected a CIDR or START-END/PREFIX")
    body, _, prefix_text = spec.strip().rpartition("/")
    start_text, dash, end_text = body.partition("-")  # addresses hold no '-', so it splits START-END
    try:
        version, network, prefix = parse_net(f"{start_text}/{prefix_text}", strict=False)
        start = parse_ip(start_text)[1] if dash else None
        end_version, end = parse_ip(end_text) if dash else (version, None)
        if end_version != version:
            raise ValueError("START and END of different IP versions")
    except ValueError:
        raise InvalidConfig(f"invalid {key} {shown(spec)}: expected a CIDR or START-END/PREFIX") from None
    if dash and (end is None or not network <= end <= _last(version, network, prefix)):
        raise InvalidConfig(f"invalid {key} {shown(spec)}: range end outside {format_ip(version, network)}/{prefix}")
    if start is not None and end is not None and end < start:
        raise InvalidConfig(f"invalid {key} {shown(spec)}: range end before range start")
    return version, network, prefix, start, end


def _parse_exclude(item: str, key: str, warnings: list[str] | None = None) -> tuple[int, int, int]:
    """An exclude entry: CIDR, bare address or 'A-B' (inclusive) -> (version, lo, hi)."""
    try:
        if not isinstance(item, str):
            raise ValueError
        return as_go_reads(_exclude_span, item, f"{key} exclude", warnings)
    except ValueError:
        raise InvalidConfig(f"invalid {key} exclude {shown(item)}: expected a CIDR, an address or A-B") from None


def _exclude_span(item: str) -> tuple[int, int, int]:
    """ValueError unless `item` is a CIDR, an address or 'A-B'."""
    if "/" in item:
        version, network, prefix = parse_net(item.strip(), strict=False)
        return version, network, _last(version, network, prefix)
    if "-" in item:
        lo_text, _, hi_text = item.partition("-")
        lo_ver, lo = parse_ip(lo_text)
        hi_ver, hi = parse_ip(hi_text)
        if lo_ver != hi_ver or hi < lo:
            raise ValueError(f"{item!r} is not an address span")
        return lo_ver, lo, hi
    ver, value = parse_ip(item)
    return ver, value, value


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged
