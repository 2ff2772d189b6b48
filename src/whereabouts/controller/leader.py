"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it, so two replicas never act at once.

The holder renews the Lease every `retry` seconds. A candidate takes it over only once the holder has not
renewed for `duration` seconds, measured on the candidate's own clock from when it last saw the Lease
change (clocks of different machines are never compared). The holder counts itself leader only while its
last successful renewal, counted from when it was sent, is younger than `deadline` (< `duration`): a holder
cut off from the API server, or whose answers come late, stops acting before anyone else may start. Every
write carries the resourceVersion it was decided on, so two candidates racing for a free Lease cannot both win.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from whereabouts.controller.health import Health
from whereabouts.errors import TryAgainLater
from whereabouts.kube.client import Conflict, KubeClient

LEASES = "leases"
COORDINATION = "coordination.k8s.io"


def micro_time(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        duration: float = 15.0,
        deadline: float = 10.0,
        retry: float = 2.0,
        log: Callable[[str], None] = print,
        health: Health | None = None,
    ) -> None:
        assert deadline < duration, "a holder must give up before others may take over"
        self.client, self.identity, self.log, self.health = client, identity, log, health
        self.path = client.resource(LEASES, name, group=COORDINATION, namespace=namespace)
        self.collection = client.resource(LEASES, group=COORDINATION, namespace=namespace)
        self.name, self.namespace = name, namespace
        self.duration, self.deadline, self.retry = duration, deadline, retry
        self.renewed_at = -1e9  # monotonic time of our last successful acquire or renewal
        self.last_renewal_reported = -1e9  # the renewal whose failure to renew was last logged
        self.observed: tuple[str, float] = ("", 0.0)  # (the Lease's resourceVersion, when we first saw it)
        self.stop = threading.Event()
        self.was_leader = False

    @property
    def is_leader(self) -> bool:
        return time.monotonic() - self.renewed_at < self.deadline

    def run(self) -> None:
        """Try to acquire or renew every `retry` seconds until `stop` is set; then release the Lease."""
        while not self.stop.is_set():
            self.try_once()
            self.stop.wait(self.retry)
        self.release()

    def try_once(self) -> bool:
        # A renewal counts from before its requests, not from its answer: the API server may apply the write long
        # before the answer arrives, and a standby counts its wait from when it saw the Lease change.
        sent = time.monotonic()
        try:
            if self._acquire_or_renew():
                self.renewed_at = sent
            if self.health is not None:
                self.health.working("leader election", self.log)
        except Conflict as exc:
            if self.is_leader:
                self.log(f"leader election: renewal failed ({exc}); still leader for {self._left():.1f}s")
        except TryAgainLater as exc:
            if self.is_leader and self.renewed_at != self.last_renewal_reported:  # once per renewal missed
                self.last_renewal_reported = self.renewed_at
                self.log(f"leader election: renewal failed ({exc.msg}); still leader for {self._left():.1f}s")
            if self.health is not None:
                self.health.failing("leader election", exc, self.log)
        leader = self.is_leader
        if leader != self.was_leader:
            self.log(f"leader election: {self.identity} {'became' if leader else 'is no longer'} leader of "
                     f"{self.namespace}/{self.name}")  # fmt: skip
            self.was_leader = leader
        return leader

    def _left(self) -> float:
        return self.deadline - (time.monotonic() - self.renewed_at)

    def _acquire_or_renew(self) -> bool:
        now = time.time()
        lease = self.client.get(self.path)
        if lease is None:
            self.client.create(self.collection, self._lease({}, now, transitions=0, acquired=now))
            return True
        spec = lease.get("spec", {})
        version = lease["metadata"]["resourceVersion"]
        if version != self.observed[0]:
            self.observed = (version, time.monotonic())
        holder = spec.get("holderIdentity") or ""
        if holder == self.identity:
            self._write(lease, self._spec(spec, now))
            return True
        expired = time.monotonic() - self.observed[1] > float(spec.get("leaseDurationSeconds") or self.duration)
        if holder and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + 1
        self._write(lease, self._spec(spec, now, transitions=transitions, acquired=now))
        return True

    def _spec(self, old: dict[str, Any], now: float, **changes: Any) -> dict[str, Any]:
        spec = {
            **old,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": micro_time(now),
        }
        if "acquired" in changes:
            spec["acquireTime"] = micro_time(changes["acquired"])
        if "transitions" in changes:
            spec["leaseTransitions"] = changes["transitions"]
        return spec

    def _lease(self, old: dict[str, Any], now: float, **changes: Any) -> dict[str, Any]:
        return {
            "apiVersion": f"{COORDINATION}/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(old, now, **changes),
        }

    def _write(self, lease: dict[str, Any], spec: dict[str, Any]) -> None:
        lease = {**lease, "spec": spec}
        written = self.client.replace(self.path, lease)  # carries its resourceVersion: a race gives 409
        self.observed = (written["metadata"]["resourceVersion"], time.monotonic())

    def release(self) -> None:
        """On a clean stop: hand the Lease back at once, so a standby need not wait for it to expire."""
        if not self.is_leader:
            return
        self.renewed_at = -1e9
        try:
            lease = self.client.get(self.path)
            if lease and lease.get("spec", {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                self.client.replace(self.path, {**lease, "spec": spec})
                self.log(f"leader election: {self.identity} released {self.namespace}/{self.name}")
        except (TryAgainLater, Conflict):
            pass  # it expires on its own
