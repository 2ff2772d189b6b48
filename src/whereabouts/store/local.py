"""The embedded default datastore: one SQLite file per node, stdlib only.

Layout (schema version 3, kept in PRAGMA user_version):
    pools(network, cidr, node, version)                 one row per pool, version bumped on every write
    allocations(network, cidr, node, ipkey, address, container_id, ifname, podref, netconf, <sticky columns>)
    reservations(network, ipkey, address, container_id, ifname, podref, <sticky columns>)   overlapping guard
    <sticky columns>: sticky, retained, expires, controller, fixed, attached_on (see model.Owner; docs/sticky.md)
`netconf` is the network config name the address was allocated under (GC goes by it); version 1 lacked it,
and its rows read as '' (unknown) after the upgrade, which keeps them out of GC's reach. Version 2 lacked the
sticky columns: its rows read as held addresses that stick to nothing.
`ipkey` is the address as fixed-width hex behind its version ('4:0a000005'), so it sorts numerically and a
CIDR is a key range. A transaction takes SQLite's write lock up front (BEGIN IMMEDIATE) and holds it while
the allocator decides: the CNI runtime's parallel calls on one node queue there, and a process killed at any
point leaves the previous committed state (WAL journal), never half an allocation.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from itertools import groupby

from whereabouts import deadline
from whereabouts.errors import AddressTaken, InvalidConfig, TryAgainLater, WhereaboutsError
from whereabouts.model import Change, ChangeSet, Owner, PoolKey, PoolState, Snapshot, overwrite_refused
from whereabouts.ranges import cidr_key_bounds, format_ip, from_sortable_key, sortable_key

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence
    from typing import Any

    from whereabouts.inventory import Tally

SCHEMA_VERSION = 3
DB_NAME = "whereabouts.db"
ID_NAME = "whereabouts.db.id"  # the store's id, beside it: proof that a store existed here
ACCEPT_LOSS = "whereabouts-node --accept-store-loss"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (network, cidr, node)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS allocations (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL, netconf TEXT NOT NULL DEFAULT '',
    {sticky}, PRIMARY KEY (network, cidr, node, ipkey)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allocations_by_attachment ON allocations (container_id, ifname);
CREATE TABLE IF NOT EXISTS reservations (
    network TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL,
    {sticky}, PRIMARY KEY (network, ipkey)) WITHOUT ROWID;
"""
_STICKY_COLUMNS = (
    ("sticky", "TEXT NOT NULL DEFAULT ''"),
    ("retained", "INTEGER NOT NULL DEFAULT 0"),
    ("expires", "INTEGER NOT NULL DEFAULT 0"),
    ("controller", "TEXT NOT NULL DEFAULT ''"),
    ("fixed", "INTEGER NOT NULL DEFAULT 0"),
    ("attached_on", "TEXT NOT NULL DEFAULT ''"),  # the node (`node` names the pool's node slice)
)
_SCHEMA = _SCHEMA.format(sticky=", ".join(f"{name} {kind}" for name, kind in _STICKY_COLUMNS))
_STICKY = ", ".join(name for name, _ in _STICKY_COLUMNS)
# From version N to N + 1, for files written by an older plugin: existing rows are kept.
_UPGRADES = {
    1: ["ALTER TABLE allocations ADD COLUMN netconf TEXT NOT NULL DEFAULT ''"],
    2: [f"ALTER TABLE {table} ADD COLUMN {name} {kind}" for table in ("allocations", "reservations")
        for name, kind in _STICKY_COLUMNS],
}  # fmt: skip


