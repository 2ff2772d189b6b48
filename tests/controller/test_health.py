"""What a controller says when a dependency is missing or down: once in the log, in /readyz until it works
again, and once more when it does; retries wait with backoff. /healthz stays green while a loop retries or makes
progress, and goes red when it is stuck in one call."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from whereabouts.controller import health as health_module
from whereabouts.controller.cli import _leading
from whereabouts.controller.context import Context
from whereabouts.controller.health import Backoff, Health, dependency, resource_of
from whereabouts.controller.reconcile import Reconciler
from whereabouts.errors import TryAgainLater
from whereabouts.kube.client import APIError
from whereabouts.kube.credentials import Credentials
from whereabouts.kube.transport import Endpoint, TLSSettings

DOWN = APIError("kubernetes API https://10.0.0.1:6443 unreachable (GET /api/v1/pods: refused)", path="/api/v1/pods")
NO_NADS = APIError(
    "kubernetes API refused LIST /apis/k8s.cni.cncf.io/v1/network-attachment-definitions: 404 not found",
    status=404,
    path="/apis/k8s.cni.cncf.io/v1/network-attachment-definitions",
)


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions", "network-attachment-definitions.k8s.cni.cncf.io"),
        ("/apis/k8s.cni.cncf.io/v1alpha1/namespaces/ns/ipamclaims?limit=1", "ipamclaims.k8s.cni.cncf.io"),
        ("/prefix/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/ns/ippools/x", "ippools.whereabouts.cni.cncf.io"),
        ("/api/v1/pods", "pods"),
        ("/api/v1/namespaces/ns/pods/p", "pods"),
        ("/api/v1/namespaces", "namespaces"),
    ],
    ids=["cluster-wide", "namespaced-query", "prefixed-object", "core", "core-object", "namespaces"],
)
def test_resource_of(path: str, resource: str) -> None:
    assert resource_of(path) == resource


@pytest.mark.parametrize(
    ("error", "what"),
    [
        (DOWN, "the Kubernetes API"),
        (APIError("503", status=503, path="/api/v1/pods"), "the Kubernetes API"),
        (NO_NADS, "the resource network-attachment-definitions.k8s.cni.cncf.io"),
        (APIError("401", status=401, path="/api/v1/pods"), "access to the Kubernetes API"),
        (TryAgainLater("networks a, b not brought in step"), ""),
    ],
    ids=["unreachable", "503", "crd-missing", "401", "not-an-api-error"],
)
def test_dependency(error: TryAgainLater, what: str) -> None:
    assert dependency(error) == what


def test_a_trouble_is_said_once_kept_in_readyz_and_said_again_when_it_ends() -> None:
    health, lines = Health(), []
    health.ready.set()
    assert health.readiness() == (True, "ok\n")
    for _ in range(5):
        health.failing("node-slice", DOWN, lines.append)
        health.failing("pod-cleanup", DOWN, lines.append)
    health.failing("node-slice", NO_NADS, lines.append)
    assert len(lines) == 3, lines
    assert lines[0].startswith("node-slice: the Kubernetes API unavailable (kubernetes API https://10.0.0.1:6443")
    assert "retrying with backoff, releasing nothing meanwhile" in lines[0]
    ready, text = health.readiness()
    assert not ready and text.count("\n") == 3
    assert "node-slice: the resource network-attachment-definitions.k8s.cni.cncf.io unavailable: " in text
    health.working("node-slice", lines.append)
    health.working("node-slice", lines.append)  # nothing more to say
    assert lines[3:] == [
        "node-slice: the Kubernetes API available again; resumed",
        "node-slice: the resource network-attachment-definitions.k8s.cni.cncf.io available again; resumed",
    ]
    ready, text = health.readiness()
    assert not ready and text.startswith("pod-cleanup: the Kubernetes API unavailable")
    health.working("pod-cleanup", lines.append)
    assert health.readiness() == (True, "ok\n")


def test_readyz_is_red_before_the_process_is_up() -> None:
    assert Health().readiness() == (False, "not started yet\n")


def test_backoff_doubles_to_its_cap_and_starts_again_after_a_success() -> None:
    waits: list[float] = []

    class Recorder(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            return False

    backoff, stop = Backoff(first=1.0, cap=8.0), Recorder()
    for _ in range(6):
        backoff.wait(stop)
    backoff.reset()
    backoff.wait(stop)
    ceilings = [1, 2, 4, 8, 8, 8, 1]
    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True)), waits


def test_a_loop_failing_unforeseen_is_said_with_its_traceback_kept_in_readyz_and_run_again() -> None:
    """A controller's loop ending in an exception no handler foresaw (a bug, odd input) is not a dead thread
    (which would stall /healthz and have the process restarted over and over): said, red in /readyz, retried."""
    lines: list[str] = []
    ctx = Context(None, "ns", log=lines.append)  # type: ignore[arg-type]  # the loop makes no client
    ctx.health.ready.set()
    stop, readiness = threading.Event(), []

    def forever(term: threading.Event) -> None:
        if not readiness:
            readiness.append(ctx.health.readiness())
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        readiness.append(ctx.health.readiness())
        ctx.health.working("node-slice", ctx.log)  # as the controller says after a pass that worked
        stop.set()

    loop = threading.Thread(target=_leading(ctx, "node-slice", forever, stop), daemon=True)
    loop.start()
    loop.join(timeout=10)
    assert not loop.is_alive() and len(readiness) == 2, lines
    assert readiness[1] == (False, "node-slice: failing: RecursionError: maximum recursion depth exceeded while "
                                   "decoding a JSON array\n")  # fmt: skip
    assert lines[0].startswith("node-slice: failed: Traceback (most recent call last):") and "in forever" in lines[0]
    assert "node-slice: resumed" in lines and ctx.health.readiness() == (True, "ok\n")


def _server_at(port: int) -> Credentials:
    return Credentials(Endpoint("https", "127.0.0.1", port), "", TLSSettings(), "ns")


@contextmanager
def _running(reconciler: Reconciler) -> Iterator[threading.Thread]:
    """Its scheduled run (`run_until_done`) on a thread, stopped when the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run_until_done, args=(stop,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()


def test_a_run_retrying_with_backoff_stays_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduled run that cannot read (the API server down: a loopback port nobody listens on) retries with
    backoff, up to 5 minutes between tries. It beat only between runs: a run retrying past the 120 s allowance
    failed /healthz, the kubelet killed the controller (in `all`, every loop with it) and the run it owed was
    forgotten. Each try beats, and its waits beat every PULSE (here 0.2 s, the allowance 1.5 s)."""
    monkeypatch.setattr(health_module, "PULSE", 0.2, raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: refused
    ctx = Context(_server_at(port), "ns", log=lambda line: None)
    ctx.health.beat("reconcile", allowance=1.5)  # as the schedule's loop beats before the run
    reconciler = Reconciler(ctx)
    stalled: list[str] = []
    with _running(reconciler) as thread:
        until = time.monotonic() + 8.0
        while time.monotonic() < until:
            stalled += ctx.health.stalled()
            time.sleep(0.05)
        assert thread.is_alive() and reconciler.owed
    tries = reconciler.metrics.runs.value(result="error")
    assert 3 <= tries <= 5, f"{tries} tries: the waits (1, 2, 4 s at most) did not grow as a backoff's"
    assert not stalled, "a run waiting in its own backoff is alive"


def test_a_run_blocked_in_a_call_that_never_returns_still_shows_stalled() -> None:
    """Only progress beats, never a timer of its own: a run whose read never returns (a server that accepts
    the connection and never answers) leaves /healthz failing, and the kubelet restarts what is wedged."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts into the backlog; nobody answers
    ctx = Context(_server_at(silent.getsockname()[1]), "ns", log=lambda line: None)
    ctx.health.beat("reconcile", allowance=1.0)
    reconciler = Reconciler(ctx)
    try:
        with _running(reconciler) as thread:
            until = time.monotonic() + 10.0
            while "reconcile" not in ctx.health.stalled():
                assert time.monotonic() < until, "a run stuck in its first read still beat"
                time.sleep(0.05)
            assert thread.is_alive() and reconciler.metrics.runs.value(result="error") == 0  # still in its read
    finally:
        silent.close()  # the connection waiting in the backlog is reset: the read ends, and the run with it
    thread.join(timeout=10)
    assert not thread.is_alive()
