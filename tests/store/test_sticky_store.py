"""What every store keeps of a sticky address (docs/sticky.md): the entry's key, retention, controller, fixed flag
and node, in the pool entry and in the network-wide reservation; and the local store's upgrade from the schema
before sticky addresses."""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from store_backends import BACKENDS, Backend, open_backend

from whereabouts.config import parse_ipam
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.service import IPAMService
from whereabouts.storage import Store
from whereabouts.store.local import DB_NAME, SCHEMA_VERSION, LocalStore

KEY = PoolKey("", "10.0.0.0/24")
OTHER = PoolKey("", "10.1.0.0/24")
HELD = Owner("ctr-a", "eth0", "ns/web-0", "netA", sticky="pod:ns/web-0/eth0", controller="apps/v1/StatefulSet/web/u1",
             node="n1")  # fmt: skip
RETAINED = HELD.but(retained=1_700_000_000, expires=1_700_086_400)
TAKEN_BACK = Owner("ctr-a2", "eth0", "ns/web-0", "netA", sticky="pod:ns/web-0/eth0", node="n2")
FIXED = Owner("ctr-m", "net1", "ns/vm", "netA", sticky="mac:02:00:00:00:00:07", fixed=True)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, tmp_path, [KEY, OTHER]) as opened:
        yield opened


def commit(store: Store, key: PoolKey, text: str, owner: Owner, previous: Owner | None = None) -> bool:
    ip = int(ipaddress.ip_address(text))
    with store.transaction([key], overlapping=True) as txn:
        changes = ChangeSet((Change(key, 4, ip, owner, previous),), ((key, txn.snapshot.pools[key].version),), True)
        return txn.commit(changes)


def entries(store: Store, key: PoolKey = KEY) -> dict[str, Owner]:
    with store.transaction([key], overlapping=False) as txn:
        return {str(ipaddress.ip_address(ip)): who for ip, who in txn.snapshot.pools[key].allocations.items()}


def reservations(backend: Backend) -> dict[str, Owner]:
    """The network-wide reservations as stored (the Kubernetes store reads none with a snapshot: its objects)."""
    if backend.name == "kubernetes":
        found = backend.stored().reservations
    else:
        with backend.other().transaction([KEY], overlapping=True) as txn:
            found = txn.snapshot.reservations
    return {str(ipaddress.ip_address(ip)): who for (_, _, ip), who in found.items()}


def test_sticky_fields_round_trip_through_a_retaining_del_and_a_takeover(backend: Backend) -> None:
    assert commit(backend.store, KEY, "10.0.0.1", HELD)
    assert commit(backend.store, KEY, "10.0.0.2", FIXED)
    # the DEL, by another caller (one that never saw the reservation written): retained in both records
    retaining = backend.other()
    assert commit(retaining, KEY, "10.0.0.1", RETAINED, previous=HELD)
    retaining.forget_attachment("", HELD)  # what a DEL does next: a retained reservation is no leftover
    assert entries(backend.other()) == {"10.0.0.1": RETAINED, "10.0.0.2": FIXED}
    assert reservations(backend) == {"10.0.0.1": RETAINED.named(""), "10.0.0.2": FIXED.named("")}
    assert backend.store.pools_with_sticky("", "pod:ns/web-0/eth0") == [KEY]
    assert backend.store.pools_with_sticky("", "pod:ns/web-1/eth0") == []
    assert backend.store.pools_with_sticky("blue", "pod:ns/web-0/eth0") == []
    # the key's next ADD, another container on another node (the Kubernetes store learns of the reservation it
    # did not know by losing a first attempt, as the service would retry)
    taker = backend.other()
    assert commit(taker, KEY, "10.0.0.1", TAKEN_BACK, previous=RETAINED) or (
        backend.name == "kubernetes" and commit(taker, KEY, "10.0.0.1", TAKEN_BACK, previous=RETAINED))  # fmt: skip
    assert entries(backend.other())["10.0.0.1"] == TAKEN_BACK
    assert reservations(backend)["10.0.0.1"] == TAKEN_BACK.named("")


def test_pools_with_sticky_finds_the_keys_pools_of_the_network(backend: Backend) -> None:
    commit(backend.store, KEY, "10.0.0.1", RETAINED)
    commit(backend.store, OTHER, "10.1.0.1", HELD.but(container_id="ctr-b"))
    commit(backend.store, OTHER, "10.1.0.2", FIXED)
    assert backend.store.pools_with_sticky("", HELD.sticky) == [KEY, OTHER]
    assert backend.store.pools_with_sticky("", FIXED.sticky) == [OTHER]