CHUNK = 200  # pools per snapshot query: 600 parameters, under the 999 of SQLite builds older than 3.32
FEW = 8  # up to this many pools, one plain query per pool: a CNI call's fresh connection prepares them cheaper
# An upsert's guard: the row found is the writing attachment's, or the holder its decision replaces (the last
# two parameters: NULL for none), never anyone else's.
_REPLACEABLE = (
    "(container_id = excluded.container_id AND ifname = excluded.ifname) OR (container_id = ? AND ifname = ?)"
)
_UPDATED_RESERVATION = ", ".join(
    f"{name} = excluded.{name}" for name in ("address", "container_id", "ifname", "podref", *_STICKY.split(", "))
)
_UPDATED_ALLOCATION = f"{_UPDATED_RESERVATION}, netconf = excluded.netconf"
# Join the wanted pools, given as a VALUES list, on the tables' primary keys; or look one pool up.
_SELECT_POOLS = (
    "WITH w(network, cidr, node) AS (VALUES {}) SELECT p.network, p.cidr, p.node, p.version FROM w "
    "JOIN pools AS p ON p.network = w.network AND p.cidr = w.cidr AND p.node = w.node"
)
_SELECT_POOL = "SELECT network, cidr, node, version FROM pools WHERE network=? AND cidr=? AND node=?"
_SELECT_ALLOCATIONS = (
    "WITH w(network, cidr, node) AS (VALUES {}) SELECT a.network, a.cidr, a.node, a.ipkey, a.container_id, "
    "a.ifname, a.podref, a.netconf, " + ", ".join(f"a.{name}" for name, _ in _STICKY_COLUMNS) + " FROM w "
    "JOIN allocations AS a ON a.network = w.network AND a.cidr = w.cidr AND a.node = w.node"
)
_SELECT_POOL_ALLOCATIONS = (
    f"SELECT network, cidr, node, ipkey, container_id, ifname, podref, netconf, {_STICKY} FROM allocations "
    "WHERE network=? AND cidr=? AND node=?"
)
_SELECT_RESERVATIONS = (
    "WITH w(network, lo, hi) AS (VALUES {}) SELECT r.network, r.ipkey, r.container_id, r.ifname, r.podref, '', "
    + ", ".join(f"r.{name}" for name, _ in _STICKY_COLUMNS)
    + " FROM w "
    "JOIN reservations AS r ON r.network = w.network AND r.ipkey BETWEEN w.lo AND w.hi"
)
_SELECT_CIDR_RESERVATIONS = (
    f"SELECT network, ipkey, container_id, ifname, podref, '', {_STICKY} FROM reservations "
    "WHERE network=? AND ipkey BETWEEN ? AND ?"
)


_TALLY = (  # entries, retained ones, and those on an IPv4 .0 address ('4:0a000100')
    "SELECT count(*), sum(retained != 0), sum(substr(ipkey, -2) = '00') FROM allocations "
    "WHERE network=? AND cidr=? AND node=? AND ipkey BETWEEN ? AND ?"
)


def _chunks(rows: list[tuple[str, str, str]], many: str, one: str) -> Iterator[tuple[str, list[str]]]:
    """(statement, parameters) for `rows` of three: a join per CHUNK rows, or with FEW rows or fewer one
    plain query each."""
    if len(rows) <= FEW:
        yield from ((one, list(row)) for row in rows)
        return
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i : i + CHUNK]
        yield many.format(", ".join(["(?, ?, ?)"] * len(chunk))), [value for row in chunk for value in row]


