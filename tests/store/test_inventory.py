"""The operator's read API (whereabouts.inventory), every backend: every pool listed, a pool's entries counted over
spans, every reservation; and the IPAM service's single-entry writes the tools make through the same transactions
(release_entry, restore_reservation, release_reservation, import_entries)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_backends import BACKENDS, Backend, open_backend

from whereabouts.inventory import Tally
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.service import IPAMService

KEY = PoolKey("", "10.0.0.0/24")
NET_KEY = PoolKey("blue", "10.0.0.0/24")
NODE_KEY = PoolKey("blue", "10.0.1.0/26", "node1")
V6_KEY = PoolKey("", "fd00::/64")
A = Owner("ctr-a", "eth0", "ns/a", "net")
B = Owner("ctr-b", "net1", "ns/b", "net", sticky="pod:ns/b/net1", retained=100, expires=200)
C = Owner("ctr-c", "eth0", "ns/c")


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, tmp_path, [KEY, NET_KEY, NODE_KEY, V6_KEY]) as opened:
        yield opened


def hold(backend: Backend, key: PoolKey, text: str, owner: Owner, *, overlapping: bool = True) -> None:
    addr = ipaddress.ip_address(text)
    with backend.store.transaction([key], overlapping=overlapping) as txn:
        changes = (Change(key, addr.version, int(addr), owner),)
        assert txn.commit(ChangeSet(changes, ((key, txn.snapshot.pools[key].version),), overlapping))


def test_every_pool_is_listed_with_its_network_and_node(backend: Backend) -> None:
    hold(backend, KEY, "10.0.0.1", A)
    hold(backend, NET_KEY, "10.0.0.1", C)
    hold(backend, NODE_KEY, "10.0.1.5", C)
    hold(backend, V6_KEY, "fd00::1", A)
    # Kubernetes needs the network names (its pool names do not tell them); a node holding no slice there
    assert backend.store.pool_keys(["blue"]) == sorted([KEY, NET_KEY, NODE_KEY, V6_KEY])  # type: ignore[attr-defined]


def test_a_pool_is_counted_over_spans(backend: Backend) -> None:
    for text, owner in (("10.0.0.1", A), ("10.0.0.2", B), ("10.0.0.3", C), ("10.0.0.0", C)):
        hold(backend, KEY, text, owner, overlapping=False)
    spans = [(ip("10.0.0.0"), ip("10.0.0.0")), (ip("10.0.0.1"), ip("10.0.0.2")), (ip("10.0.0.3"), ip("10.0.0.255"))]
    assert backend.store.tally(KEY, spans) == [Tally(1, 0, 1), Tally(2, 1, 0), Tally(1, 0, 0)]  # type: ignore[attr-defined]
    assert backend.store.tally(V6_KEY, [(0, 1 << 128)]) == [Tally()]  # type: ignore[attr-defined]


def test_every_reservation_is_listed(backend: Backend) -> None:
    hold(backend, KEY, "10.0.0.1", A)
    hold(backend, NET_KEY, "10.0.0.7", C)
    hold(backend, V6_KEY, "fd00::1", A, overlapping=False)
    reserved = backend.store.reserved(["blue"])  # type: ignore[attr-defined]
    assert {address: owner.named("") for address, owner in reserved.items()} == {  # see store_backends
        ("", 4, ip("10.0.0.1")): A.named(""),
        ("blue", 4, ip("10.0.0.7")): C,
    }


def test_release_entry_only_while_the_holder_read_holds_it(backend: Backend) -> None:
    hold(backend, KEY, "10.0.0.1", A)
    service = IPAMService(backend.store)
    assert not service.release_entry(KEY, ip("10.0.0.1"), C)  # another holder: left alone
    assert service.release_entry(KEY, ip("10.0.0.1"), A)
    assert backend.stored().pools == {} and backend.stored().reservations == {}
    assert not service.release_entry(KEY, ip("10.0.0.1"), A)  # gone already


def test_import_entries_writes_free_addresses_and_names_taken_ones(backend: Backend) -> None:
    hold(backend, KEY, "10.0.0.2", C)
    service = IPAMService(backend.store)
    entries = {ip("10.0.0.1"): A, ip("10.0.0.2"): A.but(container_id="ctr-x"), ip("10.0.0.3"): B}
    placed, refused = service.import_entries(KEY, entries, overlapping=True)
    assert placed == [ip("10.0.0.1"), ip("10.0.0.3")] and refused == [(ip("10.0.0.2"), C)]
    with backend.store.transaction([KEY], overlapping=False) as txn:  # sticky fields too (stored() reads the base)
        assert txn.snapshot.pools[KEY].allocations == {ip("10.0.0.1"): A, ip("10.0.0.2"): C, ip("10.0.0.3"): B}
    again = service.import_entries(KEY, {ip("10.0.0.1"): A}, overlapping=True)
    assert again == ([ip("10.0.0.1")], [])  # in place already: nothing written


@pytest.mark.parametrize("name", ["memory", "local", "etcd"])
def test_restore_and_release_lone_reservations(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The stores that commit an entry and its reservation at once (Kubernetes repairs go through the
    reconciler's Applier): a missing reservation written back, a lone one dropped."""
    with open_backend(name, request, tmp_path, [KEY]) as backend:
        hold(backend, KEY, "10.0.0.1", A, overlapping=False)
        service = IPAMService(backend.store)
        assert service.restore_reservation(KEY, ip("10.0.0.1"), A)
        assert backend.stored().reservations == {("", 4, ip("10.0.0.1")): A.named("")}
        assert not service.release_reservation(KEY, ip("10.0.0.1"), A)  # an entry stands behind it
        assert service.release_entry(KEY, ip("10.0.0.1"), A)
        hold(backend, KEY, "10.0.0.9", C)
        with backend.store.transaction([KEY], overlapping=True) as txn:  # the entry alone released: a lone one
            txn.commit(ChangeSet((Change(KEY, 4, ip("10.0.0.9"), None, C),), ((KEY, txn.snapshot.pools[KEY].version),),
                                 False))  # fmt: skip
        assert backend.stored().reservations == {("", 4, ip("10.0.0.9")): C}
        assert service.release_reservation(KEY, ip("10.0.0.9"), C)
        assert backend.stored().reservations == {}
