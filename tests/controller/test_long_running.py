"""The long-running modes as a Deployment runs them: two replicas of which one leads (and a killed leader's
Lease taken over only once it expired), the cron schedule re-read from its file without a restart, and
`all` serving every controller with its health endpoints."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from leak_harness import Harness, Running

from kube_objects import delete_pod
from kube_server import KubeAPIServer

pytestmark = pytest.mark.slow
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}"


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Harness:
    return Harness(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def holder(bed: Harness, lease: str) -> str:
    reply = bed.kube.request("GET", LEASE_PATH.format(bed.pools_ns, lease))
    assert isinstance(reply, dict)
    return reply["spec"].get("holderIdentity") or ""


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def leaders(*replicas: Running) -> list[Running]:
    return [r for r in replicas if r.text().count("became leader") > r.text().count("is no longer leader")]


def test_two_replicas_one_leader_and_take_over_after_a_kill(bed: Harness, tmp_path: Path) -> None:
    schedule = tmp_path / "cron"
    schedule.write_text("0 0 1 1 *")
    args = (f"--cron-file={schedule}",)
    with bed.running("reconcile", *args, name="replica-a") as a, bed.running("reconcile", *args, name="replica-b") as b:
        wait_until(lambda: len(leaders(a, b)) == 1, 20, "one replica leads")
        time.sleep(3)  # a few renewals later: still exactly one
        (first,) = leaders(a, b)
        other = b if first is a else a
        assert leaders(a, b) == [first] and holder(bed, "whereabouts-reconcile") in first.text()
        first.proc.send_signal(signal.SIGKILL)  # no hand-back: the Lease has to expire (4 s)
        killed = time.monotonic()
        first.proc.wait()
        wait_until(lambda: "became leader" in other.text(), 20, "the other replica takes over")
        took = time.monotonic() - killed
        assert took >= 3.0, f"took over after {took:.1f}s, before the Lease expired"
        assert holder(bed, "whereabouts-reconcile") == ("replica-b" if other is b else "replica-a")


def test_a_clean_stop_hands_the_lease_over_at_once(bed: Harness, tmp_path: Path) -> None:
    with bed.running("node-slice", "--lease-duration=30", "--renew-deadline=20", name="replica-a") as a:
        a.wait_for("became leader")
        with bed.running("node-slice", "--lease-duration=30", "--renew-deadline=20", name="replica-b") as b:
            time.sleep(2)
            assert "became leader" not in b.text()
            a.proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            b.wait_for("became leader", timeout=15)
            assert time.monotonic() - stopped < 10, "a released its Lease: b need not wait 30 s for it"


def test_a_schedule_change_takes_effect_without_a_restart(bed: Harness, tmp_path: Path) -> None:
    schedule = tmp_path / "cron"
    schedule.write_text("0 0 1 1 *")  # next New Year
    conf = bed.conf("10.91.0.0/24")
    bed.add(conf, bed.pod("gone").split("/")[1], "ctr-gone")
    delete_pod(bed.kube, bed.pods_ns, "gone")
    # A Lease that a busy machine's slow renewal does not lose: a replica that is not leading skips a run that
    # falls due, and this test is about the schedule, not about leadership (the tests above are).
    lease = ("--lease-duration=30", "--renew-deadline=20")
    with bed.running("reconcile", f"--cron-file={schedule}", *lease) as controller:
        controller.wait_for("next run at 20")
        assert re.search(r"next run at \d{4}-01-01T00:00:00Z", controller.text())
        time.sleep(2)  # real time passing: nothing may run meanwhile
        assert bed.held(), "nothing runs before the schedule says so"
        replace_file(schedule, "* * * * *")
        controller.wait_for("reconcile schedule is now '* * * * *'", timeout=15)
        controller.wait_for("('* * * * *')", timeout=15)  # the next run is computed from the new schedule
        wait_until(lambda: not bed.held(), 90, "the leak is released at the next minute")
        controller.wait_for("reconcile: released 1 allocation(s)", timeout=30)  # that run is over
        replace_file(schedule, "not a cron expression")
        controller.wait_for("keeping '* * * * *'", timeout=30)  # read at the next poll of the file
        assert controller.proc.poll() is None


def replace_file(path: Path, text: str) -> None:
    """As the kubelet updates a mounted ConfigMap: the new file in one step. (Rewriting it in place, a read
    between the truncation and the write would find it empty, which means the flat file's schedule.)"""
    staging = path.with_name(path.name + ".new")
    staging.write_text(text)
    staging.replace(path)


def test_all_serves_every_controller_with_health_and_metrics(bed: Harness) -> None:
    conf = bed.conf("10.92.0.0/24")
    bed.add(conf, bed.pod("p1").split("/")[1], "ctr-p1")
    with bed.running("all") as controller:
        controller.wait_for("became leader")
        port = re.search(r"metrics and health on [\d.]+:(\d+)", controller.text())
        assert port
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port[1]}{path}", timeout=5) as reply:
                assert reply.status == 200
        controller.wait_for("pod-cleanup: watching pod deletions")  # a deletion before the watch waits for a sweep
        delete_pod(bed.kube, bed.pods_ns, "p1")
        wait_until(lambda: not bed.held(), 10, "pod cleanup, inside `all`, releases the deleted pod's address")
        metrics = controller.metrics()
        assert "whereabouts_pod_cleanup_released_total" in metrics
