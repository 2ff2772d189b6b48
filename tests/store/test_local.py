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
