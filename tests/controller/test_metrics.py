"""The metrics registry's text exposition and the health endpoints, over real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

from whereabouts.controller.metrics import Health, Registry, serve


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_exposition_format() -> None:
    registry = Registry()
    released = registry.counter("leaks_released_total", "Allocations released.")
    released.inc(kind="allocation")
    released.inc(2, kind="allocation")
    registry.gauge("pool_allocated", "Allocated addresses.").set(7, pool='a"b')
    durations = registry.histogram("reconcile_duration_seconds", "Run durations.")
    durations.observe(0.2)
    durations.observe(3)
    text = registry.render()
    assert "# TYPE whereabouts_leaks_released_total counter" in text
    assert 'whereabouts_leaks_released_total{kind="allocation"} 3' in text
    assert 'whereabouts_pool_allocated{pool="a\\"b"} 7' in text
    assert 'whereabouts_reconcile_duration_seconds_bucket{le="0.25"} 1' in text
    assert 'whereabouts_reconcile_duration_seconds_bucket{le="+Inf"} 2' in text
    assert "whereabouts_reconcile_duration_seconds_count 2" in text


def test_forget_drops_pools_no_longer_present() -> None:
    gauge = Registry().gauge("pool_allocated", "x")
    gauge.set(1, pool="a")
    gauge.set(2, pool="b")
    gauge.forget([{"pool": "b"}])
    assert gauge.value(pool="a") == 0 and gauge.value(pool="b") == 2
    assert 'pool="a"' not in "\n".join(gauge.render())


def test_endpoints() -> None:
    registry, health = Registry(), Health()
    registry.counter("reconcile_runs_total", "Runs.").inc(result="ok")
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
        assert status == 200 and 'whereabouts_reconcile_runs_total{result="ok"} 1' in body
        assert get(port, "/nothing")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
