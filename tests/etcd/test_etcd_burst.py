"""Bursts of CNI processes against a real etcd, including an etcd restarted mid-burst."""

from __future__ import annotations

import ipaddress
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from etcd_server import EtcdServer
from support import CNIResult, netconf, run_cni

pytestmark = pytest.mark.slow


def conf(tmp_path: Path, server: EtcdServer, prefix: str) -> dict:
    return netconf(tmp_path, range="10.71.0.0/22", etcd_host=server.url, etcd_prefix=prefix)


def burst(command: str, config: dict, ids: list[str], callers: int = 40) -> list[CNIResult]:
    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(lambda cid: run_cni(command, config, container_id=cid, timeout=120), ids))


def held(server: EtcdServer, prefix: str) -> dict[str, str]:
    """address -> container ID, after checking that pools and reservations agree."""
    keys = server.dump(prefix + "/")
    pools = {v["address"]: v["id"] for k, v in keys.items() if "/pools/" in k}
    reservations = {v["address"]: v["id"] for k, v in keys.items() if "/reservations/" in k}
    assert pools == reservations, "pool entries and overlapping reservations disagree"
    owners = list(pools.values())
    assert len(owners) == len(set(owners)), "an attachment holds two addresses"
    return pools


def test_300_adds_from_40_callers_then_300_dels(etcd: EtcdServer, etcd_prefix: str, tmp_path: Path) -> None:
    config = conf(tmp_path, etcd, etcd_prefix)
    ids = [f"burst-{n}" for n in range(300)]
    results = burst("ADD", config, ids)
    failed = [r.stdout for r in results if r.returncode]
    assert not failed, failed[:3]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 300
    assert held(etcd, etcd_prefix) == {a.split("/")[0]: cid for a, cid in zip(addresses, ids, strict=True)}
    assert all(r.returncode == 0 for r in burst("DEL", config, ids))
    assert etcd.dump(etcd_prefix + "/") == {}


def test_etcd_restart_mid_burst_never_holds_an_address_twice(tmp_path: Path, etcd_prefix: str) -> None:
    server = EtcdServer(tmp_path / "etcd-data").start()
    try:
        config = conf(tmp_path, server, etcd_prefix)
        ids = [f"restart-{n}" for n in range(200)]

        def restart() -> None:
            time.sleep(1.0)
            server.stop()
            time.sleep(1.0)
            server.start()

        restarter = threading.Thread(target=restart)
        restarter.start()
        results = burst("ADD", config, ids)
        restarter.join()
        outcomes = {r.json["code"] for r in results if r.returncode}
        assert outcomes <= {11}, f"failures other than 'try again later': {outcomes}"
        ok = {cid: r.addresses()[0].split("/")[0] for cid, r in zip(ids, results, strict=True) if r.returncode == 0}
        state = held(server, etcd_prefix)
        for cid, address in ok.items():
            assert state[address] == cid, f"{cid} was told {address} but etcd says {state.get(address)}"
        # the runtime retries what failed: everyone ends with exactly one distinct address
        retried = burst("ADD", config, [cid for cid in ids if cid not in ok])
        assert all(r.returncode == 0 for r in retried)
        final = held(server, etcd_prefix)
        assert sorted(final.values()) == sorted(ids)
        assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.71.0.0/22") for a in final)
    finally:
        server.stop()
