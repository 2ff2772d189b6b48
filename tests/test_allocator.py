"""The pure allocator: decisions from a snapshot, no store involved."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

import pytest

from whereabouts.allocator import PoolRange, allocate, release, release_all_but
from whereabouts.holdings import index_of
from whereabouts.model import EXHAUSTED, OUTSIDE, TAKEN, Change, Owner, PoolKey, PoolState, Refusal, Snapshot
from whereabouts.ranges import parse_range

A = Owner("ctr-a", "eth0", "ns/a")
B = Owner("ctr-b", "eth0", "ns/b")


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def pool_range(spec: str, network: str = "", **kw: object) -> PoolRange:
    rng = parse_range(spec, key="range", **kw)
    return PoolRange(PoolKey(network, rng.cidr), rng)


def snapshot(
    *ranges: PoolRange, held: dict[str, Owner] | None = None, reserved: dict[str, Owner] | None = None
) -> Snapshot:
    pools = {pr.key: PoolState(pr.key, 1) for pr in ranges}
    for text, owner in (held or {}).items():
        pr = next(p for p in ranges if p.rng.contains(ipaddress.ip_address(text).version, ip(text)))
        pools[pr.key].allocations[ip(text)] = owner
    res = {}
    for text, owner in (reserved or {}).items():
        addr = ipaddress.ip_address(text)
        res[(ranges[0].key.network, addr.version, int(addr))] = owner
    return Snapshot(pools, res, index_of(pools, res) if INDEXED else None)


INDEXED = False  # the snapshots carry the index the node daemon's cache keeps (whereabouts.holdings)


@pytest.fixture(autouse=True, params=[False, True], ids=["walked", "indexed"])
def indexed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every case twice: decided from the snapshot's walk, and from its index (the same decisions)."""
    global INDEXED
    INDEXED = request.param
    yield
    INDEXED = False


def held_addresses(decision) -> list[str]:
    return [pr.rng.with_address(v) for pr, values in decision.held for v in values]


def assert_refused(decision: object, kind: str, pattern: str) -> None:
    """A refusal value (the allocator never raises for an expected outcome) of `kind`, its message matching."""
    assert isinstance(decision, Refusal), decision
    assert decision.kind == kind and re.search(pattern, decision.msg), decision


def test_lowest_free_and_change_set_carries_versions() -> None:
    pr = pool_range("10.0.0.0/24")
    decision = allocate(ranges=[pr], snapshot=snapshot(pr, held={"10.0.0.1": B}), owner=A)
    assert held_addresses(decision) == ["10.0.0.2/24"]
    assert [(c.ip, c.owner) for c in decision.changes.changes] == [(ip("10.0.0.2"), A)]
    assert decision.changes.expected == ((pr.key, 1),)


def test_existing_attachment_is_returned_without_changes() -> None:
    pr = pool_range("10.0.0.0/24")
    decision = allocate(ranges=[pr], snapshot=snapshot(pr, held={"10.0.0.7": A}), owner=A)
    assert held_addresses(decision) == ["10.0.0.7/24"]
    assert not decision.changes


def test_recreated_pod_adopts_its_old_address() -> None:
    pr = pool_range("10.0.0.0/24")
    new = Owner("ctr-new", "eth0", "ns/a")
    decision = allocate(ranges=[pr], snapshot=snapshot(pr, held={"10.0.0.1": B, "10.0.0.9": A}), owner=new)
    assert held_addresses(decision) == ["10.0.0.9/24"]
    (change,) = decision.changes.changes
    assert change.owner == new and change.previous == A


def test_pod_reuse_needs_same_interface() -> None:
    pr = pool_range("10.0.0.0/24")
    other_if = Owner("ctr-new", "net1", "ns/a")
    decision = allocate(ranges=[pr], snapshot=snapshot(pr, held={"10.0.0.9": A}), owner=other_if)
    assert held_addresses(decision) == ["10.0.0.1/24"]


