"""The holdings the node daemon files each reservation change in (whereabouts.holdings): after any sequence of
changes they answer as a filing made afresh from what is held, keep nothing for what is gone (a daemon runs
for months), and a snapshot's view answers from the snapshot, not from what changed since."""

from __future__ import annotations

import copy
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from whereabouts.holdings import Holdings, PoolEntries, PoolSources
from whereabouts.model import Change, Owner, PoolKey

NETWORKS = ("", "blue")
SUBNETS = ((4, 0x0A000000, 28), (4, 0x0A000000, 29), (6, 0xFD << 120, 124))
OWNERS = st.builds(
    Owner,
    container_id=st.sampled_from(["c1", "c2", "c3"]),
    ifname=st.sampled_from(["eth0", "net1"]),
    podref=st.sampled_from(["", "ns/a", "ns/b"]),
    netconf=st.sampled_from(["", "netA"]),
    sticky=st.sampled_from(["", "pod:ns/a/eth0", "mac:aa"]),
    retained=st.sampled_from([0, 0, 1_000]),
)
ADDRESSES = st.tuples(
    st.sampled_from(NETWORKS), st.just(4), st.integers(0x0A000000 - 1, 0x0A000000 + 17) | st.just(0x0A000100)
) | st.tuples(st.sampled_from(NETWORKS), st.just(6), st.integers(0xFD << 120, (0xFD << 120) + 16))
CHANGES = st.lists(
    st.tuples(ADDRESSES, st.none() | st.tuples(OWNERS, st.none() | st.sampled_from(SUBNETS))), max_size=60
)


def filing(holdings: Holdings) -> dict[str, object]:
    """Everything the holdings keep, in plain values."""
    return {
        "reserved": holdings.reserved,
        "sorted": {
            where: (v.between(-1, 1 << 129), z.between(-1, 1 << 129)) for where, (v, z) in holdings.sorted.items()
        },
        "sets": holdings.sets,
        "attachments": holdings.attachments,
        "filed": holdings.filed,
        "pools": {
            where: (p.entries, p.attachments, p.sticky, p.pods, p.bare, p.retained)
            for where, p in holdings.pools.items()
        },
    }


@settings(max_examples=150)
@given(changes=CHANGES)
def test_any_sequence_of_changes_files_as_a_fresh_filing_and_keeps_nothing_of_what_went(changes: list) -> None:
    holdings, held = Holdings(), {}
    for address, put in changes:
        if put is None:
            holdings.drop(address)
            held.pop(address, None)
        else:
            holdings.put(address, *put)
            held[address] = put
    fresh = Holdings()
    for address, (owner, subnet) in held.items():
        fresh.put(address, owner, subnet)
    assert filing(holdings) == filing(fresh)
    for network in NETWORKS:
        assert holdings.holders([network]) == {a: o for a, (o, _) in held.items() if a[0] == network}
    for address in held:
        holdings.drop(address)
    assert filing(holdings) == filing(Holdings())  # every key of every index gone with the last holder


def test_a_view_answers_from_its_snapshot_and_its_own_applied_changes() -> None:
    """What came since the snapshot is not in its answers, what went since is no longer a candidate, and a
    working copy's changes (a batch) reach the view of that copy only."""
    lock, holdings = threading.Lock(), Holdings()
    subnet = (4, 0x0A000000, 28)
    key = PoolKey("", "10.0.0.0/28")
    a, b = Owner("c1", "eth0", "ns/a", sticky="pod:ns/a/eth0"), Owner("c2", "eth0", "ns/b")
    holdings.put(("", 4, 0x0A000001), a, subnet)
    holdings.put(("", 4, 0x0A000002), b, subnet)
    with lock:
        view = holdings.view(lock, [""], {key: PoolSources("", subnet, None, True)})
    allocations = {0x0A000001: a, 0x0A000002: b}  # the snapshot's pool
    holdings.put(("", 4, 0x0A000003), a.but(container_id="c9"), subnet)  # another container of a's key, since
    assert view.concerning(key, a, allocations) == {0x0A000001: a}
    assert view.taken("", 4).between(0, 1 << 32) == [0x0A000001, 0x0A000002]  # as the snapshot was
    batch = view.fork()
    batch.apply(Change(key, 4, 0x0A000005, a))
    batch.apply(Change(key, 4, 0x0A000002, None, previous=b))
    assert batch.taken("", 4).between(0, 1 << 32) == [0x0A000001, 0x0A000005]
    assert view.taken("", 4).between(0, 1 << 32) == [0x0A000001, 0x0A000002]  # the original's, untouched
    working = {0x0A000001: a, 0x0A000005: a}  # the batch's working copy of the pool
    assert batch.concerning(key, a, working) == working
    holdings.drop(("", 4, 0x0A000001))  # a's address released since: as if the snapshot were that much newer
    assert view.concerning(key, a, allocations) == {}
    assert view.attachment_holds("", 4, b, {("", 4, 0x0A000002): b}) == [0x0A000002]


def test_a_range_label_no_address_has_files_nothing_and_raises_nothing() -> None:
    """subnet_40 on an IPv4 address is no range: read as none (before: a negative shift count when filed)."""
    from whereabouts.kube.resources import reservation_subnet

    assert reservation_subnet({"subnet_40": "10.0.0.0"}) is None
    assert reservation_subnet({"subnet_24": "10.0.0.0"}) == (4, 0x0A000000, 24)
    holdings = Holdings()
    holdings.put(("", 4, 0x0A000001), Owner("c1", "eth0"), (4, 0x0A000000, 40))
    assert holdings.pools == {} and holdings.holders([""]) == {("", 4, 0x0A000001): Owner("c1", "eth0")}


def entries_filing(entries: PoolEntries) -> tuple[object, ...]:
    return (entries.entries, entries.attachments, entries.sticky, entries.pods, entries.bare, entries.retained)


POOL_IPS = st.integers(0, 20)


@settings(max_examples=200)
@given(
    start=st.dictionaries(POOL_IPS, OWNERS, max_size=15),
    changes=st.dictionaries(POOL_IPS, st.none() | OWNERS, max_size=10),
)
def test_entries_evolved_by_changes_file_as_made_afresh_and_leave_the_old_ones_as_they_were(
    start: dict[int, Owner], changes: dict[int, Owner | None]
) -> None:
    """The daemon files each new version of an IPPool from the last one (PoolEntries.evolved) while snapshots
    may still read the last: the new filing is the one made afresh from the entries changed, the last one is
    untouched (the sets the changes touch are copied, not shared)."""
    old = PoolEntries(start)
    before = copy.deepcopy(entries_filing(old))
    new = old.evolved(changes)
    after = dict(start)
    for ip, owner in changes.items():
        if owner is None:
            after.pop(ip, None)
        else:
            after[ip] = owner
    assert entries_filing(new) == entries_filing(PoolEntries(after))
    assert entries_filing(old) == before
