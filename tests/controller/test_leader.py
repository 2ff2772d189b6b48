"""Leader election on a real Lease: one leader at a time, take-over only after expiry, hand-back on stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kube_objects import controller_kubeconfig
from kube_server import KubeAPIServer
from whereabouts.controller.leader import LeaderElector
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import load_credentials


def elector(kubeconfig: Path, namespace: str, identity: str, **timing: float) -> LeaderElector:
    client = KubeClient(load_credentials(str(kubeconfig)))
    timing = {"duration": 3.0, "deadline": 2.0, "retry": 0.3, **timing}
    return LeaderElector(client, name="test-lease", namespace=namespace, identity=identity, log=lambda _: None,
                         **timing)  # fmt: skip


def lease(kube: KubeAPIServer, namespace: str) -> dict:
    reply = kube.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/test-lease")
    assert isinstance(reply, dict)
    return reply["spec"]


def test_one_leader_and_take_over_only_after_the_lease_expires(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    config = controller_kubeconfig(kube, tmp_path / "c.kubeconfig", kube_namespace)
    a, b = elector(config, kube_namespace, "a"), elector(config, kube_namespace, "b")
    assert a.try_once() and not b.try_once()
    assert lease(kube, kube_namespace)["holderIdentity"] == "a"
    for _ in range(5):  # a keeps renewing: b never gets it
        time.sleep(0.3)
        assert a.try_once() and not b.try_once()
    stopped = time.monotonic()  # a goes silent (a wedged or cut-off replica)
    while not b.try_once():
        assert a.is_leader is False or time.monotonic() - stopped < a.deadline
        time.sleep(0.2)
    took_over = time.monotonic() - stopped
    assert took_over >= 3.0, f"b took the lease after {took_over:.1f}s, before it expired"
    assert not a.is_leader  # a had stepped down (its deadline passed) before b could act
    spec = lease(kube, kube_namespace)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert not a.try_once()  # a comes back: b holds it now


def test_release_on_stop_hands_over_at_once(kube: KubeAPIServer, kube_namespace: str, tmp_path: Path) -> None:
    config = controller_kubeconfig(kube, tmp_path / "c.kubeconfig", kube_namespace)
    a, b = elector(config, kube_namespace, "a", duration=30, deadline=20), elector(config, kube_namespace, "b")
    thread = threading.Thread(target=a.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not a.is_leader and time.monotonic() < deadline:
            time.sleep(0.1)
        assert a.is_leader
        assert not b.try_once()
    finally:
        a.stop.set()
        thread.join()
    started = time.monotonic()
    assert b.try_once(), "a released the lease on stop: b takes it without waiting 30 s"
    assert time.monotonic() - started < 2


def test_racing_candidates_never_both_win(kube: KubeAPIServer, kube_namespace: str, tmp_path: Path) -> None:
    config = controller_kubeconfig(kube, tmp_path / "c.kubeconfig", kube_namespace)
    candidates = [elector(config, kube_namespace, f"c{i}") for i in range(6)]
    barrier = threading.Barrier(len(candidates))
    results: dict[str, bool] = {}

    def race(candidate: LeaderElector) -> None:
        barrier.wait()
        results[candidate.identity] = candidate.try_once()

    threads = [threading.Thread(target=race, args=(c,)) for c in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, won in results.items() if won]
    assert len(winners) == 1, results
    assert lease(kube, kube_namespace)["holderIdentity"] == winners[0]


class LateAnswers(KubeClient):
    """A client whose answers to PUT arrive `delay` seconds after the API server applied the write."""

    delay = 0.0

    def replace(self, path: str, obj: dict) -> dict:
        written = super().replace(path, obj)
        time.sleep(self.delay)
        return written


def test_a_renewal_answered_late_counts_from_when_it_was_sent(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    """The standby counts from when it saw the renewal; the holder must not count from the (later) answer, or
    it would still act when the standby has taken over."""
    config = controller_kubeconfig(kube, tmp_path / "c.kubeconfig", kube_namespace)
    a, b = elector(config, kube_namespace, "a"), elector(config, kube_namespace, "b")  # 3 s duration, 2 s deadline
    late = a.client = LateAnswers(load_credentials(str(config)))
    assert a.try_once() and not b.try_once()
    late.delay = 1.5  # beyond duration - deadline: counted from the answer, a would lead 0.5 s past b's take-over
    renewal = threading.Thread(target=a.try_once)
    renewal.start()
    while not b.try_once():  # b sees the renewal land, then waits the Lease's duration out
        time.sleep(0.05)
    a_leads = a.is_leader  # the moment b may act
    renewal.join()
    assert lease(kube, kube_namespace)["holderIdentity"] == "b"
    assert not a_leads, "a still counted itself leader when b took over"
