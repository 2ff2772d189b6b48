"""The reconciler's driver: read, plan (controller.leaks, no I/O), confirm, apply; an Event, a metric and one
log line per action. Pod cleanup applies its plans through the same Applier.

Reads, in this order: IPPools, reservations, Pods (all namespaces), Nodes (see leaks.Observed for why pools
come first). Writes, each only while ctx.may_act() (a replica that lost its Lease stops before the next):
    allocation   GET the pod again, release only if it is still gone or terminal; then one JSON patch on the
                 IPPool: `test` that .../<offset>/id and /ifname are what was read, `remove`. A failed test
                 (a recreated pod adopted the address meanwhile) leaves it alone. Then the entry's
                 reservations, each deleted with the resourceVersion read as a precondition.
    reservation  a lone one: list the pools again; still no entry behind it (and, for pod evidence, the pod
                 still gone): delete it with its resourceVersion as a precondition.
    repair       GET the pool again; the entry unchanged: create its missing reservation.
    retain       a held sticky entry whose pod is gone (its DEL never ran): GET the pod again; still gone, one
                 guarded JSON patch rewrites the entry as retained (controller.sticky), then its reservation is
                 replaced, with the resourceVersion read as a precondition, to say retained too.
A retained entry is released as an allocation is, but confirmed by fresh reads of what proves its sticky key's
owner gone (controller.stickyread: its controller, its IPAMClaim, the NADs), and its patch also tests that it
is still retained at the time read.
Ages are measured on this machine's clock against the API server's creationTimestamp: GRACE (120 s) is
far beyond a CNI call's 45 s, so modest clock skew does not matter.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from whereabouts.controller import sticky
from whereabouts.controller.capacity import Window, capacity, windows
from whereabouts.controller.context import Context
from whereabouts.controller.health import Backoff
from whereabouts.controller.leaks import (
    Entry,
    EntryRelease,
    EntryRetain,
    Judgement,
    Kept,
    Observed,
    Plan,
    Repair,
    Reservation,
    ReservationRelease,
    ReservationRetain,
    Verdict,
    adoption_in_flight,
    backing_index,
    backs,
    judge_pod,
    judge_retained,
    observed_from,
    plan,
    pod_state,
)
from whereabouts.controller.metrics import Metric, Registry
from whereabouts.controller.nads import NAD_GROUP, NAD_VERSION, NADS
from whereabouts.controller.stickyread import Lookups
from whereabouts.errors import TryAgainLater, WhereaboutsError
from whereabouts.kube import resources
from whereabouts.kube.client import APIError, Conflict, KubeClient
from whereabouts.kube.reserving import reserve_entry
from whereabouts.kube.resources import IPPOOLS, NODE_SLICE_POOLS, RESERVATIONS
from whereabouts.model import Owner, PoolKey

RETRY_CAP = 300.0  # seconds: a run that could not read all it needs is retried at least this often
# Statuses with which the API server refuses one write as invalid (a value out of its schema's bounds): the write
# would be refused again, and the pass goes on with the others. Any other failure (unreachable, overloaded,
# credentials refused) ends the pass, to be run again.
REFUSED = (400, 422)


@dataclass
class Report:
    """What one pass did (with `dry_run`: would do)."""

    dry_run: bool = False
    released: list[Entry] = field(default_factory=list)
    released_reservations: list[str] = field(default_factory=list)
    retained: list[Entry] = field(default_factory=list)  # sticky entries of gone pods, turned retained
    retained_reservations: list[str] = field(default_factory=list)  # the same of lone reservations (no entry)
    repaired: list[str] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # changed since read: a race lost safely
    refused: list[str] = field(default_factory=list)  # writes the API server refused as invalid (see REFUSED)
    stopped: bool = False  # the Lease was lost: no further writes
    unread: list[TryAgainLater] = field(default_factory=list)  # facts it could not read: what needs them was kept

    def summary(self) -> str:
        verb = "would release" if self.dry_run else "released"
        notable = sum(1 for k in self.kept if k.notable)
        return (
            f"{verb} {len(self.released)} allocation(s) and {len(self.released_reservations)} reservation(s), "
            f"{'would retain' if self.dry_run else 'retained'} {len(self.retained) + len(self.retained_reservations)}, "
            f"recreated {len(self.repaired)}, kept {len(self.kept)} ({notable} notable), skipped {len(self.skipped)}"
            + (f", refused {len(self.refused)}" if self.refused else "")
            + ("; stopped: lease lost" if self.stopped else "")
        )


@dataclass(frozen=True)
class Reading:
    observed: Observed
    pools: Mapping[str, dict[str, Any]]  # name -> the IPPool as listed (for Events)
    resource_version: str  # of the pod list: where a watch resumes


def observe(client: KubeClient, *, pods: bool = True, nodes: bool = True) -> Reading:
    pools = client.list(client.path(IPPOOLS))
    reservations = client.list(client.path(RESERVATIONS))
    pod_items, version = client.list_with_version(client.resource("pods")) if pods else ([], "")
    node_items = client.list(client.resource("nodes")) if nodes else None
    observed = observed_from(pools, reservations, pod_items, node_items, _slice_pools(client))
    return Reading(observed, {p["metadata"]["name"]: p for p in pools}, version)


def _slice_pools(client: KubeClient) -> list[dict[str, Any]]:
    """The NodeSlicePools ([] where their CRD is not installed: no network is sliced)."""
    try:
        return client.list(client.path(NODE_SLICE_POOLS))
    except APIError as exc:
        if exc.status == 404:
            return []
        raise


class _LeaseLost(Exception):
    pass


class Applier:
    """Applies one plan: confirms, writes guarded, records. One per pass (it remembers the pods it read)."""

    def __init__(
        self,
        ctx: Context,
        client: KubeClient,
        *,
        source: str,
        released: Metric,
        repaired: Metric | None = None,
        retained: Metric | None = None,
    ) -> None:
        self.ctx, self.client, self.source = ctx, client, source
        self.released, self.repaired, self.retained = released, repaired, retained
        self.pods: dict[str, dict[str, Any] | None] = {}  # podref -> the fresh GET (None: 404)
        self.lookups = Lookups(client, ctx.log)  # the sticky facts, read fresh in this pass
        self.report = Report(dry_run=ctx.dry_run)

    def apply(self, planned: Plan, pools: Mapping[str, dict[str, Any]]) -> Report:
        self.report.kept += planned.kept
        try:
            for release in planned.releases:
                with self._refusable(release.entry.describe()):
                    self._release_entry(release, pools)
            for retain in planned.retains:
                with self._refusable(retain.entry.describe()):
                    self._retain_entry(retain, pools)
            if planned.reservation_releases or planned.reservation_retains:
                index = backing_index(observed_from(self.client.list(self.client.path(IPPOOLS)), ()).entries)
                for lone in planned.reservation_releases:
                    with self._refusable(lone.reservation.describe()):
                        self._release_lone(lone, index)
                for lone_retain in planned.reservation_retains:
                    with self._refusable(lone_retain.reservation.describe()):
                        self._retain_lone(lone_retain, index)
            for repair in planned.repairs:
                with self._refusable(repair.entry.describe()):
                    self._repair(repair)
        except _LeaseLost:
            self.report.stopped = True
            self.ctx.log(f"{self.source}: not the leader any more; stopping before the next write")
        return self.report

    @contextmanager
    def _refusable(self, what: str) -> Iterator[None]:
        """One item's writes: one the API server refuses as invalid is recorded, and the pass goes on. Each
        beats for its loop (`source`): a pass of thousands of items (1,500 took over 2 minutes) is alive while it
        makes progress, and stalled only when one item's reads or writes never return."""
        self.ctx.health.beat(self.source)
        try:
            yield
        except APIError as exc:
            if exc.status not in REFUSED:
                raise
            self.report.refused.append(f"{what}: {exc.msg}")
            self.ctx.log(f"{self.source}: refused {what}: {exc.msg}; going on with the rest")

    def _release_entry(self, release: EntryRelease, pools: Mapping[str, dict[str, Any]]) -> None:
        entry = release.entry
        judgement, pod = self._confirm_entry(entry.owner)
        if judgement.verdict is not Verdict.RELEASE:
            self._keep(entry.describe(), f"on a fresh read: {judgement.reason}")
            return
        what = f"{entry.describe()}: {judgement.reason}"
        if self._before_write(f"would release {what}"):
            self.report.released.append(entry)
        elif not self._patch(entry):
            return
        else:
            self.report.released.append(entry)
            self._record(pod or pools.get(entry.pool) or _pool_ref(self.client, entry.pool), "allocation", what)
        for reservation in release.reservations:
            self._delete_reservation(reservation, judgement.reason, pod)

    def _retain_entry(self, retain: EntryRetain, pools: Mapping[str, dict[str, Any]]) -> None:
        entry = retain.entry
        judgement, pod = self._confirm(entry.owner.podref)
        if judgement.verdict is not Verdict.RELEASE:
            self._keep(entry.describe(), f"on a fresh read: {judgement.reason}")
            return
        owner, what = _as_retained(entry.owner, entry.describe(), retain, judgement.reason)
        if self._before_write(f"would retain {what}"):
            self.report.retained.append(entry)
            return
        if not self._patch(entry, owner):
            return
        self.report.retained.append(entry)
        self._said_retained(what, pod or pools.get(entry.pool) or _pool_ref(self.client, entry.pool))
        for reservation in retain.reservations:
            self._restate(reservation, entry, owner)

    def _restate(self, reservation: Reservation, entry: Entry, owner: Owner) -> None:
        """Rewrite the entry's reservation to say what the entry now says (retained), from the version read."""
        obj = _reservation_of(self.client, reservation.name, entry, owner)
        obj["metadata"]["resourceVersion"] = reservation.resource_version
        path = self.client.path(RESERVATIONS, reservation.name)
        try:
            self.client.replace(path, obj)
        except Conflict:
            self._skip(f"{reservation.describe()}: changed since read, not rewritten as retained")
            return
        except TryAgainLater:
            if self.client.get(path) is not None:
                raise
            self._skip(f"{reservation.describe()}: gone, not rewritten as retained")
            return
        self.ctx.log(f"{self.source}: rewrote {reservation.describe()} as retained")

    def _patch(self, entry: Entry, owner: Owner | None = None) -> bool:
        """Remove the entry (or write `owner` there), guarded by the entry as read, retained or not."""
        path = self.client.path(IPPOOLS, entry.pool)
        try:
            self.client.patch(path, resources.entry_patch(entry.offset, owner, entry.owner, exact=True))
        except Conflict:
            self._skip(f"{entry.describe()}: changed since read (taken over?), left alone")
            return False
        except TryAgainLater:
            if self.client.get(path) is not None:
                raise
            self._skip(f"{entry.describe()}: the pool is gone")
            return False
        return True

    def _release_lone(self, release: ReservationRelease, index: Mapping[str, list[Entry]]) -> None:
        reservation = release.reservation
        owner = reservation.owner
        judgement, pod = self._confirm_entry(owner) if owner.retained else self._confirm(owner.podref)
        if backs(index, reservation) or (release.aged and adoption_in_flight(index, reservation)):
            self._keep(reservation.describe(), "on a fresh read of the pools: an entry stands behind it")
        elif not release.aged and judgement.verdict is not Verdict.RELEASE:
            self._keep(reservation.describe(), f"on a fresh read: {judgement.reason}")
        else:
            self._delete_reservation(reservation, release.reason, pod)

    def _retain_lone(self, retain: ReservationRetain, index: Mapping[str, list[Entry]]) -> None:
        """A lone held sticky reservation of a gone pod: rewritten retained, from the version read (a missed DEL,
        with no pool entry to retain: the mirror behind, or off)."""
        reservation = retain.reservation
        judgement, pod = self._confirm(reservation.owner.podref)
        if backs(index, reservation):
            self._keep(reservation.describe(), "on a fresh read of the pools: an entry stands behind it")
            return
        if judgement.verdict is not Verdict.RELEASE:
            self._keep(reservation.describe(), f"on a fresh read: {judgement.reason}")
            return
        owner, what = _as_retained(reservation.owner, reservation.describe(), retain, retain.reason)
        if self._before_write(f"would retain {what}"):
            self.report.retained_reservations.append(reservation.name)
            return
        path = self.client.path(RESERVATIONS, reservation.name)
        current = self.client.get(path)
        if current is None or current.get("metadata", {}).get("resourceVersion") != reservation.resource_version:
            self._skip(f"{reservation.describe()}: changed since read, not rewritten as retained")
            return
        try:
            self.client.replace(path, resources.restated_reservation(current, owner))
        except Conflict:
            self._skip(f"{reservation.describe()}: changed since read, not rewritten as retained")
            return
        self.report.retained_reservations.append(reservation.name)
        self._said_retained(what, pod or _reservation_ref(self.client, reservation.name))

    def _said_retained(self, what: str, regarding: dict[str, Any]) -> None:
        """Counted, logged and an Event on `regarding` (the pod, else the object rewritten)."""
        if self.retained is not None:
            self.retained.inc()
        self.ctx.log(f"{self.source}: retained {what}")
        self.ctx.event(self.client, regarding, reason="RetainedAllocation", message=f"{self.source}: retained {what}")

    def _delete_reservation(self, reservation: Reservation, reason: str, pod: dict[str, Any] | None) -> None:
        what = f"{reservation.describe()}: {reason}"
        if self._before_write(f"would release {what}"):
            self.report.released_reservations.append(reservation.name)
            return
        path = self.client.path(RESERVATIONS, reservation.name)
        try:
            deleted = self.client.delete(path, reservation.resource_version)
        except Conflict:
            self._skip(f"{reservation.describe()}: changed since read, left alone")
            return
        if deleted:
            self.report.released_reservations.append(reservation.name)
            self._record(pod or _reservation_ref(self.client, reservation.name), "reservation", what)

    def _repair(self, repair: Repair) -> None:
        entry = repair.entry
        current = resources.pool_entries(self.client.get(self.client.path(IPPOOLS, entry.pool)) or {})
        held = current.get(entry.offset)
        if held is None or not resources.entry_owner(held).same_attachment(entry.owner):
            self._skip(f"{entry.describe()}: changed since read, reservation not recreated")
            return
        what = f"reservation {repair.name} for {entry.describe()}: {repair.reason}"
        if self._before_write(f"would recreate {what}"):
            self.report.repaired.append(repair.name)
            return
        key = PoolKey(_network_of(repair.name, entry), entry.cidr)
        holder = reserve_entry(self.client, key, entry.version, entry.ip, entry.owner)
        if holder is not None:
            self._skip(f"reservation {repair.name} exists now (container {holder.container_id}), not recreated")
            return
        self.report.repaired.append(repair.name)
        if self.repaired is not None:
            self.repaired.inc()
        self.ctx.log(f"{self.source}: recreated {what}")
        _, pod = self._confirm(entry.owner.podref)
        self.ctx.event(self.client, pod or _pool_ref(self.client, entry.pool), reason="RecreatedReservation",
                       message=f"{self.source}: recreated {what}")  # fmt: skip

    def _confirm_entry(self, owner: Owner) -> tuple[Judgement, dict[str, Any] | None]:
        """A held entry: its pod, as _confirm; one held for a sticky key is released only while sticky is still
        off for its network (else it is retained). A retained entry: its sticky key's owner, read fresh."""
        if owner.retained:
            pod = self._confirm(owner.podref)[1] if owner.sticky_kind == "pod" else None
            evidence = self.lookups.confirm(owner)
            return judge_retained(owner, pod_exists=pod is not None, evidence=evidence, now=time.time()), pod
        judgement, pod = self._confirm(owner.podref)
        if judgement.verdict is Verdict.RELEASE and sticky.retains(owner) and not self._sticky_off(owner):
            return Judgement(Verdict.RETAINED, "sticky is on for its network again: retained at the next pass"), pod
        return judgement, pod

    def _sticky_off(self, owner: Owner) -> bool:
        return sticky.Evidence(networks=self.lookups.networks()).sticky_off(owner) is not None

    def _confirm(self, podref: str) -> tuple[Judgement, dict[str, Any] | None]:
        """The pod as it is now (one GET per pod per pass), judged again."""
        namespace, _, name = podref.partition("/")
        if namespace and name and podref not in self.pods:
            self.pods[podref] = self.client.get(self.client.resource("pods", name, namespace=namespace), named=True)
        pod = self.pods.get(podref)
        return judge_pod(podref, None if pod is None else pod_state(pod)), pod

    def _before_write(self, message: str) -> bool:
        """Before a write: stop if the Lease is lost; True in a dry run (logging what would be done instead)."""
        if not self.ctx.may_act():
            raise _LeaseLost
        if self.ctx.dry_run:
            self.ctx.log(f"{self.source}: (dry run) {message}")
        return self.ctx.dry_run

    def _record(self, involved: dict[str, Any], kind: str, what: str) -> None:
        self.released.inc(kind=kind)
        self.ctx.log(f"{self.source}: released {what}")
        reason = "ReleasedAllocation" if kind == "allocation" else "ReleasedReservation"
        self.ctx.event(self.client, involved, reason=reason, message=f"{self.source}: released {what}")

    def _keep(self, what: str, reason: str) -> None:
        self.report.kept.append(Kept(what, reason, True))
        self.ctx.log(f"{self.source}: kept {what}: {reason}")

    def _skip(self, message: str) -> None:
        self.report.skipped.append(message)
        self.ctx.log(f"{self.source}: skipped {message}")


