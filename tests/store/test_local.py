"""The SQLite store specifics: schema versioning, unreachable data dirs, persistence across processes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from whereabouts.config import parse_ipam
from whereabouts.errors import TryAgainLater
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.service import IPAMService
from whereabouts.store.local import DB_NAME, SCHEMA_VERSION, LocalStore

KEY = PoolKey("", "10.0.0.0/24")


def test_schema_version_recorded_and_wal(tmp_path: Path) -> None:
    LocalStore(str(tmp_path)).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    LocalStore(str(tmp_path)).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    with pytest.raises(TryAgainLater, match="newer than this plugin"):
        LocalStore(str(tmp_path))


def test_data_dir_that_cannot_exist_is_try_again(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TryAgainLater, match="unavailable"):
        LocalStore(str(blocker / "store"))


def test_locked_database_times_out_with_try_again(tmp_path: Path) -> None:
    LocalStore(str(tmp_path)).close()
    holder = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    store = LocalStore(str(tmp_path), busy_timeout=0.2)
    with pytest.raises(TryAgainLater, match="busy"), store.transaction([KEY], overlapping=True):
        pass
    holder.execute("ROLLBACK")
    with store.transaction([KEY], overlapping=True) as txn:
        assert txn.commit(ChangeSet((Change(KEY, 4, 167772161, Owner("c", "eth0")),), ((KEY, None),), True))


def test_other_connection_sees_committed_state(tmp_path: Path) -> None:
    first = LocalStore(str(tmp_path))
    with first.transaction([KEY], overlapping=False) as txn:
        txn.commit(ChangeSet((Change(KEY, 4, 167772161, Owner("c", "eth0")),), ((KEY, None),), False))
    second = LocalStore(str(tmp_path))
    with second.transaction([KEY], overlapping=False) as txn:
        assert txn.snapshot.pools[KEY].allocations == {167772161: Owner("c", "eth0")}


# The layout a plugin before network config names wrote (schema version 1), as it wrote it.
V1_SCHEMA = """
CREATE TABLE pools (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (network, cidr, node)) WITHOUT ROWID;
CREATE TABLE allocations (
    network TEXT NOT NULL, cidr TEXT NOT NULL, node TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL,
    PRIMARY KEY (network, cidr, node, ipkey)) WITHOUT ROWID;
CREATE INDEX allocations_by_attachment ON allocations (container_id, ifname);
CREATE TABLE reservations (
    network TEXT NOT NULL, ipkey TEXT NOT NULL, address TEXT NOT NULL,
    container_id TEXT NOT NULL, ifname TEXT NOT NULL, podref TEXT NOT NULL,
    PRIMARY KEY (network, ipkey)) WITHOUT ROWID;
INSERT INTO pools VALUES ('', '10.0.0.0/24', '', 3);
INSERT INTO allocations VALUES ('', '10.0.0.0/24', '', '4:0a000005', '10.0.0.5', 'old', 'eth0', 'ns/old');
INSERT INTO reservations VALUES ('', '4:0a000005', '10.0.0.5', 'old', 'eth0', 'ns/old');
PRAGMA user_version=1;
"""


def test_version_1_file_is_upgraded_keeping_its_rows_unnamed(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db:
        db.executescript(V1_SCHEMA)
    cfg = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24", "local_data_dir": str(tmp_path)}, "netA")
    store = LocalStore(str(tmp_path))
    with store.transaction([KEY], overlapping=True) as txn:
        assert txn.snapshot.pools[KEY].version == 3
        assert txn.snapshot.pools[KEY].allocations == {167772165: Owner("old", "eth0", "ns/old")}  # name unknown
        assert txn.snapshot.reservations == {("", 4, 167772165): Owner("old", "eth0", "ns/old")}
    service = IPAMService(store)
    (assigned,) = service.add(cfg, Owner("new", "eth0"))
    assert assigned.address == "10.0.0.1/24"
    assert service.gc(cfg, set()) == 1  # netA's own entry only: the one from before names is never collected
    with store.transaction([KEY], overlapping=True) as txn:
        assert txn.snapshot.pools[KEY].allocations == {167772165: Owner("old", "eth0", "ns/old")}
    store.close()
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