V2_SCHEMA = """
CREATE TABLE pools (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (network, cidr, node)) WITHOUT ROWID;
CREATE TABLE allocations (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL, netconf TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (network, cidr, node, ipkey)) WITHOUT ROWID;
CREATE INDEX allocations_by_attachment ON allocations (container_id, ifname);
CREATE TABLE reservations (
    network TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL,
    PRIMARY KEY (network, ipkey)) WITHOUT ROWID;
INSERT INTO pools VALUES ('', '10.0.0.0/24', '', 7);
INSERT INTO allocations VALUES ('', '10.0.0.0/24', '', '4:0a000005', '10.0.0.5', 'old', 'eth0', 'ns/web-0', 'netA');
INSERT INTO reservations VALUES ('', '4:0a000005', '10.0.0.5', 'old', 'eth0', 'ns/web-0');
PRAGMA user_version=2;
"""


def test_version_2_file_is_upgraded_keeping_its_rows_as_held_addresses(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db:
        db.executescript(V2_SCHEMA)
    store = LocalStore(str(tmp_path))
    old = Owner("old", "eth0", "ns/web-0", "netA")
    with store.transaction([KEY], overlapping=True) as txn:
        assert txn.snapshot.pools[KEY].version == 7
        assert txn.snapshot.pools[KEY].allocations == {0x0A000005: old}  # held, sticking to nothing
        assert txn.snapshot.reservations == {("", 4, 0x0A000005): old.named("")}
    assert old.state == "held" and old.sticky_kind == ""
    # sticky turned on for the network since: its DEL retains the address for the pod, the pod gets it back
    cfg = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24", "sticky": "pod"}, "netA")
    service = IPAMService(store)
    service.delete(cfg, Owner("old", "eth0", "ns/web-0", sticky="pod:ns/web-0/eth0"))
    assert store.pools_with_sticky("", "pod:ns/web-0/eth0") == [KEY]
    (assigned,) = service.add(cfg, Owner("new", "eth0", "ns/web-0", sticky="pod:ns/web-0/eth0"))
    assert assigned.address == "10.0.0.5/24"
    store.close()
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        columns = {row[1] for row in db.execute("PRAGMA table_info(reservations)")}
        assert {"sticky", "retained", "expires", "controller", "fixed", "attached_on"} <= columns


def test_a_batch_commits_two_changes_of_one_address_in_turn(backend: Backend) -> None:
    """The node daemon's group commit, two containers of one sticky key and two of one pod in one round: the
    later of each takes over the address the earlier got, in a commit of its own (etcd refuses a transaction
    naming one key twice, which failed every request of the round), and the others are served as ever."""
    cfg = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24", "sticky": "mac"}, "netA")
    service = IPAMService(backend.store)
    key = "mac:02:00:00:00:00:01"
    vm = Owner("ctr-a", "eth0", "ns/vm-a", sticky=key)
    service.add(cfg, vm)
    service.delete(cfg, vm)  # 10.0.0.1 retained for the MAC
    source, target = Owner("ctr-b", "eth0", "ns/vm-b", sticky=key), Owner("ctr-c", "eth0", "ns/vm-c", sticky=key)
    old, new = Owner("ctr-w", "eth0", "ns/web-0"), Owner("ctr-w2", "eth0", "ns/web-0")
    other = Owner("ctr-o", "eth0", "ns/other")
    outcomes = service.add_batch(cfg, [(source, ()), (old, ()), (target, ()), (new, ()), (other, ())])
    assert [[a.address for a in o] for o in outcomes if isinstance(o, list)] == [
        ["10.0.0.1/24"], ["10.0.0.2/24"], ["10.0.0.1/24"], ["10.0.0.2/24"], ["10.0.0.3/24"]
    ]  # fmt: skip
    held = {address: who.container_id for address, who in entries(backend.other()).items()}
    assert held == {"10.0.0.1": "ctr-c", "10.0.0.2": "ctr-w2", "10.0.0.3": "ctr-o"}
    assert {address: who.container_id for address, who in reservations(backend).items()} == held


def test_a_del_round_releases_an_attachment_named_twice_once(backend: Backend) -> None:
    """The node daemon's DEL round with one attachment twice (its runtime retried the DEL while the first waited
    in the round): released once and both copies answered alike; two releases of the address decided from one
    read made the commit lose on every try (the Kubernetes store's, ~45 s) and failed the unrelated DEL too."""
    cfg = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24"}, "netA")
    service = IPAMService(backend.store)
    a, b, c = Owner("ctr-a", "eth0", "ns/a"), Owner("ctr-b", "eth0", "ns/b"), Owner("ctr-c", "eth0", "ns/c")
    for owner in (a, b, c):
        service.add(cfg, owner)
    assert service.delete_batch(cfg, [a, b, a]) == [None, None, None]
    assert {address: who.container_id for address, who in entries(backend.other()).items()} == {"10.0.0.3": "ctr-c"}
    assert {address: who.container_id for address, who in reservations(backend).items()} == {"10.0.0.3": "ctr-c"}