def test_requested_address_is_reserved_even_in_exclude_and_outside_window() -> None:
    pr = pool_range("10.0.0.0/24", range_start="10.0.0.100", exclude=["10.0.0.5"])
    decision = allocate(ranges=[pr], snapshot=snapshot(pr), owner=A, requested=[(4, ip("10.0.0.5"))])
    assert held_addresses(decision) == ["10.0.0.5/24"]


def test_requested_taken_is_an_error_naming_address_and_holder() -> None:
    pr = pool_range("10.0.0.0/24")
    decision = allocate(
        ranges=[pr], snapshot=snapshot(pr, held={"10.0.0.5": B}), owner=A, requested=[(4, ip("10.0.0.5"))]
    )
    assert_refused(decision, TAKEN, r"10\.0\.0\.5 in range 10\.0\.0\.0/24 is already held by container ctr-b")


@pytest.mark.parametrize("address", ["10.1.0.5", "10.0.0.0", "10.0.0.255"], ids=["no-range", "network", "broadcast"])
def test_requested_outside_usable_ranges(address: str) -> None:
    pr = pool_range("10.0.0.0/24")
    decision = allocate(ranges=[pr], snapshot=snapshot(pr), owner=A, requested=[(4, ip(address))])
    assert_refused(decision, OUTSIDE, address.replace(".", r"\."))


def test_requested_in_one_range_others_allocate_automatically() -> None:
    v4, v6 = pool_range("10.0.0.0/24"), pool_range("fd00::/64")
    decision = allocate(ranges=[v4, v6], snapshot=snapshot(v4, v6), owner=A, requested=[(6, ip("fd00::77"))])
    assert held_addresses(decision) == ["10.0.0.1/24", "fd00::77/64"]


def test_overlapping_ranges_share_reservations() -> None:
    wide = pool_range("10.0.0.0/24")
    snap = snapshot(wide, reserved={"10.0.0.1": B})  # held through an overlapping range of the same network
    assert held_addresses(allocate(ranges=[wide], snapshot=snap, owner=A)) == ["10.0.0.2/24"]
    assert held_addresses(allocate(ranges=[wide], snapshot=snap, owner=A, overlapping=False)) == ["10.0.0.1/24"]


def test_two_overlapping_ranges_in_one_call_get_distinct_addresses() -> None:
    a, b = pool_range("10.0.0.0/24"), pool_range("10.0.0.0/25")
    decision = allocate(ranges=[a, b], snapshot=snapshot(a, b), owner=A)
    assert held_addresses(decision) == ["10.0.0.1/24", "10.0.0.2/25"]


def test_exhausted_range_names_range_and_attachment() -> None:
    pr = pool_range("10.0.0.0/30")
    snap = snapshot(pr, held={"10.0.0.1": B, "10.0.0.2": B})
    assert_refused(
        allocate(ranges=[pr], snapshot=snap, owner=A),
        EXHAUSTED,
        r"no free address in range 10\.0\.0\.0/30 .* for container ctr-a",
    )


def test_release_only_the_attachment() -> None:
    pr = pool_range("10.0.0.0/24")
    snap = snapshot(pr, held={"10.0.0.1": A, "10.0.0.2": B})
    assert [c.ip for c in release(keys=[pr.key], snapshot=snap, owner=A, overlapping=True).changes] == [ip("10.0.0.1")]


GC_HELD = {
    "10.0.0.1": Owner("a1", "eth0", "", "netA"),
    "10.0.0.2": Owner("a2", "eth0", "", "netA"),
    "10.0.0.3": Owner("b1", "eth0", "", "netB"),
    "10.0.0.4": Owner("go", "eth0", "ns/go"),  # no name: the Go plugin's, or written before names were recorded
}


