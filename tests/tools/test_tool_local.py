"""kubectl-whereabouts on the local store: pools the plugin wrote, golden tables, planted faults found by `check`
and the safe ones repaired, `release` guarded, and `pools` on a /8 holding a million addresses within 2 s."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tool import golden, run_tool

from support import netconf, run_cni
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.store.local import LocalStore

POOL = PoolKey("", "10.50.0.0/24")


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def add(conf: dict[str, Any], container: str, pod: str, ifname: str = "eth0", args: str = "") -> str:
    cni_args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME={pod}{args}"
    done = run_cni("ADD", conf, container_id=container, ifname=ifname, cni_args=cni_args)
    assert done.returncode == 0, done.stdout
    return done.addresses()[0]


def delete(conf: dict[str, Any], container: str, pod: str, ifname: str = "eth0") -> None:
    cni_args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME={pod}"
    assert run_cni("DEL", conf, container_id=container, ifname=ifname, cni_args=cni_args).returncode == 0


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def plain(data: Path) -> dict[str, Any]:
    conf = netconf(data, range="10.50.0.0/24", range_start="10.50.0.10", exclude=["10.50.0.20-10.50.0.29"],
                   gateway="10.50.0.1")  # fmt: skip
    conf["name"] = "plain"
    return conf


@pytest.fixture
def written(data: Path, plain: dict[str, Any]) -> Path:
    """Pools the plugin wrote: three pods on a plain network, a dual-stack pod, a sticky network's retained address."""
    for n in (1, 2, 3):
        assert add(plain, f"ctr-{n}", f"pod-{n}") == f"10.50.0.{9 + n}/24"
    v6 = netconf(data, range="fd00:50::/120")
    assert add(v6, "ctr-1", "pod-1", "net2") == "fd00:50::1/120"
    sticky = netconf(data, range="10.60.0.0/28", network_name="blue", sticky="pod")
    assert add(sticky, "ctr-s", "web-0") == "10.60.0.1/28"
    delete(sticky, "ctr-s", "web-0")  # retained for pod:ns/web-0/eth0
    assert add(sticky, "ctr-t", "web-1") == "10.60.0.2/28"
    return data


def test_pools_table(written: Path, plain: dict[str, Any], tmp_path: Path) -> None:
    golden("pools.txt", run_tool("--local-data-dir", str(written), "pools").ok().stdout)
    (tmp_path / "plain.conf").write_text(json.dumps(plain))
    with_config = run_tool("--config", str(tmp_path / "plain.conf"), "pools", "--network", "").ok().stdout
    golden("pools-configured.txt", with_config)  # the window and excludes of the config, its datastore


def test_pools_as_json_and_yaml(written: Path) -> None:
    items = json.loads(run_tool("--local-data-dir", str(written), "pools", "-o", "json").ok().stdout)["items"]
    blue = next(item for item in items if item["network"] == "blue")
    assert blue == {"network": "blue", "range": "10.60.0.0/28", "node": "", "pool": "blue-10.60.0.0-28",
                    "config": "", "size": 16, "held": 1, "retained": 1, "excluded": 2, "free": 12, "capacity": 14,
                    "used": 2}  # fmt: skip
    as_yaml = run_tool("--local-data-dir", str(written), "pools", "-o", "yaml").ok().stdout
    assert yaml.safe_load(as_yaml)["items"] == items


def test_who_has_and_show(written: Path) -> None:
    golden("who-has.txt", run_tool("--local-data-dir", str(written), "who-has", "10.50.0.11").ok().stdout)
    golden("show-pod.txt", run_tool("--local-data-dir", str(written), "show", "ns/pod-1").ok().stdout)
    golden("show-all.txt", run_tool("--local-data-dir", str(written), "show", "-A").ok().stdout)
    retained = json.loads(run_tool("--local-data-dir", str(written), "who-has", "10.60.0.1", "-o", "json").stdout)
    (item,) = retained["items"]
    assert (item["state"], item["sticky"], item["pod"], item["network"]) == ("retained", "pod:ns/web-0/eth0",
                                                                             "ns/web-0", "blue")  # fmt: skip
    assert item["retained"] > 0 and item["expires"] == item["retained"] + 24 * 3600


def test_release_without_proof_the_pod_is_gone_needs_force(written: Path, plain: dict[str, Any]) -> None:
    store = str(written)
    refused = run_tool("--local-data-dir", store, "release", "10.50.0.11")
    assert refused.returncode == 1 and "no Kubernetes API to ask whether the pod exists" in refused.stderr
    assert "nothing released" in refused.stderr
    dry = run_tool("--local-data-dir", store, "release", "10.50.0.11", "--force", "--dry-run").ok()
    assert dry.stdout.startswith("(dry run) would release 10.50.0.11 in pool 10.50.0.0-24 (container ctr-2 eth0")
    assert add(plain, "ctr-4", "pod-4") == "10.50.0.13/24"  # the dry run freed nothing
    run_tool("--local-data-dir", store, "release", "10.50.0.11", "--force").ok()
    assert add(plain, "ctr-5", "pod-5") == "10.50.0.11/24"  # free again: the next ADD gets it


