"""Properties of the IPAM service on the in-memory store, for generated ranges and call sequences.

Ranges: IPv4 and IPv6, CIDR and START-END/PREFIX forms, range_start/range_end windows, excludes (CIDRs,
addresses, A-B), a gateway; several configs, some sharing a network_name (overlapping ranges in one
allocation domain), some with a network_name of their own. Calls: ADD (some requesting addresses in or out
of the ranges) and DEL of several pods' attachments, and pods recreated under a new container ID. After
every call, what the store holds and what the call answered must match a brute-force model of the rules in
DESIGN.md "Allocation rules" that walks each (small) window address by address; and, checked directly:
no address is held by two attachments of one allocation domain, every automatic pick is pickable, requested
addresses are honoured or refused with the right error, a failed ADD changes nothing, and DEL leaves the
attachment holding nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whereabouts.cni.verbs import refused as refused_error
from whereabouts.config import IPAMConfig, parse_ipam
from whereabouts.errors import AddressOutsideRanges, AddressTaken, RangeExhausted, WhereaboutsError
from whereabouts.model import EXHAUSTED, Owner, Refusal
from whereabouts.service import IPAMService
from whereabouts.store.memory import MemoryStore

BASE = {4: int(ipaddress.ip_address("10.0.0.0")), 6: int(ipaddress.ip_address("fd00::"))}
REGION = 1024  # addresses of each family the ranges, excludes and requests come from
BITS = {4: 32, 6: 128}
NETWORKS = ("", "blue")


def text(version: int, value: int) -> str:
    return str(ipaddress.ip_address(value) if version == 6 else ipaddress.IPv4Address(value))


@dataclass(frozen=True)
class RangeSpec:
    version: int
    network: int
    host_bits: int
    start: int | None  # START-END/PREFIX form
    end: int | None
    range_start: int | None
    range_end: int | None
    excludes: tuple[tuple[str, int, int], ...]  # (form, lo, hi): "cidr" (lo..hi aligned), "address", "span"

    @property
    def broadcast(self) -> int:
        return self.network + (1 << self.host_bits) - 1

    @property
    def cidr(self) -> str:
        return f"{text(self.version, self.network)}/{BITS[self.version] - self.host_bits}"

    def window(self) -> tuple[int, int]:
        """DESIGN rule 1, computed here from the generated numbers, not by the parser."""
        first, last = (self.network + 1, self.broadcast - 1) if self.host_bits >= 2 else (self.network, self.broadcast)
        if self.start is not None and self.end is not None:
            first, last = max(first, self.start), min(last, self.end)
        if self.range_start is not None:
            first = max(first, self.range_start)
        if self.range_end is not None and self.range_end >= first:  # one below the window's start is ignored,
            last = min(last, self.range_end)  # as the Go plugin ignores it
        return first, last

    def excluded(self, ip: int, gateway: tuple[int, int] | None) -> bool:
        return gateway == (self.version, ip) or any(lo <= ip <= hi for _, lo, hi in self.excludes)

    def pickable(self, ip: int, gateway: tuple[int, int] | None) -> bool:
        first, last = self.window()
        zero = self.version == 4 and ip & 0xFF == 0
        return first <= ip <= last and not self.excluded(ip, gateway) and not zero

    def contains(self, version: int, ip: int) -> bool:
        return version == self.version and self.network <= ip <= self.broadcast

    def raw(self) -> dict[str, object]:
        spec = self.cidr
        if self.start is not None and self.end is not None:
            spec = (
                f"{text(self.version, self.start)}-{text(self.version, self.end)}/{BITS[self.version] - self.host_bits}"
            )
        item: dict[str, object] = {"range": spec}
        if self.range_start is not None:
            item["range_start"] = text(self.version, self.range_start)
        if self.range_end is not None:
            item["range_end"] = text(self.version, self.range_end)
        if self.excludes:
            item["exclude"] = [_exclude_text(self.version, form, lo, hi) for form, lo, hi in self.excludes]
        return item


def _exclude_text(version: int, form: str, lo: int, hi: int) -> str:
    if form == "cidr":
        return f"{text(version, lo)}/{BITS[version] - (hi - lo + 1).bit_length() + 1}"
    if form == "address":
        return text(version, lo)
    return f"{text(version, lo)}-{text(version, hi)}"


@dataclass(frozen=True)
class ConfigSpec:
    network_name: str
    ranges: tuple[RangeSpec, ...]
    gateway: tuple[int, int] | None  # (IP version, address)
    top_level_range: bool  # the first range as the top-level `range` (with its window and excludes)

    def raw(self, overlapping: bool) -> dict[str, object]:
        items = [r.raw() for r in self.ranges]
        raw: dict[str, object] = {"type": "whereabouts", "enable_overlapping_ranges": overlapping}
        if self.top_level_range:
            raw.update(items.pop(0))
        if items:
            raw["ipRanges"] = items
        if self.network_name:
            raw["network_name"] = self.network_name
        if self.gateway:
            raw["gateway"] = text(*self.gateway)
        return raw


@st.composite
def range_specs(draw: st.DrawFn, version: int, earlier: list[RangeSpec]) -> RangeSpec:
    # /31s and /32s too, but mostly room to pick from, and often wide enough to overlap other configs' ranges
    host_bits = draw(st.integers(0, 10) | st.integers(3, 10) | st.integers(8, 10))
    size = 1 << host_bits
    network = BASE[version] + draw(st.integers(0, REGION // size - 1)) * size
    same_family = [r for r in earlier if r.version == version]
    if same_family and draw(st.booleans()):  # overlap a range drawn before: inside it, or around it
        anchor = draw(st.sampled_from(same_family))
        inside = anchor.network + draw(st.integers(0, max(0, (1 << anchor.host_bits) // size - 1))) * size
        network = inside if size <= 1 << anchor.host_bits else anchor.network - (anchor.network - BASE[version]) % size
    offset = st.integers(0, size - 1).map(lambda o: network + o)
    start = end = None
    sometimes = st.sampled_from([False, False, True])
    if draw(sometimes):
        start, end = sorted((draw(offset), draw(offset)))
    anywhere = st.integers(0, REGION - 1).map(lambda o: BASE[version] + o)
    cidr = st.integers(0, 4).flatmap(  # excludes of up to 16 addresses: they thin a range out, rarely empty it
        lambda h: (
            st.integers(0, REGION // (1 << h) - 1)
            .map(lambda i: BASE[version] + i * (1 << h))
            .map(lambda lo: ("cidr", lo, lo + (1 << h) - 1))
        )
    )
    span = st.tuples(anywhere, st.integers(0, 15)).map(
        lambda a: ("span", a[0], min(a[0] + a[1], BASE[version] + REGION - 1))
    )
    address = anywhere.map(lambda ip: ("address", ip, ip))
    return RangeSpec(
        version,
        network,
        host_bits,
        start,
        end,
        draw(offset) if draw(sometimes) else None,
        draw(offset) if draw(sometimes) else None,
        tuple(draw(st.lists(st.one_of(cidr, span, address), max_size=3))),
    )


@st.composite
def config_specs(draw: st.DrawFn, earlier: list[RangeSpec]) -> ConfigSpec:
    ranges: list[RangeSpec] = []
    for version in draw(st.lists(st.sampled_from([4, 6]), min_size=1, max_size=3)):
        spec = draw(range_specs(version, [*earlier, *ranges]))
        if all(spec.cidr != other.cidr for other in ranges):  # a config lists a CIDR once
            ranges.append(spec)
    anywhere = st.tuples(st.sampled_from([4, 6]), st.integers(0, REGION - 1)).map(lambda g: (g[0], BASE[g[0]] + g[1]))
    first_host = st.sampled_from(ranges).map(lambda r: (r.version, r.network + 1))  # the usual gateway
    gateway = draw(st.none() | first_host | first_host | anywhere)
    return ConfigSpec(draw(st.sampled_from(NETWORKS)), tuple(ranges), gateway, draw(st.booleans()))


OUTSIDE = [(4, int(ipaddress.ip_address("192.168.7.7"))), (6, int(ipaddress.ip_address("fd01::7")))]
# A requested address: ("in", which range of the pod's config, offset into its CIDR; low offsets are the
# ones other pods hold), or ("at", IP version, address) anywhere in the region or outside it.
REQUESTS = st.lists(
    st.one_of(
        st.tuples(st.just("in"), st.integers(0, 2), st.integers(0, REGION - 1)),
        st.tuples(st.just("in"), st.integers(0, 2), st.integers(1, 6)),
        st.tuples(st.just("in"), st.integers(0, 2), st.integers(1, 6)),
        st.tuples(st.just("in"), st.integers(0, 2), st.integers(1, 6)),
        st.tuples(st.sampled_from([4, 6]), st.integers(0, REGION - 1)).map(lambda v: ("at", v[0], BASE[v[0]] + v[1])),
        st.sampled_from(OUTSIDE).map(lambda v: ("at", *v)),
    ),
    max_size=2,
)


def resolved(spec: ConfigSpec, requests: tuple[tuple[str, int, int], ...]) -> list[tuple[int, int]]:
    addresses = []
    for how, a, b in requests:
        if how == "in":
            r = spec.ranges[a % len(spec.ranges)]
            addresses.append((r.version, r.network + b % (1 << r.host_bits)))
        else:
            addresses.append((a, b))
    return addresses


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[ConfigSpec], dict[str, bool], list[int], list[tuple]]:
    configs: list[ConfigSpec] = []
    for _ in range(draw(st.integers(1, 3))):
        configs.append(draw(config_specs([r for c in configs for r in c.ranges])))
    # one setting per allocation domain; mostly on, the default
    overlapping = {name: draw(st.sampled_from([True, True, False])) for name in NETWORKS}
    pods = draw(st.lists(st.integers(0, len(configs) - 1), min_size=2, max_size=5))  # pod -> its config
    op = st.one_of(
        st.tuples(st.just("add"), st.integers(0, len(pods) - 1), st.just(())),
        st.tuples(st.just("add"), st.integers(0, len(pods) - 1), REQUESTS),
        st.tuples(st.just("add"), st.integers(0, len(pods) - 1), REQUESTS),
        st.tuples(
            st.just("add-taken"),
            st.integers(0, len(pods) - 1),
            st.tuples(st.integers(0, len(pods) - 1), st.integers(0, 5)),
        ),
        st.tuples(st.just("del"), st.integers(0, len(pods) - 1), st.just(())),
        st.tuples(st.just("recreate"), st.integers(0, len(pods) - 1), st.just(())),
        st.tuples(st.just("del-old"), st.integers(0, len(pods) - 1), st.just(())),
    )
    return configs, overlapping, pods, draw(st.lists(op, min_size=1, max_size=25))


@dataclass
class Model:
    """What the store should hold: pools by (network, CIDR), and the network-wide reservations."""

    pools: dict[tuple[str, str], dict[int, Owner]] = field(default_factory=dict)
    reservations: dict[tuple[str, int, int], Owner] = field(default_factory=dict)

    def add(
        self, cfg: ConfigSpec, overlapping: bool, owner: Owner, requested: list[tuple[int, int]]
    ) -> list[tuple[int, list[int], str]] | type[WhereaboutsError]:
        """Per range: (range index, addresses, how: kept/adopted/resumed/requested/picked), or the error."""
        by_range: dict[int, list[int]] = {}
        for version, ip in requested:
            home = next((i for i, r in enumerate(cfg.ranges) if r.contains(version, ip)), None)
            if home is None:
                return AddressOutsideRanges
            r = cfg.ranges[home]
            if r.host_bits >= 2 and ip in (r.network, r.broadcast):
                return AddressOutsideRanges
            if cfg.gateway == (version, ip):  # the router's address is never handed out, requested or not
                return AddressOutsideRanges
            if ip not in by_range.setdefault(home, []):
                by_range[home].append(ip)
        planned: list[tuple[tuple[str, str], int, int, Owner | None]] = []  # (pool, version, ip, previous)
        answer = []
        for i, r in enumerate(cfg.ranges):
            key = (cfg.network_name, r.cidr)
            pool = self.pools.get(key, {})

            def planned_here(ip: int, r: RangeSpec = r, key: tuple[str, str] = key, planned: list = planned) -> bool:
                return any(
                    v == r.version and ip == p and (k == key or (overlapping and k[0] == key[0]))
                    for k, v, p, _ in planned
                )

            mine = sorted(ip for ip, who in pool.items() if who.same_attachment(owner))
            how = "kept"
            if not mine and owner.podref:
                mine, how = sorted(ip for ip, who in pool.items() if who.same_pod_interface(owner)), "adopted"
                planned += [(key, r.version, ip, pool[ip]) for ip in mine]
            if not mine and not by_range.get(i) and overlapping:
                resumable = sorted(
                    ip
                    for (network, version, ip), who in self.reservations.items()
                    if network == cfg.network_name and r.contains(version, ip) and who.same_attachment(owner)
                    if ip not in pool and not planned_here(ip)
                )
                if resumable:
                    mine, how = resumable[:1], "resumed"
                    planned.append((key, r.version, mine[0], None))
            if not mine and by_range.get(i):
                for ip in by_range[i]:
                    holder = pool.get(ip) or (self.reservations.get((key[0], r.version, ip)) if overlapping else None)
                    if not planned_here(ip) and holder is not None and not holder.same_attachment(owner):
                        return AddressTaken
                    planned.append((key, r.version, ip, None))
                mine, how = list(by_range[i]), "requested"
            if not mine:
                reserved = {ip for (n, v, ip) in self.reservations if n == key[0] and v == r.version}
                taken = set(pool) | (reserved if overlapping else set())
                first, last = r.window()
                pick = next(
                    (ip for ip in range(first, last + 1)
                     if r.pickable(ip, cfg.gateway) and ip not in taken and not planned_here(ip)),
                    None,
                )  # fmt: skip
                if pick is None:
                    return RangeExhausted
                mine, how = [pick], "picked"
                planned.append((key, r.version, pick, None))
            answer.append((i, mine, how))
        for key, version, ip, _ in planned:
            self.pools.setdefault(key, {})[ip] = owner
            if overlapping:
                self.reservations[(key[0], version, ip)] = owner
        return answer

    def held(self) -> Model:
        """The same without empty pools (the store keeps a pool it emptied)."""
        return Model({key: pool for key, pool in self.pools.items() if pool}, self.reservations)

    def delete(self, cfg: ConfigSpec, overlapping: bool, owner: Owner) -> None:
        keys = [(cfg.network_name, r.cidr) for r in cfg.ranges]
        if not any(who.same_attachment(owner) for key in keys for who in self.pools.get(key, {}).values()):
            keys = [key for key in self.pools if key[0] == cfg.network_name]  # held elsewhere: released there
        for key in keys:
            pool = self.pools.get(key, {})
            for ip, who in list(pool.items()):
                if who.same_attachment(owner):
                    del pool[ip]
                    version = 6 if ":" in key[1] else 4
                    if overlapping and self.reservations.get((key[0], version, ip)) == who:
                        del self.reservations[(key[0], version, ip)]


def store_state(store: MemoryStore) -> Model:
    pools = {(k.network, k.cidr): dict(p.allocations) for k, p in store.pools.items() if p.allocations}
    return Model(pools, dict(store.reservations))


def assert_one_holder_per_address(store: MemoryStore, overlapping: dict[str, bool]) -> None:
    """Within an allocation domain (a network_name with overlapping ranges), an address has one holder."""
    holders: dict[tuple[str, int, int], set[tuple[str, str]]] = {}
    for key, pool in store.pools.items():
        if overlapping[key.network]:
            version = 6 if ":" in key.cidr else 4
            for ip, who in pool.allocations.items():
                holders.setdefault((key.network, version, ip), set()).add((who.container_id, who.ifname))
    assert all(len(who) == 1 for who in holders.values()), holders


def owner_of(pod: int, generation: int) -> Owner:
    return Owner(f"pod{pod}-ctr{generation}", ("eth0", "net1")[pod % 2], f"ns/pod{pod}")


@pytest.mark.parametrize("indexed", [False, True], ids=["walked", "indexed"])
@settings(max_examples=250)
@given(world=worlds())
def test_service_matches_the_allocation_rules(indexed: bool, world: tuple) -> None:
    """(indexed: the snapshots carry the index the node daemon's cache keeps, whereabouts.holdings)"""
    configs, overlapping, pods, ops = world
    parsed: list[IPAMConfig] = [parse_ipam(c.raw(overlapping[c.network_name])) for c in configs]
    store, model = MemoryStore(indexed=indexed), Model()
    service = IPAMService(store)
    generation = [0] * len(pods)
    for verb, pod, requested in ops:
        spec, cfg = configs[pods[pod]], parsed[pods[pod]]
        domain_overlaps = overlapping[spec.network_name]
        if verb == "recreate":
            generation[pod] += 1
            continue
        if verb == "del-old":
            if generation[pod]:
                owner = owner_of(pod, generation[pod] - 1)
                service.delete(cfg, owner)
                model.delete(spec, domain_overlaps, owner)
                assert_holds_nothing(store, owner)
            continue
        owner = owner_of(pod, generation[pod])
        if verb == "add-taken":  # request what another pod holds (as the model says: the service is not asked)
            other, k = owner_of(requested[0], generation[requested[0]]), requested[1]
            held = sorted((key, ip) for key, pool in model.pools.items() for ip, who in pool.items() if who == other)
            chosen = [held[k % len(held)]] if held else []
            requested = tuple(("at", 6 if ":" in key[1] else 4, ip) for key, ip in chosen)
        if verb == "del":
            service.delete(cfg, owner)
            model.delete(spec, domain_overlaps, owner)
            assert_holds_nothing(store, owner)
        else:
            check_add(service, store, model, spec, cfg, owner, resolved(spec, requested), domain_overlaps)
        assert store_state(store) == model.held()
        assert_one_holder_per_address(store, overlapping)


def check_add(
    service: IPAMService,
    store: MemoryStore,
    model: Model,
    spec: ConfigSpec,
    cfg: IPAMConfig,
    owner: Owner,
    requested: list[tuple[int, int]],
    overlapping: bool,
) -> None:
    before = store_state(store)
    expected = model.add(spec, overlapping, owner, requested)
    assigned = service.add(cfg, owner, tuple(requested))
    if isinstance(assigned, Refusal):
        refused = refused_error(assigned)  # what the CNI front end makes of it
        assert type(refused) is expected, f"{type(refused).__name__}: {refused.msg}; the model says {expected}"
        assert refused.code == {AddressOutsideRanges: 103, AddressTaken: 102, RangeExhausted: 101}[expected]
        assert store_state(store) == before, "a refused ADD changed the store"
        return
    assert isinstance(expected, list), f"the model refuses with {expected.__name__}, the service gave {assigned}"
    got = [int(ipaddress.ip_interface(a.address).ip) for a in assigned]
    assert got == [ip for _, ips, _ in expected for ip in ips]
    assert [a.pool_range.rng.cidr for a in assigned] == [spec.ranges[i].cidr for i, ips, _ in expected for _ in ips]
    for i, ips, how in expected:
        r = spec.ranges[i]
        if how == "picked":  # an automatic pick: in the window, not excluded, not the gateway, not .0
            (ip,) = ips
            first, last = r.window()
            assert first <= ip <= last and not r.excluded(ip, spec.gateway)
            assert r.host_bits < 2 or ip not in (r.network, r.broadcast)
            assert r.version == 6 or ip & 0xFF
        if how == "requested":  # each requested address, in the first range whose CIDR holds it
            homes = {ip: next(j for j, s in enumerate(spec.ranges) if s.contains(v, ip)) for v, ip in requested}
            assert set(ips) == {ip for ip, home in homes.items() if home == i}


def assert_holds_nothing(store: MemoryStore, owner: Owner) -> None:
    held = [(k, ip) for k, pool in store.pools.items() for ip, who in pool.allocations.items() if who == owner]
    reserved = [r for r, who in store.reservations.items() if who.same_attachment(owner)]
    assert not held and not reserved, f"{owner} still holds {held} {reserved} after DEL"


@st.composite
def windows_of_one_cidr(draw: st.DrawFn) -> ConfigSpec:
    """Ranges that share one pool: one CIDR through several windows and excludes."""
    version = draw(st.sampled_from([4, 6]))
    base = draw(range_specs(version, []))
    ranges = [base]
    for _ in range(draw(st.integers(1, 4))):
        other = draw(range_specs(version, []))
        ranges.append(RangeSpec(version, base.network, base.host_bits, base.start, base.end, *_window_of(other, base)))
    gateway = draw(st.none() | st.just((version, base.network + 1)))
    return ConfigSpec(draw(st.sampled_from(NETWORKS)), tuple(ranges), gateway, draw(st.booleans()))


def _window_of(other: RangeSpec, base: RangeSpec) -> tuple[int | None, int | None, tuple[tuple[str, int, int], ...]]:
    """`other`'s range_start, range_end and excludes moved into `base`'s CIDR."""
    size = 1 << base.host_bits

    def moved(value: int | None) -> int | None:
        return None if value is None else base.network + (value - BASE[base.version]) % size

    return moved(other.range_start), moved(other.range_end), other.excludes


@settings(max_examples=150)
@given(cfg=windows_of_one_cidr(), pods=st.integers(1, 4), overlapping=st.booleans(), indexed=st.booleans())
def test_ranges_sharing_a_pool_answer_a_repeated_add_and_a_recreated_pod_alike(
    cfg: ConfigSpec, pods: int, overlapping: bool, indexed: bool
) -> None:
    """However many ranges read one pool, a repeated ADD returns what the first returned (and writes
    nothing), a recreated pod gets the same addresses range by range, and no address has two holders (with
    the snapshots indexed as the node daemon's are, or not)."""
    parsed = parse_ipam(cfg.raw(overlapping))
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    for pod in range(pods):
        owner = owner_of(pod, 0)
        added = service.add(parsed, owner)
        if isinstance(added, Refusal):
            assert added.kind == EXHAUSTED
            continue
        first = [a.address for a in added]
        assert len(first) == len(cfg.ranges) == len(set(first)), "one address per range, none twice"
        commits = store.commits
        assert [a.address for a in service.add(parsed, owner)] == first
        assert store.commits == commits, "a repeated ADD wrote"
        assert [a.address for a in service.add(parsed, owner_of(pod, 1))] == first
        assert_holds_nothing(store, owner)  # the recreated pod's container took everything over
        assert_one_holder_per_address(store, dict.fromkeys(NETWORKS, True))
