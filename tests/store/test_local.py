"""The SQLite store specifics: schema versioning, unreachable data dirs, persistence across processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from whereabouts.config import parse_ipam
from whereabouts.errors import InvalidConfig, TryAgainLater
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.service import IPAMService
from whereabouts.store.local import DB_NAME, ID_NAME, SCHEMA_VERSION, LocalStore, StoreLost, accept_loss

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


@pytest.mark.parametrize("below", ["", "store"], ids=["the file", "below the file"])
def test_data_dir_that_is_a_file_is_invalid_config(tmp_path: Path, below: str) -> None:
    """Not a transient failure (code 11 would make the runtime retry forever): a config error, code 7."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InvalidConfig, match=r"invalid local_data_dir .*not a directory"):
        LocalStore(str(blocker / below) if below else str(blocker))


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


def _open_and_hold(data: str, start: Any, ip: int, results: Any) -> None:
    start.wait()
    try:
        hold_one(Path(data), ip, f"c{ip}")
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def test_the_first_calls_on_a_node_all_at_once_each_set_up_or_open_the_new_store(tmp_path: Path) -> None:
    """The CNI runtime's first parallel calls on a node each find no store yet: switching it to WAL needs
    the file to itself, and SQLite fails (rather than waits) one of two callers asking at once. In CI, one of
    forty pods created at once got "database is locked". Twenty rounds of 32 processes released together
    (before the fix, every run failed)."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        data = str(tmp_path / f"node{round_}")
        start, results = ctx.Barrier(32), ctx.Queue()
        workers = [ctx.Process(target=_open_and_hold, args=(data, start, 167772161 + n, results)) for n in range(32)]
        for worker in workers:
            worker.start()
        said = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert [answer for answer in said if answer != "ok"] == [], f"round {round_}"
        assert held_ips(Path(data)) == [167772161 + n for n in range(32)]


def test_a_setup_that_waits_too_long_for_another_is_try_again(tmp_path: Path) -> None:
    import fcntl

    data = tmp_path / "busy"
    data.mkdir(mode=0o700)
    other = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)  # another call is setting the store up, and does not finish in time
        with pytest.raises(TryAgainLater, match="being set up by another call"):
            LocalStore(str(data), busy_timeout=0.2)
    finally:
        os.close(other)
    assert held_ips(data) == []  # once it is done, the store opens


def test_other_connection_sees_committed_state(tmp_path: Path) -> None:
    first = LocalStore(str(tmp_path))
    with first.transaction([KEY], overlapping=False) as txn:
        txn.commit(ChangeSet((Change(KEY, 4, 167772161, Owner("c", "eth0")),), ((KEY, None),), False))
    second = LocalStore(str(tmp_path))
    with second.transaction([KEY], overlapping=False) as txn:
        assert txn.snapshot.pools[KEY].allocations == {167772161: Owner("c", "eth0")}


def hold_one(directory: Path, ip: int = 167772161, cid: str = "c") -> None:
    store = LocalStore(str(directory))
    with store.transaction([KEY], overlapping=True) as txn:
        pool = txn.snapshot.pools[KEY]
        txn.commit(ChangeSet((Change(KEY, 4, ip, Owner(cid, "eth0")),), ((KEY, pool.version),), True))
    store.close()


def held_ips(directory: Path) -> list[int]:
    store = LocalStore(str(directory))
    with store.transaction([KEY], overlapping=True) as txn:
        ips = sorted(txn.snapshot.pools[KEY].allocations)
    store.close()
    return ips


def truncate(db: Path) -> None:
    db.write_bytes(b"")


def delete(db: Path) -> None:
    db.unlink()
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def replace_with_another_store(db: Path) -> None:
    other = db.parent.parent / "other"
    LocalStore(str(other)).close()
    delete(db)
    (other / DB_NAME).rename(db)


@pytest.mark.parametrize("lose", [truncate, delete, replace_with_another_store], ids=lambda f: f.__name__)
def test_a_lost_store_is_an_error_until_the_loss_is_accepted(tmp_path: Path, lose) -> None:
    """A store that existed and is gone, empty or replaced must not start empty: the addresses it held may
    still be in use. Code 11 until the operator accepts the loss; then the next call starts afresh."""
    data = tmp_path / "data"
    hold_one(data)
    lose(data / DB_NAME)
    for _ in range(2):  # and it stays lost: the failed open created nothing that passes for the store
        with pytest.raises(StoreLost, match=f"lost.*--accept-store-loss {data}") as caught:
            LocalStore(str(data))
        assert caught.value.code == 11
    moved = accept_loss(str(data))
    assert all(".lost-" in path for path in moved)
    assert held_ips(data) == []
    assert (data / ID_NAME).exists()  # the new store is guarded in its turn


def test_a_brand_new_directory_starts_empty_and_an_intact_one_keeps_its_addresses(tmp_path: Path) -> None:
    data = tmp_path / "new"
    assert held_ips(data) == []
    hold_one(data)
    assert held_ips(data) == [167772161]
    (data / ID_NAME).unlink()  # an id file lost on its own is rebuilt from the database
    assert held_ips(data) == [167772161]
    assert (data / ID_NAME).read_text().strip().isdigit()


def test_a_store_written_before_the_id_existed_is_adopted(tmp_path: Path) -> None:
    data = tmp_path / "old"
    hold_one(data)
    (data / ID_NAME).unlink()
    db = sqlite3.connect(data / DB_NAME)
    db.execute("PRAGMA application_id=0")  # as the previous release left it
    db.commit()
    db.close()
    assert held_ips(data) == [167772161]
    assert (data / ID_NAME).exists()


def test_files_are_private_from_creation(tmp_path: Path) -> None:
    data = tmp_path / "private"
    hold_one(data)
    for path in [data, *data.iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {path.stat().st_mode & 0o777:o}"


def test_a_symlinked_database_is_refused(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    hold_one(elsewhere)
    data.mkdir(mode=0o700)
    (data / DB_NAME).symlink_to(elsewhere / DB_NAME)
    with pytest.raises(InvalidConfig, match="symlink"):
        LocalStore(str(data))


def test_a_symlinked_data_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InvalidConfig, match="symlink"):
        LocalStore(str(tmp_path / "link"))


def test_a_data_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "open"
    data.mkdir()
    data.chmod(0o777)
    with pytest.raises(InvalidConfig, match="writable by it alone"):
        LocalStore(str(data))


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
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


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
