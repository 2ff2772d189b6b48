"""One contract, every backend: what the IPAM service relies on from a store."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.storage import Store
from whereabouts.store.etcd import EtcdStore
from whereabouts.store.etcd_gateway import EtcdGateway, parse_endpoint
from whereabouts.store.local import LocalStore
from whereabouts.store.memory import MemoryStore

KEY = PoolKey("", "10.0.0.0/24")
NET_KEY = PoolKey("blue", "10.0.0.0/24")
V6_KEY = PoolKey("", "fd00::/64")
A = Owner("ctr-a", "eth0", "ns/a")
B = Owner("ctr-b", "net1", "")


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


@pytest.fixture(params=["memory", "local", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        backend: Store = MemoryStore()
    elif request.param == "local":
        backend = LocalStore(str(tmp_path / "store"))
    else:
        server = request.getfixturevalue("etcd")
        prefix = request.getfixturevalue("etcd_prefix")
        backend = EtcdStore(EtcdGateway([parse_endpoint(server.url, tls=False)]), prefix=prefix)
    yield backend
    backend.close()


def hold(store: Store, key: PoolKey, text: str, owner: Owner, *, overlapping: bool = True) -> bool:
    addr = ipaddress.ip_address(text)
    with store.transaction([key], overlapping=overlapping) as txn:
        expected = ((key, txn.snapshot.pools[key].version),)
        return txn.commit(ChangeSet((Change(key, addr.version, int(addr), owner),), expected, overlapping))


def read(store: Store, key: PoolKey, *, overlapping: bool = True):
    with store.transaction([key], overlapping=overlapping) as txn:
        return txn.snapshot


def test_empty_pool_reads_as_missing(store: Store) -> None:
    snap = read(store, KEY)
    assert snap.pools[KEY].version is None and snap.pools[KEY].allocations == {}


def test_hold_then_read_back_with_new_version(store: Store) -> None:
    assert hold(store, KEY, "10.0.0.1", A)
    assert hold(store, V6_KEY, "fd00::1", B)
    snap = read(store, KEY)
    assert snap.pools[KEY].allocations == {ip("10.0.0.1"): A}
    assert snap.reservations == {("", 4, ip("10.0.0.1")): A}
    assert snap.pools[KEY].version is not None
    assert read(store, V6_KEY).pools[V6_KEY].allocations == {ip("fd00::1"): B}


def test_version_changes_on_every_write(store: Store) -> None:
    hold(store, KEY, "10.0.0.1", A)
    first = read(store, KEY).pools[KEY].version
    hold(store, KEY, "10.0.0.2", B)
    assert read(store, KEY).pools[KEY].version != first


def test_release_removes_only_the_recorded_holder(store: Store) -> None:
    hold(store, KEY, "10.0.0.1", A)
    with store.transaction([KEY], overlapping=True) as txn:
        version = txn.snapshot.pools[KEY].version
        stale = Change(KEY, 4, ip("10.0.0.1"), None, previous=B)  # someone else's view: must not free A's address
        assert txn.commit(ChangeSet((stale,), ((KEY, version),), True))
    assert read(store, KEY).pools[KEY].allocations == {ip("10.0.0.1"): A}
    with store.transaction([KEY], overlapping=True) as txn:
        version = txn.snapshot.pools[KEY].version
        txn.commit(ChangeSet((Change(KEY, 4, ip("10.0.0.1"), None, previous=A),), ((KEY, version),), True))
    snap = read(store, KEY)
    assert snap.pools[KEY].allocations == {} and snap.reservations == {}


def test_pool_entries_record_the_network_config_name_and_reservations_do_not(store: Store) -> None:
    named = A.named("netA")
    assert hold(store, KEY, "10.0.0.1", named)
    assert hold(store, KEY, "10.0.0.2", B)  # no name: as the Go plugin, or this one before names, wrote it
    snap = read(store, KEY)
    assert snap.pools[KEY].allocations == {ip("10.0.0.1"): named, ip("10.0.0.2"): B}
    assert snap.reservations == {("", 4, ip("10.0.0.1")): A, ("", 4, ip("10.0.0.2")): B}


def test_entry_rewritten_under_a_name_and_released_with_its_reservation(store: Store) -> None:
    hold(store, KEY, "10.0.0.1", A)
    named = A.named("netA")
    with store.transaction([KEY], overlapping=True) as txn:  # an ADD of the attachment under netA
        version = txn.snapshot.pools[KEY].version
        assert txn.commit(ChangeSet((Change(KEY, 4, ip("10.0.0.1"), named, previous=A),), ((KEY, version),), True))
    assert read(store, KEY).pools[KEY].allocations == {ip("10.0.0.1"): named}
    with store.transaction([KEY], overlapping=True) as txn:  # a GC of netA
        version = txn.snapshot.pools[KEY].version
        txn.commit(ChangeSet((Change(KEY, 4, ip("10.0.0.1"), None, previous=named),), ((KEY, version),), True))
    snap = read(store, KEY)
    assert snap.pools[KEY].allocations == {} and snap.reservations == {}


def test_reservations_are_per_network(store: Store) -> None:
    hold(store, KEY, "10.0.0.1", A)
    assert read(store, NET_KEY).reservations == {}
    hold(store, NET_KEY, "10.0.0.1", B)
    assert read(store, NET_KEY).reservations == {("blue", 4, ip("10.0.0.1")): B}


def test_no_reservation_without_overlapping(store: Store) -> None:
    hold(store, KEY, "10.0.0.1", A, overlapping=False)
    assert read(store, KEY).reservations == {}


def test_pools_holding_finds_every_pool_of_the_network(store: Store) -> None:
    other = PoolKey("", "10.1.0.0/16")
    hold(store, KEY, "10.0.0.1", A)
    hold(store, other, "10.1.0.1", A)
    hold(store, NET_KEY, "10.0.0.9", A)
    assert store.pools_holding("", "ctr-a", "eth0") == sorted([KEY, other])
    assert store.pools_holding("", "ctr-a", "net1") == []


def test_uncommitted_transaction_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction([KEY], overlapping=True):
        raise RuntimeError("decided nothing")
    assert hold(store, KEY, "10.0.0.1", A)  # and the store is usable afterwards
    assert read(store, KEY).pools[KEY].allocations == {ip("10.0.0.1"): A}


def test_ready(store: Store) -> None:
    store.check_ready()


def test_memory_store_rejects_stale_versions() -> None:
    store = MemoryStore()
    hold(store, KEY, "10.0.0.1", A)
    stale = ChangeSet((Change(KEY, 4, ip("10.0.0.2"), B),), ((KEY, None),), True)
    assert store.apply(stale) is False
    assert ip("10.0.0.2") not in read(store, KEY).pools[KEY].allocations