def _as_retained(held: Owner, what: str, retain: EntryRetain | ReservationRetain, reason: str) -> tuple[Owner, str]:
    """The holder as its missed DEL would have left it now, and what the log and the Event say of it."""
    owner = sticky.retained(held, now=int(time.time()), retention=retain.retention, controller=retain.controller)
    until = f" until {owner.expires}" if owner.expires else " until its owner is gone"
    return owner, f"{what} for {owner.sticky}{until}: {reason} (a missed DEL)"


def _reservation_of(client: KubeClient, name: str, entry: Entry, owner: Owner) -> dict[str, Any]:
    """The per-address object `name` for `entry` held or retained by `owner`, with its address and labels."""
    return resources.reservation(name, owner, client.namespace, network=_network_of(name, entry), cidr=entry.cidr,
                                 address=(entry.version, entry.ip))  # fmt: skip


def _network_of(name: str, entry: Entry) -> str:
    """The network of `entry`'s reservation `name` ('[<network>-]<address>')."""
    return name[: len(name) - len(entry.suffix)].removesuffix("-")


def _pool_ref(client: KubeClient, name: str) -> dict[str, Any]:
    return resources.reference(IPPOOLS, name, client.namespace)


def _reservation_ref(client: KubeClient, name: str) -> dict[str, Any]:
    return resources.reference(RESERVATIONS, name, client.namespace)


