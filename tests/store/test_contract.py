"""One contract, every backend: what the IPAM service relies on from a store.

Every store (memory, local, etcd, kubernetes) must: never let two holders have one address; make a commit
whose decision someone else's write to the same address invalidated lose and write nothing; and release
only the holder the decision saw. They keep it in different ways, and where that shows, the test says so:

- local (SQLite) holds the file's write lock from the read to the commit: nobody can write in between (another
  caller is refused, or waits), so its commits never lose.
- memory compares the version of every pool read: any write into the pool meanwhile makes the commit lose.
- etcd and kubernetes guard each address they write (an etcd revision per key, a JSON patch `test` per pool
  entry): a write meanwhile to *another* address of the same pool does not make the commit lose.
- kubernetes reads no reservations with a snapshot: it knows those it wrote, and learns all of them once it
  lost an address to one it did not know (a reservation is found at commit time, where creating it fails).
  Its pool names (the Go plugin's) cannot tell network "blue"'s pool from a node slice "blue" of the default
  network, and a release whose guard fails reports a lost commit where the others commit nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_backends import BACKENDS, Backend, Stored, open_backend

from whereabouts.errors import TryAgainLater
from whereabouts.model import Change, ChangeSet, Owner, PoolKey, Snapshot
from whereabouts.storage import Store
from whereabouts.store.memory import MemoryStore

KEY = PoolKey("", "10.0.0.0/24")
NET_KEY = PoolKey("blue", "10.0.0.0/24")
V6_KEY = PoolKey("", "fd00::/64")
OTHER_KEY = PoolKey("", "10.1.0.0/16")
A = Owner("ctr-a", "eth0", "ns/a")
A2 = Owner("ctr-a2", "eth0", "ns/a")  # pod ns/a recreated: a new container
B = Owner("ctr-b", "net1", "")
C = Owner("ctr-c", "eth0", "ns/c")
PER_ADDRESS = {"etcd", "kubernetes"}  # stores whose commits guard each address, not the whole pool


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, tmp_path, [KEY, NET_KEY, V6_KEY, OTHER_KEY]) as opened:
        yield opened


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


def change(key: PoolKey, text: str, owner: Owner | None, previous: Owner | None = None) -> Change:
    addr = ipaddress.ip_address(text)
    return Change(key, addr.version, int(addr), owner, previous)


def commit(store: Store, *changes: Change, overlapping: bool = True) -> bool:
    """Read the pools of `changes`, then commit them as decided from that read."""
    keys = list(dict.fromkeys(c.key for c in changes))
    with store.transaction(keys, overlapping=overlapping) as txn:
        expected = tuple((key, txn.snapshot.pools[key].version) for key in keys)
        return txn.commit(ChangeSet(changes, expected, overlapping))


def hold(store: Store, key: PoolKey, text: str, owner: Owner, *, overlapping: bool = True) -> bool:
    return commit(store, change(key, text, owner), overlapping=overlapping)


def release(store: Store, key: PoolKey, text: str, previous: Owner) -> bool:
    return commit(store, change(key, text, None, previous))


def read(store: Store, key: PoolKey, *, overlapping: bool = True) -> Snapshot:
    with store.transaction([key], overlapping=overlapping) as txn:
        return txn.snapshot


def test_empty_pool_reads_as_missing(store: Store) -> None:
    snap = read(store, KEY)
    assert snap.pools[KEY].version is None and snap.pools[KEY].allocations == {}


def test_hold_then_read_back_with_new_version(backend: Backend) -> None:
    assert hold(backend.store, KEY, "10.0.0.1", A)
    assert hold(backend.store, V6_KEY, "fd00::1", B)
    snap = read(backend.store, KEY)
    assert snap.pools[KEY].allocations == {ip("10.0.0.1"): A}
    assert snap.pools[KEY].version is not None
    assert read(backend.store, V6_KEY).pools[V6_KEY].allocations == {ip("fd00::1"): B}
    reservations = {("", 4, ip("10.0.0.1")): A, ("", 6, ip("fd00::1")): B}
    assert backend.stored() == Stored({KEY: {ip("10.0.0.1"): A}, V6_KEY: {ip("fd00::1"): B}}, reservations)


def test_version_changes_on_every_write(store: Store) -> None:
    hold(store, KEY, "10.0.0.1", A)
    first = read(store, KEY).pools[KEY].version
    hold(store, KEY, "10.0.0.2", B)
    assert read(store, KEY).pools[KEY].version != first


def test_release_removes_only_the_recorded_holder(backend: Backend) -> None:
    hold(backend.store, KEY, "10.0.0.1", A)
    before = backend.stored()
    # Someone else's view (B held it): must not free A's address. The Kubernetes store's guard fails, so its
    # commit reports a loss (the service reads again); the others find nothing of B's to remove.
    release(backend.store, KEY, "10.0.0.1", B)
    assert backend.stored() == before == Stored({KEY: {ip("10.0.0.1"): A}}, {("", 4, ip("10.0.0.1")): A})
    assert release(backend.store, KEY, "10.0.0.1", A)
    assert backend.stored() == Stored({}, {})
    assert read(backend.store, KEY).pools[KEY].allocations == {}


def test_pool_entries_record_the_network_config_name_and_reservations_do_not(backend: Backend) -> None:
    named = A.named("netA")
    assert hold(backend.store, KEY, "10.0.0.1", named)
    assert hold(backend.store, KEY, "10.0.0.2", B)  # no name: as the Go plugin, or this one before names, wrote it
    assert read(backend.store, KEY).pools[KEY].allocations == {ip("10.0.0.1"): named, ip("10.0.0.2"): B}
    reservations = {("", 4, ip("10.0.0.1")): A, ("", 4, ip("10.0.0.2")): B}
    assert backend.stored() == Stored({KEY: {ip("10.0.0.1"): named, ip("10.0.0.2"): B}}, reservations)


def test_entry_rewritten_under_a_name_and_released_with_its_reservation(backend: Backend) -> None:
    hold(backend.store, KEY, "10.0.0.1", A)
    named = A.named("netA")
    assert commit(backend.store, change(KEY, "10.0.0.1", named, previous=A))  # an ADD of the attachment under netA
    assert backend.stored() == Stored({KEY: {ip("10.0.0.1"): named}}, {("", 4, ip("10.0.0.1")): A})
    assert release(backend.store, KEY, "10.0.0.1", named)  # a GC of netA
    assert backend.stored() == Stored({}, {})


def test_reservations_are_per_network(backend: Backend) -> None:
    hold(backend.store, KEY, "10.0.0.1", A)
    hold(backend.store, NET_KEY, "10.0.0.1", B)
    pools = {KEY: {ip("10.0.0.1"): A}, NET_KEY: {ip("10.0.0.1"): B}}
    assert backend.stored() == Stored(pools, {("", 4, ip("10.0.0.1")): A, ("blue", 4, ip("10.0.0.1")): B})


def test_snapshot_shows_reservations_of_its_network(backend: Backend) -> None:
    hold(backend.other(), KEY, "10.0.0.1", A)  # another caller's, and one of another network
    hold(backend.other(), NET_KEY, "10.0.0.2", B)
    reserved = read(backend.store, NET_KEY).reservations
    if backend.name == "kubernetes":
        # Not read with the pool: found when creating it fails, and from then on every one is known.
        assert reserved == {}
        assert not hold(backend.store, KEY, "10.0.0.1", C, overlapping=True)
        assert read(backend.store, NET_KEY).reservations[("blue", 4, ip("10.0.0.2"))] == B
    else:
        assert reserved == {("blue", 4, ip("10.0.0.2")): B}
        assert read(backend.store, KEY).reservations == {("", 4, ip("10.0.0.1")): A}


def test_no_reservation_without_overlapping(backend: Backend) -> None:
    hold(backend.store, KEY, "10.0.0.1", A, overlapping=False)
    assert backend.stored() == Stored({KEY: {ip("10.0.0.1"): A}}, {})
    assert read(backend.store, KEY).reservations == {}


def test_pools_holding_finds_every_pool_of_the_network(backend: Backend) -> None:
    hold(backend.store, KEY, "10.0.0.1", A)
    hold(backend.store, OTHER_KEY, "10.1.0.1", A)
    hold(backend.store, NET_KEY, "10.0.0.9", A)
    hold(backend.store, KEY, "10.0.0.2", B)
    found = backend.store.pools_holding("", "ctr-a", "eth0")
    assert {KEY, OTHER_KEY} <= set(found)
    if backend.name == "kubernetes":  # the Go plugin's names: "blue-10.0.0.0-24" also reads as node "blue"'s slice
        assert found == sorted([KEY, OTHER_KEY, PoolKey("", KEY.cidr, "blue")])
    else:
        assert found == sorted([KEY, OTHER_KEY])
    assert backend.store.pools_holding("", "ctr-a", "net1") == []
    assert backend.store.pools_holding("blue", "ctr-b", "net1") == []


def test_uncommitted_transaction_writes_nothing(backend: Backend) -> None:
    with pytest.raises(RuntimeError), backend.store.transaction([KEY], overlapping=True):
        raise RuntimeError("decided nothing")
    assert backend.stored() == Stored({}, {})
    assert hold(backend.store, KEY, "10.0.0.1", A)  # and the store is usable afterwards
    assert read(backend.store, KEY).pools[KEY].allocations == {ip("10.0.0.1"): A}


def test_ready(store: Store) -> None:
    store.check_ready()


# -- a commit after someone else wrote ------------------------------------------------------------------------


def race(backend: Backend, changes: list[Change], meanwhile: Callable[[Store], object], overlapping: bool = True):
    """Read, decide `changes`, let another caller run `meanwhile` before the commit, then commit.
    Returns (whether the commit won, the stored state right after the other caller's write).

    A store that serializes refuses the other caller while the transaction is open (it would wait its
    turn, and then decide from what this commit wrote): there is no state of the other's, and ours wins."""
    keys = list(dict.fromkeys(c.key for c in changes))
    with backend.store.transaction(keys, overlapping=overlapping) as txn:
        decided = ChangeSet(tuple(changes), tuple((k, txn.snapshot.pools[k].version) for k in keys), overlapping)
        if backend.serializes:
            with pytest.raises(TryAgainLater):
                meanwhile(backend.other())
            return txn.commit(decided), None
        meanwhile(backend.other())
        theirs = backend.stored()
        return txn.commit(decided), theirs


def retried(attempt: Callable[[], bool], tries: int = 3) -> None:
    """As the service does: a commit that lost is decided again from a fresh read (a Kubernetes store learns
    of a reservation it did not know by losing to it once)."""
    assert any(attempt() for _ in range(tries)), f"no commit won in {tries} tries"


def assert_lost_to_the_other(backend: Backend, won: bool, theirs: Stored | None, ours: Stored) -> None:
    """Every store keeps one writer's decision whole: the other's (ours lost, and wrote nothing), or, where
    nobody could write in between, ours."""
    if backend.serializes:
        assert won and theirs is None
        assert backend.stored() == ours
    else:
        assert not won, "a commit decided on a state someone else changed meanwhile must lose"
        assert backend.stored() == theirs


@pytest.mark.parametrize("overlapping", [True, False], ids=["overlapping", "not-overlapping"])
@pytest.mark.parametrize("pool_existed", [True, False], ids=["pool-existed", "pool-created-meanwhile"])
def test_a_hold_loses_to_the_same_address_taken_meanwhile(
    backend: Backend, overlapping: bool, pool_existed: bool
) -> None:
    if pool_existed:
        hold(backend.store, KEY, "10.0.0.9", C, overlapping=overlapping)
    before = backend.stored()
    won, theirs = race(
        backend,
        [change(KEY, "10.0.0.1", A)],
        lambda other: hold(other, KEY, "10.0.0.1", B, overlapping=overlapping),
        overlapping,
    )
    if theirs is not None:
        assert theirs.pools[KEY][ip("10.0.0.1")] == B
    ours = Stored({KEY: {**before.pools.get(KEY, {}), ip("10.0.0.1"): A}}, dict(before.reservations))
    if overlapping:
        ours.reservations[("", 4, ip("10.0.0.1"))] = A
    assert_lost_to_the_other(backend, won, theirs, ours)


def test_a_release_loses_when_the_entry_was_replaced_meanwhile(backend: Backend) -> None:
    hold(backend.store, KEY, "10.0.0.1", A)

    def released_and_taken(other: Store) -> None:  # A's DEL, then another ADD that gets the address
        assert release(other, KEY, "10.0.0.1", A)
        assert hold(other, KEY, "10.0.0.1", B)

    won, theirs = race(backend, [change(KEY, "10.0.0.1", None, previous=A)], released_and_taken)
    if theirs is not None:
        assert theirs == Stored({KEY: {ip("10.0.0.1"): B}}, {("", 4, ip("10.0.0.1")): B})
    assert_lost_to_the_other(backend, won, theirs, Stored({}, {}))


def test_a_takeover_loses_when_the_previous_holder_changed_meanwhile(backend: Backend) -> None:
    """Pod ns/a recreated (container ctr-a2) takes over the address its old container held; meanwhile the
    old container's DEL released it and another pod's ADD got it. The takeover must not take it from C."""
    hold(backend.store, KEY, "10.0.0.1", A)

    def released_and_taken(other: Store) -> None:
        assert release(other, KEY, "10.0.0.1", A)
        assert hold(other, KEY, "10.0.0.1", C)

    won, theirs = race(backend, [change(KEY, "10.0.0.1", A2, previous=A)], released_and_taken)
    if theirs is not None:
        assert theirs == Stored({KEY: {ip("10.0.0.1"): C}}, {("", 4, ip("10.0.0.1")): C})
    assert_lost_to_the_other(backend, won, theirs, Stored({KEY: {ip("10.0.0.1"): A2}}, {("", 4, ip("10.0.0.1")): A2}))


def test_a_takeover_loses_when_another_container_of_the_pod_took_over_first(backend: Backend) -> None:
    """Two ADDs of recreated containers of one pod (a runtime retrying with a new container) race for its
    old address: one takes it over, the other must lose rather than take it from the winner."""
    hold(backend.store, KEY, "10.0.0.1", A)
    a3 = Owner("ctr-a3", "eth0", "ns/a")
    won, theirs = race(
        backend,
        [change(KEY, "10.0.0.1", A2, previous=A)],
        lambda other: retried(lambda: commit(other, change(KEY, "10.0.0.1", a3, previous=A))),
    )
    if theirs is not None:
        assert theirs == Stored({KEY: {ip("10.0.0.1"): a3}}, {("", 4, ip("10.0.0.1")): a3})
    assert_lost_to_the_other(backend, won, theirs, Stored({KEY: {ip("10.0.0.1"): A2}}, {("", 4, ip("10.0.0.1")): A2}))


def test_a_write_meanwhile_to_another_address_of_the_pool(backend: Backend) -> None:
    """Never two holders, whatever the store. Whether the commit loses is store-specific: memory compares
    the whole pool's version (it loses), etcd and kubernetes guard each address (it wins: nothing it saw
    changed), SQLite lets nobody write in between (it wins)."""
    hold(backend.store, KEY, "10.0.0.9", C)
    won, theirs = race(backend, [change(KEY, "10.0.0.1", A)], lambda other: hold(other, KEY, "10.0.0.2", B))
    held = backend.stored().pools[KEY]
    assert held[ip("10.0.0.9")] == C
    if backend.serializes:
        assert won and held == {ip("10.0.0.9"): C, ip("10.0.0.1"): A}
    elif backend.name in PER_ADDRESS:
        assert won and held == {ip("10.0.0.9"): C, ip("10.0.0.1"): A, ip("10.0.0.2"): B}
    else:
        assert not won and backend.stored() == theirs


def test_memory_store_rejects_stale_versions() -> None:
    store = MemoryStore()
    hold(store, KEY, "10.0.0.1", A)
    stale = ChangeSet((Change(KEY, 4, ip("10.0.0.2"), B),), ((KEY, None),), True)
    assert store.apply(stale) is False
    assert ip("10.0.0.2") not in read(store, KEY).pools[KEY].allocations
