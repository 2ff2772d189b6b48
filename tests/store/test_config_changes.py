"""A network config whose ranges change under attachments that still hold addresses (a range widened, or
dropped from a dual-stack config): the service and every store keep one holder per address, and DEL and GC
still find what the attachment holds in the pools no longer configured.

Runs on every store, the Kubernetes one as a CNI process uses it (the node daemon's way: tests/cni, the
`test_a_range_widened_...` case). That store writes an entry and its reservation one at a time and a lost create
is a lost race, not a refusal; it lists no pools for GC (`pools_of`): a gone pod's leftovers there are its
reconciler's (tests/controller). Its DEL finds the pools no longer configured through the attachment's
reservations still standing (`forget_attachment`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_backends import Backend, Stored, open_backend

from whereabouts.config import IPAMConfig, parse_ipam
from whereabouts.errors import AddressTaken
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.service import IPAMService
from whereabouts.storage import Store

NARROW = PoolKey("n", "10.9.0.0/29")
WIDE = PoolKey("n", "10.9.0.0/28")
V6 = PoolKey("n", "fd00:9::/64")
OTHER_NETWORK_V6 = PoolKey("m", "fd00:9::/64")
A = Owner("ctr-a", "eth0", "ns/a")
B = Owner("ctr-b", "eth0", "ns/b")
C = Owner("ctr-c", "eth0", "ns/c")


@pytest.fixture(params=["memory", "memory-indexed", "local", "etcd", "kubernetes"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, tmp_path, [NARROW, WIDE, V6, OTHER_NETWORK_V6]) as opened:
        yield opened


def config(*ranges: str, network: str = "n") -> IPAMConfig:
    return parse_ipam({"type": "whereabouts", "ipRanges": [{"range": r} for r in ranges], "network_name": network},
                      "net")  # fmt: skip


def addresses(service: IPAMService, cfg: IPAMConfig, owner: Owner) -> list[str]:
    assigned = service.add(cfg, owner)
    assert isinstance(assigned, list), assigned
    return [a.address for a in assigned]


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def assert_one_entry_per_address(stored: Stored) -> None:
    """Every address of a network has at most one pool entry, and that entry's own reservation behind it."""
    entries: dict[tuple[str, int, int], list[Owner]] = {}
    for key, pool in stored.pools.items():
        for value, who in pool.items():
            entries.setdefault((key.network, key.version, value), []).append(who)
    for address, holders in entries.items():
        assert len(holders) == 1, f"{address} has {len(holders)} pool entries: {holders}"
        reserved = stored.reservations.get(address)
        assert reserved is not None and reserved.same_attachment(holders[0]), f"{address}: reserved by {reserved}"


def releases_elsewhere(backend: Backend) -> bool:
    """Whether a DEL releases the attachment's entries in pools its config no longer names (etcd: GC does)."""
    return backend.store.finds_attachments or backend.name == "kubernetes"


def test_an_add_under_a_widened_range_takes_no_reservation_an_old_entry_stands_behind(backend: Backend) -> None:
    """The attachment's address in the old range's pool is reserved network-wide for that entry: an ADD of the
    same attachment under the widened config must not take it over as its own (a second entry backed by one
    reservation, which the release of either frees while the other still holds the address)."""
    service = IPAMService(backend.store)
    narrow, wide = config(NARROW.cidr), config(WIDE.cidr)
    assert addresses(service, narrow, A) == ["10.9.0.1/29"]
    assert addresses(service, wide, A) == ["10.9.0.2/28"]
    assert_one_entry_per_address(backend.stored())
    service.delete(wide, A)  # the pod goes, under the config as it is now
    if releases_elsewhere(backend):  # (elsewhere, the old entry is left to GC, still guarded)
        assert backend.stored() == Stored({}, {})
    taken = {*addresses(service, wide, B), *addresses(service, narrow, C)}
    assert_one_entry_per_address(backend.stored())
    assert len({address.split("/")[0] for address in taken}) == 2


def test_a_del_under_the_old_config_leaves_the_other_pools_address_guarded(backend: Backend) -> None:
    service = IPAMService(backend.store)
    narrow, wide = config(NARROW.cidr), config(WIDE.cidr)
    addresses(service, narrow, A)
    addresses(service, wide, A)
    service.delete(narrow, A)
    if releases_elsewhere(backend):
        assert backend.stored() == Stored({}, {})
    taken = {*addresses(service, narrow, B), *addresses(service, wide, C)}
    assert_one_entry_per_address(backend.stored())
    assert len({address.split("/")[0] for address in taken}) == 2