class LocalTransaction:
    __slots__ = ("committed", "db", "snapshot")
    informed = False  # (its commits never lose: the database is locked for the transaction)

    def __init__(self, db: sqlite3.Connection, snapshot: Snapshot, committed: bool = False) -> None:
        self.db = db
        self.snapshot = snapshot
        self.committed = committed

    def commit(self, changes: ChangeSet) -> bool:
        # One statement per table for each run of holds or of releases (thousands of ranges make thousands
        # of changes); runs keep the order of the changes.
        for is_hold, run in groupby(changes.changes, key=lambda change: change.owner is not None):
            (self._hold if is_hold else self._release)(changes.overlapping, list(run))
        self.db.executemany(
            "INSERT INTO pools VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET version = version + 1",
            [(key.network, key.cidr, key.node) for key in dict.fromkeys(c.key for c in changes.changes)],
        )
        self.db.execute("COMMIT")
        self.committed = True
        return True

    def _hold(self, overlapping: bool, changes: list[Change]) -> None:
        """Write each hold over nothing, over the same attachment's record, or over the holder the decision
        saw (`previous`): never over anyone else's. The decision was made under the write lock from what it
        read, so finding one is a decision gone wrong: refused (rolled back), not written over."""
        held = [(c, c.owner) for c in changes if c.owner is not None]
        rows = [
            (*_address_row(c), format_ip(c.version, c.ip), owner.container_id, owner.ifname, owner.podref)
            for c, owner in held
        ]
        sticky = [_sticky_row(owner) for _, owner in held]
        previous = [_holder_or_none(c.previous) for c, _ in held]
        self._guarded(
            held,
            f"INSERT INTO allocations (network, cidr, node, ipkey, address, container_id, ifname, podref, netconf, "
            f"{_STICKY}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT (network, cidr, node, ipkey) DO UPDATE SET {_UPDATED_ALLOCATION} WHERE {_REPLACEABLE}",
            [
                (*row, owner.netconf, *extra, *prev)
                for row, (_, owner), extra, prev in zip(rows, held, sticky, previous, strict=True)
            ],
        )
        if overlapping:  # the network-wide record: who, not under which network config
            self._guarded(
                held,
                f"INSERT INTO reservations (network, ipkey, address, container_id, ifname, podref, {_STICKY}) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"ON CONFLICT (network, ipkey) DO UPDATE SET {_UPDATED_RESERVATION} WHERE {_REPLACEABLE}",
                [(r[0], *r[3:], *extra, *prev) for r, extra, prev in zip(rows, sticky, previous, strict=True)],
            )

    def _guarded(self, held: list[tuple[Change, Owner]], sql: str, rows: list[tuple[object, ...]]) -> None:
        written = self.db.executemany(sql, rows).rowcount
        if written != len(rows):  # (an upsert whose WHERE fails writes nothing, and counts nothing)
            raise _overwrite_refused(self.db, held)

    def _release(self, overlapping: bool, changes: list[Change]) -> None:
        """Remove each address only from the holder the decision saw (`previous`); its reservation too, unless
        an entry of the same attachment in another pool of the network still holds the address (an entry
        written before a range of its config was dropped or widened): that entry stands behind it."""
        rows = [(*_address_row(c), *_holder(c.previous)) for c in changes]
        self.db.executemany(
            "DELETE FROM allocations WHERE network=? AND cidr=? AND node=? AND ipkey=? AND container_id=? AND ifname=?",
            rows,
        )
        if overlapping:
            self.db.executemany(
                "DELETE FROM reservations WHERE network=:network AND ipkey=:ipkey AND container_id=:cid AND "
                "ifname=:ifname AND NOT EXISTS (SELECT 1 FROM allocations AS a WHERE a.container_id=:cid AND "
                "a.ifname=:ifname AND a.network=:network AND a.ipkey=:ipkey)",
                [{"network": r[0], "ipkey": r[3], "cid": r[4], "ifname": r[5]} for r in rows],
            )


def _address_row(change: Change) -> tuple[str, str, str, str]:
    """(network, cidr, node, ipkey) of a change."""
    key = change.key
    return key.network, key.cidr, key.node, sortable_key(change.version, change.ip)


def _sticky_row(owner: Owner) -> tuple[str, int, int, str, int, str]:
    return owner.sticky, owner.retained, owner.expires, owner.controller, int(owner.fixed), owner.node


def _owner(row: Sequence[object]) -> Owner:
    """(container_id, ifname, podref, netconf, <sticky columns>) as read."""
    container_id, ifname, podref, netconf, sticky, retained, expires, controller, fixed, node = row
    return Owner(str(container_id), str(ifname), str(podref), str(netconf), str(sticky), int(retained),  # type: ignore[call-overload]
                 int(expires), str(controller), bool(fixed), str(node))  # type: ignore[call-overload]  # fmt: skip


def _holder(owner: Owner | None) -> tuple[str, str]:
    return (owner.container_id, owner.ifname) if owner else ("", "")


def _holder_or_none(owner: Owner | None) -> tuple[str | None, str | None]:
    """A hold's `previous` for its guard: NULL (equal to nothing) for none."""
    return (owner.container_id, owner.ifname) if owner else (None, None)


def _overwrite_refused(db: sqlite3.Connection, held: list[tuple[Change, Owner]]) -> AddressTaken:
    """The error of a hold that found another holder's record: the first such hold, and that holder."""
    for change, _ in held:
        network, cidr, node, ipkey = _address_row(change)
        found = db.execute(
            "SELECT container_id, ifname FROM allocations WHERE network=? AND cidr=? AND node=? AND ipkey=? "
            "UNION ALL SELECT container_id, ifname FROM reservations WHERE network=? AND ipkey=?",
            (network, cidr, node, ipkey, network, ipkey),
        ).fetchall()
        for refused in (overwrite_refused(change, Owner(str(row[0]), str(row[1]))) for row in found):
            if refused:
                return AddressTaken(refused)
    return AddressTaken("a hold found another holder's record: not written over")