@pytest.mark.parametrize(
    ("netconf", "keep", "released"),
    [
        ("netA", {("a1", "eth0")}, ["10.0.0.2"]),
        ("netA", set(), ["10.0.0.1", "10.0.0.2"]),  # an empty list: none of netA's is valid
        ("netB", {("a1", "eth0")}, ["10.0.0.3"]),
        ("netC", set(), []),
        ("", set(), []),  # a config without a name proves nothing its own
    ],
    ids=["netA-keeps-a1", "netA-empty-list", "netB", "other-name", "no-name"],
)
def test_gc_releases_only_its_network_configs_allocations_not_kept(
    netconf: str, keep: set[tuple[str, str]], released: list[str]
) -> None:
    pr = pool_range("10.0.0.0/24")
    snap = snapshot(pr, held=GC_HELD)
    gc = release_all_but(keys=[pr.key], snapshot=snap, netconf=netconf, keep=keep, overlapping=True)
    assert [(c.ip, c.previous) for c in gc.changes] == [(ip(text), GC_HELD[text]) for text in released]


@pytest.mark.parametrize("recorded", ["", "netB"], ids=["unnamed", "other-name"])
def test_idempotent_add_records_the_network_config_name(recorded: str) -> None:
    pr = pool_range("10.0.0.0/24")
    named = A.named("netA")
    decision = allocate(ranges=[pr], snapshot=snapshot(pr, held={"10.0.0.5": A.named(recorded)}), owner=named)
    assert held_addresses(decision) == ["10.0.0.5/24"]
    assert decision.changes.changes == (Change(pr.key, 4, ip("10.0.0.5"), named, previous=A.named(recorded)),)
    again = allocate(ranges=[pr], snapshot=snapshot(pr, held={"10.0.0.5": named}), owner=named)
    assert held_addresses(again) == ["10.0.0.5/24"] and not again.changes


def test_reservation_left_by_an_interrupted_call_is_resumed() -> None:
    pr = pool_range("10.0.0.0/24")
    snap = snapshot(pr, reserved={"10.0.0.9": A})  # reserved network-wide, pool entry never written
    decision = allocate(ranges=[pr], snapshot=snap, owner=A)
    assert held_addresses(decision) == ["10.0.0.9/24"]
    assert held_addresses(allocate(ranges=[pr], snapshot=snap, owner=B)) == ["10.0.0.1/24"]


def test_reservation_an_entry_of_another_pool_stands_behind_is_not_resumed() -> None:
    """A's entry in the old range's pool (read with the snapshot: the service reads the attachment's other
    pools before it lets a decision resume) is what the reservation backs: the widened range picks anew."""
    wide, old = pool_range("10.0.0.0/24"), pool_range("10.0.0.0/29")
    snap = snapshot(old, wide, held={"10.0.0.1": A}, reserved={"10.0.0.1": A})
    decision = allocate(ranges=[wide], snapshot=snap, owner=A)
    assert held_addresses(decision) == ["10.0.0.2/24"] and not decision.resumed
    lone = allocate(ranges=[wide], snapshot=snapshot(old, wide, reserved={"10.0.0.1": A}), owner=A)
    assert held_addresses(lone) == ["10.0.0.1/24"] and lone.resumed


def _commit(snap: Snapshot, decision) -> None:
    for change in decision.changes.changes:
        snap.pools[change.key].allocations[change.ip] = change.owner
        snap.reservations[(change.key.network, change.version, change.ip)] = change.owner
        if snap.index is not None:  # (as the service's working copy of a batch does)
            snap.index.apply(change)


def test_ranges_sharing_a_pool_get_their_own_address_again_on_a_repeated_add() -> None:
    """Two windows of one CIDR share its pool: a repeated ADD gives each range what the first gave it, once,
    instead of every address the attachment holds there for each range."""
    low = pool_range("10.0.0.0/24", exclude=["10.0.0.1-10.0.0.9"])
    high = pool_range("10.0.0.0/24", range_start="10.0.0.100")
    whole = pool_range("10.0.0.0/24")
    ranges = [high, low, whole]
    snap = snapshot(high, held={"10.0.0.10": B})
    first = allocate(ranges=ranges, snapshot=snap, owner=A)
    assert held_addresses(first) == ["10.0.0.100/24", "10.0.0.11/24", "10.0.0.1/24"]
    _commit(snap, first)
    again = allocate(ranges=ranges, snapshot=snap, owner=A)
    assert held_addresses(again) == held_addresses(first)
    assert not again.changes