def test_a_retained_sticky_address_is_released_explicitly(written: Path, data: Path) -> None:
    done = run_tool("--local-data-dir", str(written), "release", "10.60.0.1").ok()
    assert "released 10.60.0.1 in pool blue-10.60.0.0-28" in done.stdout
    assert "retained for pod:ns/web-0/eth0: no attachment uses it" in done.stdout
    other = netconf(data, range="10.60.0.0/28", network_name="blue", sticky="pod")
    assert add(other, "ctr-u", "web-9") == "10.60.0.1/28"


def plant_faults(data: Path) -> None:
    """What `check` must find, planted through the store's own writes: an address held twice (a config with
    overlapping ranges turned off), a reservation whose entry is gone, an entry outside its range, and an entry
    whose reservation is missing."""
    narrow = netconf(data, range="10.50.0.0/25", enable_overlapping_ranges=False)
    assert add(narrow, "ctr-dup", "dup", args=";IP=10.50.0.10") == "10.50.0.10/25"
    store = LocalStore(str(data))
    try:
        with store.transaction([POOL], overlapping=True) as txn:
            version = txn.snapshot.pools[POOL].version
            third = txn.snapshot.pools[POOL].allocations[ip("10.50.0.12")]
            changes = (Change(POOL, 4, ip("10.50.0.12"), None, third),  # the entry only: its reservation stays
                       Change(POOL, 4, ip("10.50.1.7"), Owner("ctr-out", "eth0", "ns/out")),
                       Change(POOL, 4, ip("10.50.0.40"), Owner("ctr-bare", "eth0", "ns/bare")))  # fmt: skip
            assert txn.commit(ChangeSet(changes, ((POOL, version),), False))
    finally:
        store.close()


def test_check_finds_planted_faults_and_repairs_only_the_safe_ones(written: Path, plain: dict[str, Any]) -> None:
    assert run_tool("--local-data-dir", str(written), "check").ok().stdout == "No problems found.\n"
    plant_faults(written)
    found = run_tool("--local-data-dir", str(written), "check")
    assert found.returncode == 1
    golden("check.txt", found.stdout)
    dry = run_tool("--local-data-dir", str(written), "check", "--repair", "--dry-run")
    assert dry.returncode == 1 and "(dry run) would release 10.50.0.12" in dry.stdout
    assert run_tool("--local-data-dir", str(written), "check").stdout == found.stdout  # the dry run wrote nothing
    repaired = run_tool("--local-data-dir", str(written), "check", "--repair")
    assert repaired.returncode == 1  # the duplicate and the entry outside its range stay: nothing proves either safe
    golden("check-repair.txt", repaired.stdout)
    assert add(plain, "ctr-6", "pod-6") == "10.50.0.12/24"  # the orphan reservation no longer blocks it


def test_pools_answers_within_two_seconds_for_a_million_addresses_in_a_slash_8(data: Path) -> None:
    key = PoolKey("", "10.0.0.0/8")
    store = LocalStore(str(data))
    try:
        with store.transaction([key], overlapping=False) as txn:
            owners = [Owner(f"c{i}", "eth0", f"ns/p{i}", "big") for i in range(1000)]
            changes = tuple(Change(key, 4, (10 << 24) + 1 + i, owners[i % 1000]) for i in range(1_000_000))
            assert txn.commit(ChangeSet(changes, ((key, None),), False))
    finally:
        store.close()
    started = time.monotonic()
    done = run_tool("--local-data-dir", str(data), "pools", "-o", "json").ok()
    elapsed = time.monotonic() - started
    (item,) = json.loads(done.stdout)["items"]
    assert item["held"] == 1_000_000 and item["size"] == 1 << 24
    assert item["free"] == item["capacity"] - (1_000_000 - 3906)  # the .0 addresses among them were never pickable
    assert elapsed < 2.0, f"pools took {elapsed:.2f}s"


def test_a_pool_keyed_by_a_range_the_plugin_never_writes_is_reported_not_a_crash(written: Path) -> None:
    """What an import of an edited export wrote before import refused it: a pool keyed '10.50.0.7/24', which no
    allocation reads. `pools` leaves it out and says so; `check` reports it as unreadable."""
    odd = PoolKey("", "10.50.0.7/24")
    store = LocalStore(str(written))
    try:
        with store.transaction([odd], overlapping=False) as txn:
            change = Change(odd, 4, ip("10.50.0.1"), Owner("ctr-old", "eth0", "ns/old"))
            assert txn.commit(ChangeSet((change,), ((odd, None),), False))
    finally:
        store.close()
    listed = run_tool("--local-data-dir", str(written), "pools", "-o", "json").ok()
    assert {item["pool"] for item in json.loads(listed.stdout)["items"]} == {
        "10.50.0.0-24", "fd00-50---120", "blue-10.60.0.0-28"}  # fmt: skip
    assert "pool 10.50.0.7-24: its range '10.50.0.7/24' is not one the plugin writes: left out" in listed.stderr
    checked = run_tool("--local-data-dir", str(written), "check", "-o", "json")
    assert checked.returncode == 1
    (finding,) = json.loads(checked.stdout)["items"]
    assert (finding["kind"], finding["what"], finding["severity"]) == ("unreadable", "pool 10.50.0.7-24", "error")