class ReconcileMetrics:
    def __init__(self, registry: Registry) -> None:
        self.capacity = registry.gauge("pool_capacity", "Addresses the pool's range can hand out", ("pool",))
        self.allocated = registry.gauge("pool_allocated", "Addresses allocated in the pool", ("pool",))
        self.released = registry.counter(
            "leaks_released_total", "Leaked allocations and reservations released", ("kind",)
        )
        for kind in ("allocation", "reservation"):  # there from the start: an alert's increase() sees the first leak
            self.released.inc(0, kind=kind)
        self.repaired = registry.counter("reservations_repaired_total", "Missing reservations recreated")
        self.retained = registry.counter("sticky_retained_total", "Sticky addresses of gone pods turned retained")
        self.runs = registry.counter("reconcile_runs_total", "Reconciler passes, by result", ("result",))
        self.duration = registry.histogram("reconcile_duration_seconds", "Duration of a reconciler pass")

    def pools(self, observed: Observed, report: Report, configured: Sequence[Window] = ()) -> None:
        gone = Counter(entry.pool for entry in report.released) if not report.dry_run else Counter()
        held = Counter(entry.pool for entry in observed.entries)
        for pool in observed.pools:
            self.capacity.set(capacity(pool, configured), pool=pool.name)
            self.allocated.set(held[pool.name] - gone[pool.name], pool=pool.name)
        names = [{"pool": pool.name} for pool in observed.pools]
        self.capacity.forget(names)
        self.allocated.forget(names)