def commit(store: Store, read: list[PoolKey], *changes: Change) -> bool:
    with store.transaction(read, overlapping=True) as txn:
        expected = tuple((key, txn.snapshot.pools[key].version) for key in read)
        return txn.commit(ChangeSet(changes, expected, True))


def at(key: PoolKey, text: str, owner: Owner | None, previous: Owner | None = None) -> Change:
    return Change(key, key.version, ip(text), owner, previous)


def test_a_release_keeps_the_reservation_another_entry_of_the_attachment_stands_behind(backend: Backend) -> None:
    """Two entries of one attachment at one address (written before this plugin refused to resume such a
    reservation): releasing one leaves the reservation to the other."""
    assert commit(backend.store, [NARROW], at(NARROW, "10.9.0.1", A))
    assert commit(backend.store, [WIDE], at(WIDE, "10.9.0.1", A))  # the same attachment's: not another holder's
    assert commit(backend.store, [NARROW, WIDE], at(NARROW, "10.9.0.1", None, A))
    assert backend.stored() == Stored({WIDE: {ip("10.9.0.1"): A}}, {("n", 4, ip("10.9.0.1")): A})
    assert commit(backend.store, [WIDE], at(WIDE, "10.9.0.1", None, A))
    assert backend.stored() == Stored({}, {})


@pytest.mark.parametrize("key", [NARROW, WIDE], ids=["same pool", "overlapping pool"])
def test_a_hold_never_writes_over_another_holders_record(backend: Backend, key: PoolKey) -> None:
    """A hold whose decision did not see the holder it would replace is refused, whatever the store's own
    guards let through (the reservation's revision, read unchanged; SQLite's INSERT OR REPLACE)."""
    if backend.name == "kubernetes":
        pytest.skip("a hold there is a create the API server refuses over anyone's: a lost race, decided again")
    assert commit(backend.store, [NARROW], at(NARROW, "10.9.0.1", A))
    before = backend.stored()
    with pytest.raises(AddressTaken, match=r"10\.9\.0\.1.*ctr-a"):
        commit(backend.store, [key], at(key, "10.9.0.1", B))
    assert backend.stored() == before
    assert commit(backend.store, [NARROW], at(NARROW, "10.9.0.1", B, previous=A))  # a takeover says whose it was
    assert backend.stored() == Stored({NARROW: {ip("10.9.0.1"): B}}, {("n", 4, ip("10.9.0.1")): B})


def test_del_releases_the_range_dropped_from_a_dual_stack_config(backend: Backend) -> None:
    """Where finding the attachment's other pools is cheap (`finds_attachments`: an index) or its reservations
    still standing lead to them (Kubernetes: `forget_attachment`); else GC does."""
    service = IPAMService(backend.store)
    assert addresses(service, config("10.9.0.0/29", V6.cidr), A) == ["10.9.0.1/29", "fd00:9::1/64"]
    service.delete(config("10.9.0.0/29"), A)
    if not releases_elsewhere(backend):
        assert backend.stored() == Stored({V6: {ip("fd00:9::1"): A.named("net")}}, {("n", 6, ip("fd00:9::1")): A})
        assert service.gc(config("10.9.0.0/29"), set()) == 1
    assert backend.stored() == Stored({}, {})


def test_gc_collects_in_a_range_dropped_from_the_config_and_nothing_of_another_network(backend: Backend) -> None:
    if backend.name == "kubernetes":
        pytest.skip("it lists no network's pools for GC (pools_of): the reconciler frees a gone pod's addresses")
    service = IPAMService(backend.store)
    dual, other = config("10.9.0.0/29", V6.cidr), config(OTHER_NETWORK_V6.cidr, network="m")
    for owner in (A, B):
        addresses(service, dual, owner)
    assert addresses(service, other, C) == ["fd00:9::1/64"]  # the same name `net`, another network_name
    assert service.gc(config("10.9.0.0/29"), {("ctr-b", "eth0")}) == 2
    held = {key: sorted(pool.values(), key=str) for key, pool in backend.stored().pools.items()}
    assert held == {PoolKey("n", "10.9.0.0/29"): [B.named("net")], V6: [B.named("net")],
                    OTHER_NETWORK_V6: [C.named("net")]}  # fmt: skip
