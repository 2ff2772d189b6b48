"""The SQLite store specifics: schema versioning, unreachable data dirs, persistence across processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from whereabouts.errors import TryAgainLater
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
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


def test_snapshot_of_many_pools_reads_them_all_in_a_few_statements(tmp_path: Path) -> None:
    """A config with thousands of ranges: the snapshot joins the wanted pools in chunks instead of three
    queries per pool, and still reads every pool's version, allocations and reservations."""
    keys = [PoolKey("net", f"10.{i >> 8}.{i & 255}.0/24") for i in range(1000)]  # five chunks
    store = LocalStore(str(tmp_path))
    holder = Owner("ctr-a", "eth0", "ns/a")
    changes = tuple(Change(key, 4, (10 << 24) + (i << 8) + 7, holder) for i, key in enumerate(keys[::2]))
    with store.transaction(keys, overlapping=True) as txn:
        txn.commit(ChangeSet(changes, (), True))
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    with store.transaction(keys, overlapping=True) as txn:
        snapshot = txn.snapshot
    store.db.set_trace_callback(None)
    assert len(statements) <= 20, f"{len(statements)} statements for {len(keys)} pools"
    assert [snapshot.pools[key].version for key in keys] == [1, None] * 500
    assert {(c.key, c.ip): c.owner for c in changes} == {
        (key, ip): who for key in keys for ip, who in snapshot.pools[key].allocations.items()
    }
    assert snapshot.reservations == {("net", 4, c.ip): holder for c in changes}


def test_commit_of_holds_then_releases_keeps_their_order(tmp_path: Path) -> None:
    """Changes go to SQLite as runs of holds and of releases: a release after a hold of the same address
    still ends with the address free, and a hold after a release with it held."""
    store = LocalStore(str(tmp_path))
    a, b = Owner("ctr-a", "eth0"), Owner("ctr-b", "eth0")
    ip = 167772161
    sequence = (Change(KEY, 4, ip, a), Change(KEY, 4, ip, None, previous=a), Change(KEY, 4, ip, b))
    with store.transaction([KEY], overlapping=True) as txn:
        txn.commit(ChangeSet(sequence, (), True))
    with store.transaction([KEY], overlapping=True) as txn:
        assert txn.snapshot.pools[KEY].allocations == {ip: b}
        assert txn.snapshot.reservations == {("", 4, ip): b}
    with store.transaction([KEY], overlapping=True) as txn:
        txn.commit(ChangeSet(sequence[1:2], (), True))
    with store.transaction([KEY], overlapping=True) as txn:
        assert txn.snapshot.pools[KEY].allocations == {ip: b}  # the release named a, not b: b keeps it
