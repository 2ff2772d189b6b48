"""The metrics registry's text exposition (read back with prometheus_client's own parser) and the health
endpoints, over real HTTP on loopback."""

from __future__ import annotations

import time
import tracemalloc
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from whereabouts.controller.health import Health, serve
from whereabouts.controller.metrics import Registry


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def families(text: str) -> dict[str, Any]:
    """The exposition as prometheus_client's own parser reads it (it raises on anything invalid)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families(text).values()
        for sample in family.samples
    }


def test_exposition_format() -> None:
    registry = Registry()
    released = registry.counter("leaks_released_total", "Allocations released.", ("kind",))
    released.inc(kind="allocation")
    released.inc(2, kind="allocation")
    registry.gauge("pool_allocated", "Allocated addresses.", ("pool",)).set(7, pool='a"b')
    durations = registry.histogram("reconcile_duration_seconds", "Run durations.")
    durations.observe(0.2)
    durations.observe(3)
    text = registry.render()
    assert "# TYPE whereabouts_leaks_released_total counter" in text
    found = samples(text)
    assert found[("whereabouts_leaks_released_total", (("kind", "allocation"),))] == 3
    assert found[("whereabouts_pool_allocated", (("pool", 'a"b'),))] == 7
    assert found[("whereabouts_reconcile_duration_seconds_bucket", (("le", "0.25"),))] == 1
    assert found[("whereabouts_reconcile_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert found[("whereabouts_reconcile_duration_seconds_count", ())] == 2
    assert not any(name.endswith("_created") for name, _ in found), "no _created series"
    assert released.value(kind="allocation") == 3


def test_a_label_not_declared_is_refused() -> None:
    counter = Registry().counter("runs_total", "Runs.", ("result",))
    with pytest.raises(ValueError, match="takes the labels"):
        counter.inc(outcome="ok")


def test_forget_drops_pools_no_longer_present() -> None:
    registry = Registry()
    gauge = registry.gauge("pool_allocated", "x", ("pool",))
    gauge.set(1, pool="a")
    gauge.set(2, pool="b")
    gauge.forget([{"pool": "b"}])
    assert gauge.value(pool="a") == 0 and gauge.value(pool="b") == 2
    assert 'pool="a"' not in registry.render()


def test_a_million_observations_keep_memory_flat_and_the_scrape_valid() -> None:
    """The node-slice controller observes on every pass and event, for months: a histogram must keep counts,
    not observations, and a scrape must not rescan them."""
    registry = Registry()
    histogram = registry.histogram("node_slice_sync_duration_seconds", "Duration of one node-slice pass")
    for n in range(10_000):  # warm: whatever is allocated once is allocated now
        histogram.observe(n % 700 / 10)
    registry.render()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1_000_000):
            histogram.observe(n % 700 / 10)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 << 10, f"memory grew by {grown} bytes over a million observations"
    started = time.monotonic()
    text = registry.render()
    assert time.monotonic() - started < 1.0, "a scrape does not rescan the observations"
    found = samples(text)
    name = "whereabouts_node_slice_sync_duration_seconds"
    assert found[(f"{name}_count", ())] == 1_010_000
    buckets = [value for (sample, labels), value in found.items() if sample == f"{name}_bucket"]
    assert buckets == sorted(buckets) and buckets[-1] == 1_010_000  # cumulative, ending at the count
    zeros = len(range(0, 10_000, 700)) + len(range(0, 1_000_000, 700))  # n % 700 == 0: the only values <= 0.05
    assert found[(f"{name}_bucket", (("le", "0.05"),))] == zeros
    assert families(text)[name].type == "histogram"


def test_endpoints() -> None:
    registry, health = Registry(), Health()
    registry.counter("reconcile_runs_total", "Runs.", ("result",)).inc(result="ok")
    server = serve("127.0.0.1", 0, registry, health)
    port = server.server_address[1]
    try:
        assert get(port, "/readyz")[0] == 503
        health.ready.set()
        assert get(port, "/readyz")[0] == 200
        health.beat("loop", allowance=60)
        assert get(port, "/healthz") == (200, "ok\n")
        health.beat("wedged", allowance=-1)  # a loop that stopped reporting in
        status, body = get(port, "/healthz")
        assert status == 503 and "wedged" in body
        status, body = get(port, "/metrics")
        assert status == 200 and samples(body)[("whereabouts_reconcile_runs_total", (("result", "ok"),))] == 1
        assert get(port, "/nothing")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