def test_recreated_pod_adopts_each_shared_pool_address_for_its_own_range() -> None:
    low, high = pool_range("10.0.0.0/24"), pool_range("10.0.0.0/24", range_start="10.0.0.100")
    snap = snapshot(low)
    _commit(snap, allocate(ranges=[low, high], snapshot=snap, owner=A))
    recreated = Owner("ctr-a2", "eth0", "ns/a")
    decision = allocate(ranges=[low, high], snapshot=snap, owner=recreated)
    assert held_addresses(decision) == ["10.0.0.1/24", "10.0.0.100/24"]
    assert [(c.ip, c.previous) for c in decision.changes.changes] == [(ip("10.0.0.1"), A), (ip("10.0.0.100"), A)]


def test_a_range_added_over_a_shared_pool_gets_a_new_address() -> None:
    """The config grew a second window over the same CIDR since the first ADD: the attachment's one address
    stays with the first range, the new one gets its own."""
    low, high = pool_range("10.0.0.0/24"), pool_range("10.0.0.0/24", range_start="10.0.0.100")
    snap = snapshot(low, held={"10.0.0.1": A})
    decision = allocate(ranges=[low, high], snapshot=snap, owner=A)
    assert held_addresses(decision) == ["10.0.0.1/24", "10.0.0.100/24"]
    assert [c.ip for c in decision.changes.changes] == [ip("10.0.0.100")]


def test_requested_address_outside_every_range_lists_a_few_ranges_only() -> None:
    ranges = [pool_range(f"10.0.{i}.0/24") for i in range(50)]
    refusal = allocate(ranges=ranges, snapshot=snapshot(*ranges), owner=A, requested=[(4, ip("192.168.0.1"))])
    assert_refused(refusal, OUTSIDE, "in no configured range")
    assert "(10.0.0.0/24, 10.0.1.0/24," in refusal.msg and refusal.msg.endswith("10.0.9.0/24, ...)")


def test_a_lapsed_entry_released_in_one_pool_leaves_another_pools_entry_at_its_address_blocking_it() -> None:
    """Two overlapping ranges of one network: the /24's retained entry at .1 lapses (released on the ADD's way,
    in its working copy), while the /25 has an entry at .1 of its own with no reservation (a Go plugin's, or
    left over). The /25 must not hand .1 out: its own entry still holds it (with the index, the pool counted
    as covered by the network's reservations as it was before the release: .1 was given out)."""
    from whereabouts.allocator import lapsed
    from whereabouts.model import ChangeSet
    from whereabouts.service import _apply, _working_copy

    whole, half = pool_range("10.0.0.0/24"), pool_range("10.0.0.0/25")
    expired = Owner("old", "eth0", "ns/x", sticky="mac:aa", retained=100, expires=200)
    snap = snapshot(whole, half, reserved={"10.0.0.1": expired})
    snap.pools[whole.key].allocations[ip("10.0.0.1")] = expired
    snap.pools[half.key].allocations[ip("10.0.0.1")] = Owner("go", "eth0", "ns/go")
    if snap.index is not None:
        snap = Snapshot(snap.pools, snap.reservations, index_of(snap.pools, snap.reservations))
    freed = lapsed(keys=[half.key, whole.key], snapshot=snap, now=1000, expire_pods=True)
    working = _working_copy(snap)
    _apply(working, ChangeSet(tuple(freed), (), True))
    decision = allocate(ranges=[half, whole], snapshot=working, owner=A)
    assert held_addresses(decision) == ["10.0.0.2/25", "10.0.0.1/24"]
