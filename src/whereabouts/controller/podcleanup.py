"""Pod cleanup: a deleted pod's allocations are released at once, in every pool that holds them, by the
container ID and interface recorded with each (guarded as the reconciler's writes are, see reconcile.py).

On start, and whenever its watch expires, it sweeps: lists pools, reservations and pods, and releases what
belongs to pods that no longer exist or have finished (controller.leaks, the reconciler's rules without its
repairs and its age rule). So a pod deleted while no cleanup ran is found by listing, not lost (Go #546).
Then it watches pod deletions from the pod list's resourceVersion.

Sticky addresses (controller.sticky): a deleted pod's entries held for a sticky key are retained, not released,
as the DEL the pod's deletion should have brought would have left them, recording the pod's controlling
ownerReference where the entry has none. Retained entries are the reconciler's to release: it reads what
proves their keys' owners gone, which the node agent's account may not read.

With `node`, the watch sees only that node's pods (fieldSelector spec.nodeName). The sweep cannot do the
same: a pod that is gone no longer says which node it ran on, and the pool entry never recorded it. So the
sweep covers every entry in the namespace. That is safe with one cleanup per node running at once: each
release is confirmed by a fresh GET and written as a guarded patch, so the second node to try finds the
entry gone and does nothing.
"""

from __future__ import annotations

import threading
import time

from whereabouts.controller import leaks
from whereabouts.controller.context import Context
from whereabouts.controller.reconcile import Applier, Report, observe
from whereabouts.errors import TryAgainLater
from whereabouts.kube.client import Event, Expired, KubeClient
from whereabouts.kube.resources import IPPOOLS, RESERVATIONS, pod_facts, pod_selector

WATCH_TIMEOUT = 30  # seconds each watch request lasts; the next resumes from the last resourceVersion seen


class PodCleanup:
    def __init__(self, ctx: Context, node: str = "") -> None:
        self.ctx, self.node = ctx, node
        self.released = ctx.registry.counter(
            "pod_cleanup_released_total", "Allocations and reservations of deleted pods released, by kind", ("kind",)
        )
        self.retained = ctx.registry.counter(
            "pod_cleanup_retained_total", "Sticky addresses of deleted pods turned retained"
        )
        self.resource_version = ""  # of the last pod list or watch event: where the watch resumes
        self.watch_timeout = WATCH_TIMEOUT

    def sync(self) -> Report:
        """The sweep: release what belongs to pods that are gone or finished (what --once does)."""
        started = time.monotonic()
        client = self.ctx.client()
        try:
            reading = observe(client, nodes=False)
            planned = leaks.plan(reading.observed, now=time.time(), repair=False, aged=False)
            applier = self._applier(client)
            report = applier.apply(planned, reading.pools)
        finally:
            client.close()
        self.resource_version = reading.resource_version
        self.ctx.log(f"pod-cleanup: sweep {report.summary()} in {time.monotonic() - started:.2f}s")
        self._say_what_was_unread(applier.lookups.unread)
        return report

    def run(self, stop: threading.Event) -> None:
        """Sweep, then release each deleted pod's allocations as its deletion is seen, until `stop` is set."""
        self.sync()
        self.follow(stop)

    def follow(self, stop: threading.Event) -> None:
        """Watch pod deletions from `resource_version` until `stop` is set; sweep again when it expired."""
        client = self.ctx.client()
        scope = f"node {self.node}" if self.node else "all nodes"
        self.ctx.log(f"pod-cleanup: watching pod deletions on {scope} from resourceVersion {self.resource_version}")
        try:
            while not stop.is_set():
                self.ctx.health.beat("pod-cleanup")
                try:
                    self._watch(client, stop)
                except Expired:
                    self.ctx.log("pod-cleanup: watch expired (410 Gone); listing again")
                    self.sync()
        finally:
            client.close()

    def release_pod(self, client: KubeClient, podref: str, controller: str = "") -> Report:
        """A pod was seen deleted: release its entries, then their reservations (and any other reservation
        of that pod), if no pod of that name exists now; sticky entries are retained instead, recording
        `controller` (the deleted pod's "<apiVersion>/<Kind>/<name>/<uid>") where they recorded none. Most
        pods hold no address here: every reservation is listed only when the pools show entries of this pod;
        else only those labelled with the pod's name, from the API server's cache (with the IPPool mirror off,
        or behind, a reservation is the only record of its address)."""
        pools = client.list(client.path(IPPOOLS))
        observed = leaks.observed_from(pools, ())
        if any(entry.owner.podref == podref for entry in observed.entries):
            reservations = client.list(client.path(RESERVATIONS))
        else:
            selector = pod_selector(podref)
            reservations = client.list(client.path(RESERVATIONS), selector, cached=True) if selector else []
            if not reservations:
                return Report(dry_run=self.ctx.dry_run)
        planned = leaks.plan_for_pod(leaks.observed_from(pools, reservations), podref, controller)
        applier = self._applier(client)
        report = applier.apply(planned, {p["metadata"]["name"]: p for p in pools})
        self._say_what_was_unread(applier.lookups.unread)
        return report

    def _say_what_was_unread(self, unread: list[TryAgainLater]) -> None:
        """Once in the log and in /readyz while a fact it needed cannot be read (what needed it was kept);
        and once when everything could be read again."""
        for problem in unread:
            self.ctx.health.failing("pod-cleanup", problem, self.ctx.log)
        if not unread:
            self.ctx.health.working("pod-cleanup", self.ctx.log)

    def _watch(self, client: KubeClient, stop: threading.Event) -> None:
        params = {"fieldSelector": f"spec.nodeName={self.node}"} if self.node else {}
        events = client.watch(client.resource("pods"), self.resource_version, timeout=self.watch_timeout, **params)
        for event in events:
            self._handle(client, event)
            if stop.is_set():
                return

    def _handle(self, client: KubeClient, event: Event) -> None:
        self.ctx.health.beat("pod-cleanup")
        version = event.object.get("metadata", {}).get("resourceVersion", "")
        self.resource_version = version or self.resource_version
        if event.type == "DELETED":
            self.release_pod(client, leaks.pod_state(event.object).ref, pod_facts(event.object).controller)

    def _applier(self, client: KubeClient) -> Applier:
        return Applier(self.ctx, client, source="pod-cleanup", released=self.released, retained=self.retained)
