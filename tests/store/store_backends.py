"""The four store backends of the contract suite, each with what the contract tests need besides the store:

- `other()`: a second caller of the same storage (another process on another node, as far as the store can
  tell), to write between a transaction's read and its commit;
- `stored()`: what the storage holds, read behind the store's back (SQL, etcd keys, API objects), so that a
  test asserts the state itself rather than what one client believes it to be;
- `serializes`: whether a transaction shuts every other writer out until it ends (SQLite's BEGIN IMMEDIATE),
  so that no write can come between its read and its commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from whereabouts.kube import resources
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import from_sortable_key
from whereabouts.storage import Store
from whereabouts.store.etcd import EtcdStore
from whereabouts.store.etcd_gateway import EtcdGateway, parse_endpoint
from whereabouts.store.kubernetes import KubernetesStore
from whereabouts.store.local import DB_NAME, LocalStore
from whereabouts.store.memory import MemoryStore

# memory-indexed: the memory store giving its snapshots an index, as the node daemon's cache does (whereabouts.holdings)
BACKENDS = ["memory", "memory-indexed", "local", "etcd", "kubernetes"]
Pools = dict[PoolKey, dict[int, Owner]]  # non-empty pools only: address -> holder
Reservations = dict[tuple[str, int, int], Owner]  # (network, IP version, address) -> holder


@dataclass
class Stored:
    pools: Pools
    reservations: Reservations


@dataclass
class Backend:
    name: str
    store: Store
    other: Callable[[], Store]
    stored: Callable[[], Stored]
    serializes: bool = False


@contextmanager
def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path, keys: list[PoolKey]) -> Iterator[Backend]:
    """`keys`: every pool the test may write (the Kubernetes reader maps IPPool names back to them)."""
    opened: list[Store] = []

    def other(make: Callable[[], Store]) -> Callable[[], Store]:
        def make_other() -> Store:
            opened.append(make())
            return opened[-1]

        return make_other

    if name in ("memory", "memory-indexed"):
        memory = MemoryStore(indexed=name == "memory-indexed")
        # The same object: its lock is reentrant, so the "other caller" can write inside a transaction of this
        # thread, and what catches it is the version check of its commit (as for any compare-and-swap store).
        backend = Backend(name, memory, lambda: memory, lambda: _memory_state(memory))
    elif name == "local":
        data = str(tmp_path / "store")
        # The other caller does not wait for SQLite's lock: its attempt while a transaction is open fails at once.
        backend = Backend(
            name,
            LocalStore(data),
            other(lambda: LocalStore(data, busy_timeout=0.0)),
            lambda: _local_state(Path(data) / DB_NAME),
            serializes=True,
        )
    elif name == "etcd":
        server, prefix = request.getfixturevalue("etcd"), request.getfixturevalue("etcd_prefix")

        def etcd_store() -> Store:
            return EtcdStore(EtcdGateway([parse_endpoint(server.url, tls=False)]), prefix=prefix)

        backend = Backend(name, etcd_store(), other(etcd_store), lambda: _etcd_state(server.dump(prefix + "/")))
    else:
        kube, namespace = request.getfixturevalue("kube"), request.getfixturevalue("kube_namespace")
        kubeconfig = request.getfixturevalue("plugin_kubeconfig")

        def kube_store() -> Store:
            return KubernetesStore(KubeClient(load_credentials(str(kubeconfig))))

        backend = Backend(
            name,
            kube_store(),
            other(kube_store),
            lambda: _kube_state(
                kube.objects(namespace, "ippools"), kube.objects(namespace, "overlappingrangeipreservations"), keys
            ),
        )
    try:
        yield backend
    finally:
        for store in [backend.store, *opened]:
            store.close()


def _memory_state(store: MemoryStore) -> Stored:
    pools = {key: dict(pool.allocations) for key, pool in store.pools.items() if pool.allocations}
    return Stored(pools, dict(store.reservations))


def _local_state(path: Path) -> Stored:
    pools: Pools = {}
    reservations: Reservations = {}
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT network, cidr, node, ipkey, container_id, ifname, podref, netconf FROM allocations")
        for network, cidr, node, ipkey, *owner in rows:
            pools.setdefault(PoolKey(network, cidr, node), {})[from_sortable_key(ipkey)[1]] = Owner(*owner)
        for network, ipkey, *owner in db.execute(
            "SELECT network, ipkey, container_id, ifname, podref FROM reservations"
        ):
            reservations[(network, *from_sortable_key(ipkey))] = Owner(*owner)
    return Stored(pools, reservations)


def _etcd_state(dump: dict[str, dict]) -> Stored:
    """Keys `<prefix>/<network>/pools/<node>/<cidr>/<ipkey>` and `<prefix>/<network>/reservations/<ipkey>`
    ('-' for an empty network or node; the tests' names need no other unescaping)."""
    pools: Pools = {}
    reservations: Reservations = {}
    for key, value in dump.items():
        parts = key.split("/")
        if parts[-3] == "attachments":  # `<prefix>/<network>/attachments/<container ID>/<ifname>`: no allocation
            continue
        owner = Owner(value["id"], value["ifname"], value["podref"], value.get("netconf", ""))
        version, ip = from_sortable_key(parts[-1])
        if parts[-2] == "reservations":
            reservations[(_unnamed(parts[-3]), version, ip)] = owner
            continue
        network, _, node, cidr = parts[-5:-1]
        address, _, prefix = cidr.rpartition("-")
        pools.setdefault(PoolKey(_unnamed(network), f"{address}/{prefix}", _unnamed(node)), {})[ip] = owner
    return Stored(pools, reservations)


def _unnamed(segment: str) -> str:
    return "" if segment == "-" else segment


def _kube_state(ippools: dict[str, dict], reservation_objects: dict[str, dict], keys: list[PoolKey]) -> Stored:
    by_name = {key.name: key for key in keys}
    pools = {by_name[name]: resources.decode_pool(by_name[name], obj).allocations for name, obj in ippools.items()}
    networks = {key.network for key in keys}
    reservations: Reservations = {}
    for name, obj in reservation_objects.items():
        address = resources.reservation_address(name, networks)
        assert address is not None, f"a reservation of no known network: {name}"
        # the Kubernetes store's reservations also record the network config (the node daemon's GC judges by
        # them: they are the record there); the contract compares what every store records
        reservations[address] = resources.reservation_owner(obj).named("")
    return Stored({key: held for key, held in pools.items() if held}, reservations)