class Reconciler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.metrics = ReconcileMetrics(ctx.registry)
        self.owed = False  # a scheduled run did not complete: the next term runs it at once

    def run_until_done(self, stop: threading.Event) -> Report | None:
        """A scheduled run, retried with backoff while it cannot read all it needs (the API server down, a
        CRD not installed yet) and this replica leads; until it completes it stays `owed`. Each trouble is
        said once (log, /readyz); what could not be judged was kept. It beats (/healthz) at each try, while
        waiting to try again, and per item applied: a loop retrying, or in a long pass, is alive."""
        self.owed = True
        backoff = Backoff(cap=RETRY_CAP, alive=lambda: self.ctx.health.beat("reconcile"))
        while not stop.is_set() and self.ctx.may_act():
            self.ctx.health.beat("reconcile")
            try:
                report = self.run_once()
            except TryAgainLater as exc:
                self.ctx.health.failing("reconcile", exc, self.ctx.log)
            else:
                for problem in report.unread:
                    self.ctx.health.failing("reconcile", problem, self.ctx.log)
                if not report.unread:
                    self.owed = False
                    self.ctx.health.working("reconcile", self.ctx.log)
                    return report
            backoff.wait(stop)
        return None

    def run_once(self) -> Report:
        started = time.monotonic()
        client = self.ctx.client()
        try:
            report = self._pass(client)
        except Exception:
            self.metrics.runs.inc(result="error")
            raise
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
            client.close()
        self.metrics.runs.inc(result="ok")
        self.ctx.log(f"reconcile: {report.summary()} in {time.monotonic() - started:.2f}s")
        return report

    def publish_pools(self) -> None:
        """The pool gauges from the pools as they are, before any pass: /metrics has them from start-up rather
        than from the first scheduled run (04:30 by default). Reads only; a failure is logged."""
        client = self.ctx.client()
        try:
            reading = observe(client, pods=False, nodes=False)
            self.metrics.pools(reading.observed, Report(), configured_windows(client, self.ctx))
        except WhereaboutsError as exc:
            self.ctx.log(f"reconcile: pool gauges not read at start-up: {exc.msg}")
        finally:
            client.close()

    def _pass(self, client: KubeClient) -> Report:
        reading = observe(client)
        lookups = Lookups(client, self.ctx.log)
        observed = reading.observed
        evidence = lookups.evidence([*(e.owner for e in observed.entries), *(r.owner for r in observed.reservations)])
        planned = plan(replace(reading.observed, sticky=evidence), now=time.time())
        for kept in planned.kept:
            if kept.notable:
                self.ctx.log(f"reconcile: kept {kept.what}: {kept.reason}")
        applier = Applier(self.ctx, client, source="reconcile", released=self.metrics.released,
                          repaired=self.metrics.repaired, retained=self.metrics.retained)  # fmt: skip
        report = applier.apply(planned, reading.pools)
        report.unread = [*lookups.unread, *applier.lookups.unread]
        self.metrics.pools(reading.observed, report, configured_windows(client, self.ctx))
        return report


def configured_windows(client: KubeClient, ctx: Context) -> list[Window]:
    """The ranges the NetworkAttachmentDefinitions configure (none when their CRD is missing: no Multus)."""
    try:
        return windows(client.list(client.resource(NADS, group=NAD_GROUP, version=NAD_VERSION)))
    except TryAgainLater as exc:
        ctx.log(f"reconcile: pool capacities count the ranges alone: {exc.msg}")
        return []