class LocalStore:
    finds_attachments = True  # (allocations_by_attachment)
    max_changes = 0  # (see storage.Store)

    def __init__(self, data_dir: str, *, busy_timeout: float = 10.0) -> None:
        self.path = os.path.join(data_dir, DB_NAME)
        try:
            _own_directory(data_dir)
            expected = _read_store_id(data_dir)
            if expected is None:
                _create_private(self.path)  # a brand-new store: the file is made 0600, never by SQLite
            elif not os.path.lexists(self.path):
                raise StoreLost(self.path, expected, "the database file is gone")
            elif os.lstat(self.path).st_size == 0:  # (a store in WAL mode has written its header at least)
                raise StoreLost(self.path, expected, "the database file is empty")
            _own_file(self.path)
            wait = deadline.remaining(busy_timeout)  # for the node's other calls to finish their writes
            # one call at a time uses it, but the node daemon keeps it for calls served on other threads
            self.db = sqlite3.connect(
                _uri(self.path), timeout=wait, isolation_level=None, uri=True, check_same_thread=False
            )
            self.busy_timeout, self.reused = busy_timeout, False
            self.db.execute("PRAGMA synchronous=NORMAL")
            store_id = self._migrate(expected)
            info = os.lstat(self.path)
            self.identity, self.store_id = (info.st_dev, info.st_ino), store_id
            if expected is None:
                _write_store_id(data_dir, store_id)
        except WhereaboutsError:
            raise
        except (NotADirectoryError, FileExistsError) as exc:
            raise InvalidConfig(f"invalid local_data_dir {data_dir!r}: not a directory ({exc.strerror})") from None
        except (OSError, sqlite3.Error) as exc:
            raise TryAgainLater(f"local datastore {self.path} unavailable: {exc}") from exc

    def _migrate(self, expected: int | None) -> int:
        """Bring the schema up to date and check the store's identity (PRAGMA application_id, mirrored in
        the id file beside it: a database that was emptied or replaced must not pass for the store that
        held the node's addresses). Returns the store's id."""
        version, store_id = self._header()
        if version == SCHEMA_VERSION and store_id and store_id == (expected or store_id):
            return store_id
        # Setting up is done by one process at a time: switching to WAL needs the file to itself, and when
        # two callers ask for that at once SQLite fails one at once ("database is locked") instead of
        # letting it wait (its deadlock rule): the CNI runtime's first parallel calls on a node did this.
        directory = _setup_lock(os.path.dirname(self.path), self.busy_timeout)
        try:
            return self._set_up(expected)
        finally:
            os.close(directory)  # (closing releases the lock)

    def _set_up(self, expected: int | None) -> int:
        self.db.execute("PRAGMA journal_mode=WAL")  # persistent: set once, with the schema
        self.db.execute("BEGIN IMMEDIATE")
        try:
            found, store_id = self._header()  # another process may have set it up meanwhile
            if found > SCHEMA_VERSION:
                raise TryAgainLater(f"local datastore {self.path} has schema {found}, newer than this plugin's")
            if expected is not None and store_id != expected:
                what = "empty" if not found else f"store {store_id}"
                raise StoreLost(self.path, expected, f"the database file is {what}")
            if found == 0:  # a new file: the current layout at once
                for statement in _SCHEMA.split(";"):
                    self.db.execute(statement)
            else:
                for version in range(found, SCHEMA_VERSION):
                    for statement in _UPGRADES[version]:
                        self.db.execute(statement)
            if found < SCHEMA_VERSION:
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if not store_id:
                store_id = int.from_bytes(os.urandom(4), "big") >> 1 or 1  # a positive 31-bit id
                self.db.execute(f"PRAGMA application_id={store_id}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return store_id

    def _header(self) -> tuple[int, int]:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        return version, self.db.execute("PRAGMA application_id").fetchone()[0]

    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> _Transacting:
        return _Transacting(self, keys, overlapping)

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            return  # SQLite may have rolled back already (e.g. after an I/O error): nothing was written

    def _snapshot(self, keys: Sequence[PoolKey], overlapping: bool) -> Snapshot:
        """The pools and, with overlapping ranges, the reservations inside their CIDRs. A config may list
        thousands of ranges: then a few joins on the primary keys per CHUNK pools, not queries per pool."""
        pools = {key: PoolState(key) for key in keys}
        by_row = {(key.network, key.cidr, key.node): state for key, state in pools.items()}
        wanted = list(by_row)
        for sql, params in _chunks(wanted, _SELECT_POOLS, _SELECT_POOL):
            for *row, version in self.db.execute(sql, params):
                by_row[tuple(row)].version = version
        for sql, params in _chunks(wanted, _SELECT_ALLOCATIONS, _SELECT_POOL_ALLOCATIONS):
            for network, cidr, node, ik, *owner in self.db.execute(sql, params):
                by_row[(network, cidr, node)].allocations[from_sortable_key(ik)[1]] = _owner(owner)
        reservations: dict[tuple[str, int, int], Owner] = {}
        bounds = list(dict.fromkeys((key.network, *cidr_key_bounds(key.cidr)) for key in pools)) if overlapping else []
        for sql, params in _chunks(bounds, _SELECT_RESERVATIONS, _SELECT_CIDR_RESERVATIONS):
            for network, ik, *owner in self.db.execute(sql, params):
                reservations[(network, *from_sortable_key(ik))] = _owner(owner)
        return Snapshot(pools, reservations)

    def pools_holding(self, network: str, container_id: str, ifname: str) -> list[PoolKey]:
        rows = self._read(
            "SELECT DISTINCT network, cidr, node FROM allocations WHERE container_id=? AND ifname=? AND network=?",
            (container_id, ifname, network),
        )
        return sorted(PoolKey(*row) for row in rows)

    def pools_of(self, network: str) -> list[PoolKey]:
        return sorted(PoolKey(*row) for row in self._read("SELECT network, cidr, node FROM pools WHERE network=?",
                                                          (network,)))  # fmt: skip

    def pools_with_sticky(self, network: str, sticky: str) -> list[PoolKey]:
        rows = self._read("SELECT DISTINCT network, cidr, node FROM allocations WHERE sticky=? AND network=?",
                          (sticky, network))  # fmt: skip
        return sorted(PoolKey(*row) for row in rows)

    # -- the operator's tools (whereabouts.inventory): never on a CNI call's path ------------------------------

    def pool_keys(self, networks: Collection[str] = ()) -> list[PoolKey]:
        return sorted(PoolKey(*row) for row in self._read("SELECT network, cidr, node FROM pools", ()))

    def tally(self, key: PoolKey, spans: Sequence[tuple[int, int]]) -> list[Tally]:
        """Counted in SQL over the primary key's range: a /8 of a million entries in a fraction of a second."""
        from whereabouts.inventory import Tally

        version = key.version
        counted = []
        for lo, hi in spans:
            row = self._read(_TALLY, (key.network, key.cidr, key.node, sortable_key(version, lo),
                                      sortable_key(version, hi)))[0]  # fmt: skip
            counted.append(Tally(int(row[0]), int(row[1] or 0), int(row[2] or 0) if version == 4 else 0))
        return counted

    def reserved(self, networks: Collection[str] = ()) -> dict[tuple[str, int, int], Owner]:
        rows = self._read(f"SELECT network, ipkey, container_id, ifname, podref, '', {_STICKY} FROM reservations", ())
        return {(str(row[0]), *from_sortable_key(str(row[1]))): _owner(row[2:]) for row in rows}

    def pods(self) -> None:
        return None

    def forget_attachment(self, network: str, owner: Owner) -> None:
        return None  # commits are atomic: nothing is ever left half-written

    def abort(self, owner: Owner) -> None:
        return None

    def node_slices(self) -> None:
        return None

    def reusable(self) -> bool:
        """True while the database file is still the one it opened, not emptied, and its id file still says
        so (deleted, truncated or replaced since: reopen, which finds the store lost rather than writing to a
        file nobody else sees or trusting pages it cached)."""
        self.reused = True
        try:
            info = os.lstat(self.path)
            same_file = (info.st_dev, info.st_ino) == self.identity and info.st_size > 0  # not truncated
            return same_file and _read_store_id(os.path.dirname(self.path)) == self.store_id
        except (OSError, ValueError):
            return False

    def check_ready(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise TryAgainLater(f"local datastore {self.path} cannot take writes: {exc}") from exc

    def _read(self, sql: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise TryAgainLater(f"local datastore {self.path} failed: {exc}") from exc

    def close(self) -> None:
        if self._emptied():
            # Closing the last connection checkpoints the write-ahead log into the database file: into an
            # emptied one, that would bring back some pages and not others, a store that looks whole and
            # is not. Leave it open: the loss must stay visible until an operator accepts it.
            _ABANDONED.append(self.db)
            return
        self.db.close()

    def _emptied(self) -> bool:
        try:
            info = os.lstat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == getattr(self, "identity", None) and info.st_size == 0


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
            if store.reused:  # the wait for the write lock ends with this call's deadline
                store.db.execute(f"PRAGMA busy_timeout={int(deadline.remaining(store.busy_timeout) * 1000)}")
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


_ABANDONED: list[sqlite3.Connection] = []  # connections to an emptied database, never closed (see close)


class StoreLost(TryAgainLater):
    """The store that held this node's addresses is gone or empty: handing addresses out from an empty one
    could give a running container's address to another. Code 11 (and STATUS fails) until an operator
    restores the file or accepts the loss."""

    def __init__(self, path: str, store_id: int, what: str) -> None:
        directory = os.path.dirname(path)
        super().__init__(
            f"local datastore {path} is lost: {what}, but {os.path.join(directory, ID_NAME)} says store {store_id} "
            "was here and its addresses may still be in use. Restore the file, or accept the loss (every "
            f"address it held becomes free) with `{ACCEPT_LOSS} {directory}`"
        )


def store_absent(data_dir: str) -> bool:
    """Whether no store is (nor was: its id file would say so) in `data_dir`, which the first ADD could make:
    opening one there creates it, which the verbs that only read (CHECK, STATUS) must not. False where opening
    fails (a file in the way, a directory of someone else's): that says what is wrong."""
    if not os.path.lexists(data_dir):
        parent = os.path.dirname(data_dir)
        while parent != os.path.dirname(parent) and not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        return os.path.isdir(parent)
    if not stat.S_ISDIR(os.lstat(data_dir).st_mode):
        return False
    _own_directory(data_dir)  # (there already: made by nobody here)
    return not any(os.path.lexists(os.path.join(data_dir, name)) for name in (DB_NAME, ID_NAME))


def _own_directory(path: str) -> None:
    """The data directory: created 0700 if missing; refused if it is a symlink, or someone else's, or others
    may write to it (they could plant a symlink or a database of their own)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise InvalidConfig(f"invalid local_data_dir {path!r}: {what}")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise InvalidConfig(
            f"invalid local_data_dir {path!r}: owned by uid {info.st_uid} with mode {info.st_mode & 0o777:o}; "
            f"it must belong to uid {os.geteuid()} and be writable by it alone"
        )


def _setup_lock(directory: str, cap: float) -> int:
    """An exclusive flock on the data directory, waited for until `cap` seconds or the call's deadline; the
    directory's descriptor is returned (close it to release). A process killed while holding it releases it."""
    import fcntl
    import time

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        until = time.monotonic() + deadline.remaining(cap)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= until:
                    raise TryAgainLater(f"local datastore in {directory} is being set up by another call") from None
                time.sleep(0.005)
    except BaseException:
        os.close(fd)
        raise


def _own_file(path: str) -> None:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        raise InvalidConfig(
            f"invalid local_data_dir: {path} is not a regular file of uid {os.geteuid()} (a symlink, or planted)"
        )


def _create_private(path: str) -> None:
    try:  # noqa: SIM105 (contextlib costs every CNI call its import)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        pass  # SQLite's journal files take the database file's mode


def _read_store_id(directory: str) -> int | None:
    try:
        with open(os.path.join(directory, ID_NAME), "rb") as handle:
            text = handle.read(32).strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) else None


def _write_store_id(directory: str, store_id: int) -> None:
    path = os.path.join(directory, ID_NAME)
    staging = f"{path}.{os.urandom(6).hex()}.tmp"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, f"{store_id}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(staging, path)


def _uri(path: str) -> str:
    """A file: URI opening an existing database only (mode=rw): SQLite must never create it behind our back."""
    escaped = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{escaped}?mode=rw"


def accept_loss(directory: str) -> list[str]:
    """The operator's decision that the store in `directory` is lost: set what is left aside (renamed with
    a timestamp, never deleted) and drop the id file, so that the next call starts an empty store."""
    import contextlib
    import time

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            os.rename(path, f"{path}.lost-{stamp}")
            moved.append(f"{path}.lost-{stamp}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, ID_NAME))
    return moved
