"""What a controller says when a dependency is missing or down: once in the log, in /readyz until it works
again, and once more when it does; retries wait with backoff."""

from __future__ import annotations

import threading

import pytest

from whereabouts.controller.cli import _leading
from whereabouts.controller.context import Context
from whereabouts.controller.health import Backoff, Health, dependency, resource_of
from whereabouts.errors import TryAgainLater
from whereabouts.kube.client import APIError

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
