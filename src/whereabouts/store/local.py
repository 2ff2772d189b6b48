"""The embedded default datastore: one SQLite file per node, stdlib only.

Layout (schema version 2, kept in PRAGMA user_version):
    pools(network, cidr, node, version)                 one row per pool, version bumped on every write
    allocations(network, cidr, node, ipkey, address, container_id, ifname, podref, netconf)
    reservations(network, ipkey, address, container_id, ifname, podref)   overlapping-range guard
`netconf` is the network config name the address was allocated under (GC goes by it); version 1 lacked it,
and its rows read as '' (unknown) after the upgrade, which keeps them out of GC's reach.
`ipkey` is the address as fixed-width hex behind its version ('4:0a000005'), so it sorts numerically and a
CIDR is a key range. A transaction takes SQLite's write lock up front (BEGIN IMMEDIATE) and holds it while
the allocator decides: the CNI runtime's parallel calls on one node queue there, and a process killed at any
point leaves the previous committed state (WAL journal), never half an allocation.
"""

from __future__ import annotations

import os
import sqlite3

from whereabouts.errors import TryAgainLater
from whereabouts.model import ChangeSet, Owner, PoolKey, PoolState, Snapshot
from whereabouts.ranges import cidr_key_bounds, format_ip, from_sortable_key, sortable_key

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Sequence

SCHEMA_VERSION = 2
DB_NAME = "whereabouts.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (network, cidr, node)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS allocations (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL, netconf TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (network, cidr, node, ipkey)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allocations_by_attachment ON allocations (container_id, ifname);
CREATE TABLE IF NOT EXISTS reservations (
    network TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL,
    PRIMARY KEY (network, ipkey)) WITHOUT ROWID;
