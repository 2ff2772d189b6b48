"""Many CNI processes at once on one node, and processes killed mid-call: never two holders of one address."""

from __future__ import annotations

import ipaddress
import json
import random
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import PLUGIN, netconf, run_cni

pytestmark = pytest.mark.slow


def conf(tmp_path: Path) -> dict:
    return netconf(tmp_path, range="10.60.0.0/22", exclude=["10.60.0.1"])


def rows(tmp_path: Path, table: str) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(tmp_path / "whereabouts.db")
    try:
        return db.execute(f"SELECT address, container_id, ifname FROM {table} ORDER BY ipkey").fetchall()
    finally:
        db.close()


def assert_consistent(tmp_path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(tmp_path / "whereabouts.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    held = rows(tmp_path, "allocations")
    assert held == rows(tmp_path, "reservations"), "pool and overlapping reservations disagree"
    owners = [(cid, ifname) for _, cid, ifname in held]
    assert len(owners) == len(set(owners)), "an attachment holds two addresses"
    return held


def test_100_parallel_adds_all_distinct_lowest_first(tmp_path: Path) -> None:
    config = conf(tmp_path)
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda n: run_cni("ADD", config, container_id=f"par-{n}"), range(100)))
    assert [r.returncode for r in results] == [0] * 100, [r.stdout for r in results if r.returncode]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 100
    # dense from the bottom: .2 up (the network address is never picked, .1 is excluded)
    expected = {f"10.60.0.{n}/22" for n in range(2, 102)}
    assert set(addresses) == expected
    held = assert_consistent(tmp_path)
    assert len(held) == 100
    with ThreadPoolExecutor(max_workers=100) as pool:
        dels = list(pool.map(lambda n: run_cni("DEL", config, container_id=f"par-{n}"), range(100)))
    assert [d.returncode for d in dels] == [0] * 100
    assert rows(tmp_path, "allocations") == [] and rows(tmp_path, "reservations") == []


def start_add(tmp_path: Path, container_id: str) -> subprocess.Popen[bytes]:
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "/var/run/netns/x",
        "CNI_PATH": "/usr/lib/cni",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen([PLUGIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf(tmp_path)).encode())
    proc.stdin.close()
    return proc


def test_sigkill_mid_add_leaves_whole_allocations_or_none(tmp_path: Path) -> None:
    rnd = random.Random(7)
    killed: list[str] = []
    finished: dict[str, str] = {}
    run_cni("ADD", conf(tmp_path), container_id="warm-up")  # schema exists: kills land in the ADD itself
    for round_ in range(40):
        procs = {f"k{round_}-{n}": start_add(tmp_path, f"k{round_}-{n}") for n in range(4)}
        time.sleep(rnd.uniform(0.0, 0.06))
        for cid, proc in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            assert proc.stdout is not None
            out = proc.stdout.read().decode()
            # a process may finish between poll() and the signal: its exit status says which happened
            if proc.wait() == 0:
                finished[cid] = json.loads(out)["ips"][0]["address"]
            else:
                assert proc.returncode == -signal.SIGKILL, out
                killed.append(cid)
    assert killed, "no process was killed mid-call: the test proved nothing"
    held = assert_consistent(tmp_path)
    by_owner = {cid: address for address, cid, _ in held}
    for cid, address in finished.items():
        assert by_owner[cid] == address.split("/")[0]
    # every killed caller is retried by the runtime: each ends with exactly one address, none shared
    for cid in killed:
        assert run_cni("ADD", conf(tmp_path), container_id=cid).returncode == 0
    held = assert_consistent(tmp_path)
    addresses = [ipaddress.ip_address(a) for a, _, _ in held]
    assert len(addresses) == len(set(addresses)) == len(finished) + len(killed) + 1
