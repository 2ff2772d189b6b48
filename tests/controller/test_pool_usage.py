"""`pool-usage` on a real kube-apiserver: the real plugin allocates, the real `whereabouts-controller pool-usage`
keeps each IPPool's status (what `kubectl get ippools` shows), at most once every few seconds per pool."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from leak_harness import GROUP_PATH, Harness
from prometheus_client.parser import text_string_to_metric_families

from kube_objects import create_nad
from kube_server import CONTROLLER_USER, KubeAPIServer
from whereabouts.controller import usage
from whereabouts.controller.usage import INTERVAL, SETTLE, PoolUsage

NUMBERS = ("network", "config", "size", "held", "retained", "free")


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Harness:
    return Harness(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def status(bed: Harness, pool: str) -> dict[str, Any]:
    """The numbers, "" for an absent string (a merge patch cannot store an empty string)."""
    obj = bed.kube.objects(bed.pools_ns, "ippools").get(pool) or {}
    found = obj.get("status") or {}
    return {k: found.get(k, "") for k in NUMBERS} if found else {}


def wait_for_status(bed: Harness, pool: str, expected: dict[str, Any], timeout: float) -> float:
    started = time.monotonic()
    while status(bed, pool) != expected:
        assert time.monotonic() - started < timeout, f"{pool}: {status(bed, pool)} is not {expected}"
        time.sleep(0.1)
    return time.monotonic() - started


def status_writes(bed: Harness, pool: str) -> int:
    return sum(
        1
        for event in bed.kube.audited(CONTROLLER_USER)
        if event["verb"] == "patch"
        and event["objectRef"].get("subresource") == "status"
        and (event["objectRef"].get("namespace"), event["objectRef"].get("name")) == (bed.pools_ns, pool)
    )


def test_status_counts_held_and_retained_in_the_nads_window_within_seconds(bed: Harness) -> None:
    windowed = bed.conf("10.93.0.0/24", range_start="10.93.0.10", range_end="10.93.0.59", sticky="pod")
    create_nad(bed.kube, bed.pods_ns, "windowed", windowed)
    bare = bed.conf("10.94.0.0/28", network_name="bare")  # no NAD: the CIDR less network and broadcast
    with bed.running("pool-usage") as controller:
        controller.wait_for("became leader")
        for name in ("p1", "p2", "p3"):
            bed.add(windowed, bed.pod(name).split("/")[1], f"ctr-{name}")
        bed.delete(windowed, "p3", "ctr-p3")  # sticky: retained, still counted out of the free addresses
        bed.add(bare, "p1", "ctr-p1")
        expected = {"network": "", "config": f"NAD {bed.pods_ns}/windowed", "size": 50, "held": 2, "retained": 1,
                    "free": 47}  # fmt: skip
        took = wait_for_status(bed, "10.93.0.0-24", expected, timeout=SETTLE + INTERVAL + 5)
        wait_for_status(bed, "bare-10.94.0.0-28", {"network": "bare", "config": "", "size": 14, "held": 1,
                                                   "retained": 0, "free": 13}, timeout=5)  # fmt: skip
        gauges = pool_gauges(controller.metrics())
    assert took < SETTLE + INTERVAL + 5
    assert gauges["10.93.0.0-24"] == {"size": 50, "held": 2, "retained": 1, "free": 47}  # what an alert reads
    assert gauges["bare-10.94.0.0-28"] == {"size": 14, "held": 1, "retained": 0, "free": 13}


def pool_gauges(text: str) -> dict[str, dict[str, float]]:
    """whereabouts_pool_{size,held,retained,free} by pool, as prometheus_client's parser reads them."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        key = family.name.removeprefix("whereabouts_pool_")
        if family.name.startswith("whereabouts_pool_") and key in ("size", "held", "retained", "free"):
            for sample in family.samples:
                found.setdefault(sample.labels["pool"], {})[key] = sample.value
    return found