"""
# From version N to N + 1, for files written by an older plugin: existing rows are kept.
_UPGRADES = {1: "ALTER TABLE allocations ADD COLUMN netconf TEXT NOT NULL DEFAULT ''"}


class LocalTransaction:
    __slots__ = ("committed", "db", "snapshot")

    def __init__(self, db: sqlite3.Connection, snapshot: Snapshot, committed: bool = False) -> None:
        self.db = db
        self.snapshot = snapshot
        self.committed = committed

    def commit(self, changes: ChangeSet) -> bool:
        for change in changes.changes:
            key, ik = change.key, sortable_key(change.version, change.ip)
            if change.owner is None:
                self._release(changes.overlapping, key, ik, change.previous)
            else:
                self._hold(changes.overlapping, key, ik, format_ip(change.version, change.ip), change.owner)
        for key in dict.fromkeys(c.key for c in changes.changes):
            self.db.execute(
                "INSERT INTO pools VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET version = version + 1",
                (key.network, key.cidr, key.node),
            )
        self.db.execute("COMMIT")
        self.committed = True
        return True

    def _hold(self, overlapping: bool, key: PoolKey, ik: str, address: str, owner: Owner) -> None:
        row = (owner.container_id, owner.ifname, owner.podref)
        self.db.execute(
            "INSERT OR REPLACE INTO allocations (network, cidr, node, ipkey, address, container_id, ifname, podref, "
            "netconf) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.network, key.cidr, key.node, ik, address, *row, owner.netconf),
        )
        if overlapping:
            self.db.execute(
                "INSERT OR REPLACE INTO reservations VALUES (?, ?, ?, ?, ?, ?)", (key.network, ik, address, *row)
            )

    def _release(self, overlapping: bool, key: PoolKey, ik: str, previous: Owner | None) -> None:
        holder = (previous.container_id, previous.ifname) if previous else ("", "")
        self.db.execute(
            "DELETE FROM allocations WHERE network=? AND cidr=? AND node=? AND ipkey=? AND container_id=? AND ifname=?",
            (key.network, key.cidr, key.node, ik, *holder),
        )
        if overlapping:
            self.db.execute(
                "DELETE FROM reservations WHERE network=? AND ipkey=? AND container_id=? AND ifname=?",
                (key.network, ik, *holder),
            )


class LocalStore:
    def __init__(self, data_dir: str, *, busy_timeout: float = 10.0) -> None:
        self.path = os.path.join(data_dir, DB_NAME)
        try:
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise TryAgainLater(f"local datastore {self.path} unavailable: {exc}") from exc

    def _migrate(self) -> None:
        if self.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        self.db.execute("PRAGMA journal_mode=WAL")  # persistent: set once, with the schema
        self.db.execute("BEGIN IMMEDIATE")
        try:
            found = self.db.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise TryAgainLater(f"local datastore {self.path} has schema {found}, newer than this plugin's")
            if found == 0:  # a new file: the current layout at once
                for statement in _SCHEMA.split(";"):
                    self.db.execute(statement)
            else:
                for version in range(found, SCHEMA_VERSION):
                    self.db.execute(_UPGRADES[version])
            if found < SCHEMA_VERSION:
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> _Transacting:
        return _Transacting(self, keys, overlapping)

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            return  # SQLite may have rolled back already (e.g. after an I/O error): nothing was written

    def _snapshot(self, keys: Sequence[PoolKey], overlapping: bool) -> Snapshot:
        pools = {key: self._pool(key) for key in keys}
        reservations: dict[tuple[str, int, int], Owner] = {}
        if overlapping:
            for key in keys:
                lo, hi = cidr_key_bounds(key.cidr)
                rows = self.db.execute(
                    "SELECT ipkey, container_id, ifname, podref FROM reservations "
                    "WHERE network=? AND ipkey BETWEEN ? AND ?",
                    (key.network, lo, hi),
                )
                for ik, *owner in rows:
                    reservations[(key.network, *from_sortable_key(ik))] = Owner(*owner)
        return Snapshot(pools, reservations)

    def _pool(self, key: PoolKey) -> PoolState:
        args = (key.network, key.cidr, key.node)
        row = self.db.execute("SELECT version FROM pools WHERE network=? AND cidr=? AND node=?", args).fetchone()
        rows = self.db.execute(
            "SELECT ipkey, container_id, ifname, podref, netconf FROM allocations "
            "WHERE network=? AND cidr=? AND node=?",
            args,
        )
        allocations = {from_sortable_key(ik)[1]: Owner(*owner) for ik, *owner in rows}
        return PoolState(key, row[0] if row else None, allocations)

    def pools_holding(self, network: str, container_id: str, ifname: str) -> list[PoolKey]:
        rows = self._read(
            "SELECT DISTINCT network, cidr, node FROM allocations WHERE container_id=? AND ifname=? AND network=?",
            (container_id, ifname, network),
        )
        return sorted(PoolKey(*row) for row in rows)

    def forget_attachment(self, network: str, owner: Owner) -> None:
        return None  # commits are atomic: nothing is ever left half-written

    def abort(self, owner: Owner) -> None:
        return None

    def check_ready(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise TryAgainLater(f"local datastore {self.path} cannot take writes: {exc}") from exc

    def _read(self, sql: str, args: tuple[str, ...]) -> list[tuple[str, ...]]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise TryAgainLater(f"local datastore {self.path} failed: {exc}") from exc

    def close(self) -> None:
        self.db.close()


class _Transacting:
    """`with store.transaction(keys) as txn`: BEGIN IMMEDIATE and read the snapshot on entry, roll back on
    exit unless `txn.commit` ran; SQLite errors inside become TryAgainLater. (A class rather than
    `contextlib.contextmanager`: importing contextlib would cost every CNI call about half a millisecond.)"""

    __slots__ = ("keys", "overlapping", "store", "txn")

    def __init__(self, store: LocalStore, keys: Sequence[PoolKey], overlapping: bool) -> None:
        self.store, self.keys, self.overlapping = store, keys, overlapping
        self.txn: LocalTransaction | None = None

    def __enter__(self) -> LocalTransaction:
        store = self.store
        try:
            store.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise TryAgainLater(f"local datastore {store.path} busy: {exc}") from exc
        try:
            self.txn = LocalTransaction(store.db, store._snapshot(self.keys, self.overlapping))
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self.txn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.txn is None or not self.txn.committed:
            self.store._rollback()
        if isinstance(exc, sqlite3.Error):
            raise TryAgainLater(f"local datastore {self.store.path} failed: {exc}") from exc