def test_a_burst_of_fifty_adds_makes_a_handful_of_status_writes(bed: Harness) -> None:
    conf = bed.conf("10.95.0.0/24")
    with bed.running("pool-usage") as controller:
        controller.wait_for("became leader")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: bed.add(conf, f"p{i}", f"ctr-{i}"), range(50)))
        elapsed = time.monotonic() - started
        wait_for_status(bed, "10.95.0.0-24", {"network": "", "config": "", "size": 254, "held": 50, "retained": 0,
                                              "free": 204}, timeout=SETTLE + INTERVAL + 5)  # fmt: skip
        time.sleep(INTERVAL + 1)  # no further write once the numbers stand
    writes = status_writes(bed, "10.95.0.0-24")
    # one write per INTERVAL at most, over the burst and the last write after it
    assert 1 <= writes <= math.ceil(elapsed / INTERVAL) + 2, (writes, elapsed)
    assert writes <= 10, (writes, elapsed)


def test_kubectl_get_ippools_shows_the_usage_and_sorts_by_free(bed: Harness) -> None:
    frees = {"10.96.0.0/28": 11, "10.96.1.0/29": 5, "10.96.2.0/27": 29}  # as text, "11" < "29" < "5"
    for cidr, free in frees.items():
        conf = bed.conf(cidr)
        size = 2 ** (32 - int(cidr.split("/")[1])) - 2
        for i in range(size - free):
            bed.add(conf, f"p{i}", f"ctr-{cidr}-{i}")
    bed.run("pool-usage")
    table = bed.kube.kubectl("get", "ippools", "-n", bed.pools_ns, "--sort-by=.status.free")
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "RANGE", "NETWORK", "USED", "FREE", "AGE"]
    assert [row.split()[:4] for row in rows] == [
        ["10.96.1.0-29", "10.96.1.0/29", "1", "5"],
        ["10.96.0.0-28", "10.96.0.0/28", "3", "11"],
        ["10.96.2.0-27", "10.96.2.0/27", "1", "29"],
    ]  # (NETWORK is empty for the default network: no column text)
    wide = bed.kube.kubectl("get", "ippools", "-n", bed.pools_ns, "-o", "wide", "--sort-by=.status.free")
    header, *rows = wide.splitlines()
    assert header.split() == ["NAME", "RANGE", "NETWORK", "NODE", "SIZE", "USED", "RETAINED", "FREE", "AGE"]
    assert rows[0].split()[:5] == ["10.96.1.0-29", "10.96.1.0/29", "6", "1", "0"]


@pytest.mark.parametrize("key", ["\u00b2", "1" * 5000], ids=["superscript-two", "5000-digits"])
def test_a_key_that_is_no_offset_is_skipped_and_stops_no_pool(bed: Harness, key: str) -> None:
    """`²` passes str.isdigit() but not int(); int() refuses 5,000 digits: such a key (a hand edit, a tool's bug)
    is no address, as the plugin reads it, and every pool still gets its numbers."""
    entry = {"id": "c1", "podref": f"{bed.pods_ns}/p1", "ifname": "net1"}
    bed.create_entries("10.97.0.0-28", "10.97.0.0/28", {"1": entry, key: {**entry, "id": "c2"}})
    bed.add(bed.conf("10.98.0.0/28"), "p2", "ctr-p2")
    bed.run("pool-usage")
    expected = {"network": "", "config": "", "size": 14, "held": 1, "retained": 0, "free": 13}
    assert status(bed, "10.97.0.0-28") == expected
    assert status(bed, "10.98.0.0-28") == expected


def test_deleted_pools_are_forgotten(bed: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-running pool-usage remembers when it last wrote each pool's status: node slices' pools come and go
    for months, and what it kept of the deleted ones went with them only from the gauges."""
    monkeypatch.setattr(usage, "RESYNC", 1.0)
    names = [f"10.97.{n}.0-24" for n in range(3)]
    for n, name in enumerate(names):
        bed.create_pool(name, f"10.97.{n}.0/24", {"1": (f"ctr-{n}", f"{bed.pods_ns}/p{n}", "net1")})
    controller, stop = PoolUsage(bed.context()), threading.Event()
    running = threading.Thread(target=controller.run, args=(stop,))
    running.start()
    try:
        wait_until(lambda: set(names) <= set(controller.written), SETTLE + INTERVAL + 5, "the statuses written")
        for name in names:
            bed.kube.request("DELETE", f"{GROUP_PATH}/{bed.pools_ns}/ippools/{name}")
        wait_until(lambda: not set(names) & set(controller.written), 10, "the deleted pools forgotten")
        assert not set(names) & set(pool_gauges(controller.ctx.registry.render()))
    finally:
        stop.set()
        running.join(timeout=30)
    assert not running.is_alive()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)
