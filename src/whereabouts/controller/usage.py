"""`pool-usage`: each IPPool's usage in its status, what `kubectl get ippools` shows (Range, Network, Used, Free).

The plugin never writes an IPPool's status and this controller writes nothing else: the CRD's status
subresource keeps the two apart (the plugin's JSON patches on /spec and these merge patches on /status never
conflict). The numbers (see deploy/base/crds/ippools.yaml for the fields):

    size      addresses automatic picks may hand out: the window of the pool's range as the network's NAD says
              (range_start/range_end, exclude, the gateway; a node slice: its slice of that window), IPv4
              x.x.x.0 left out. Without a NAD naming the pool's network: its CIDR, less network and broadcast
              (a node slice: the whole slice), and `config` is "".
    held      entries an attachment holds; retained: sticky entries kept after their DEL (`retained` set)
    free      size less the entries inside the window (an entry outside it, a fixed address, takes none)

Cadence: the pools are listed and watched (resuming from the last version seen; listed again when the
version expired or the watch failed). A pool seen changing is written after SETTLE seconds, and then at
most once every INTERVAL seconds however fast it changes: a burst of ADDs costs a write or two per pool, not
one per ADD. A status is written only when a number changed. The NADs and NodeSlicePools (which say a pool's
window and which part of its name is a node) are read again every RESYNC seconds, and every pool rechecked.

The same numbers are metrics (`whereabouts_pool_size`, `_held`, `_retained`, `_free`, by pool: what an alert
on a filling pool reads), set whenever a pool is looked at, by every replica (a standby too: it watches as
well), and dropped with the pool.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from whereabouts.config import IPAMConfig, parse_ipam
from whereabouts.controller.context import Context
from whereabouts.controller.nads import NAD_GROUP, NAD_VERSION, NADS, nad_config, whereabouts_ipam
from whereabouts.errors import TryAgainLater, WhereaboutsError
from whereabouts.kube import resources
from whereabouts.kube.client import Expired, KubeClient
from whereabouts.kube.resources import IPPOOLS, NODE_SLICE_POOLS
from whereabouts.nodeslice import pool_window
from whereabouts.ranges import Network

INTERVAL = 5.0  # seconds: at most one status write per pool in this time
SETTLE = 1.0  # seconds a first change waits, so that the start of a burst lands in one write
RESYNC = 30.0  # seconds between reads of the NADs and NodeSlicePools (and a recheck of every pool)
WATCH_TIMEOUT = 20  # seconds a watch runs before it is renewed (so a stopped run's watcher ends soon)
NUMBERS = ("network", "node", "config", "size", "held", "retained", "free")  # what a write is decided on
GAUGES = {
    "size": "Addresses automatic picks may hand out in the pool (its status.size)",
    "held": "Addresses attachments hold in the pool (its status.held)",
    "retained": "Sticky addresses kept after their DEL in the pool (its status.retained)",
    "free": "Addresses of the pool's window still free (its status.free)",
}


@dataclass(frozen=True)
class Windows:
    """What the cluster says about pools' windows: the NADs' whereabouts configs and the NodeSlicePools."""

    configs: tuple[tuple[str, IPAMConfig], ...] = ()  # ("NAD <ns>/<name>", config), oldest first
    slice_pools: tuple[dict[str, Any], ...] = ()

    @cached_property
    def names(self) -> resources.PoolNames:
        return resources.PoolNames(self.networks, (), self.slice_pools)

    @property
    def networks(self) -> set[str]:
        return {cfg.network_name for _, cfg in self.configs}


def read_windows(client: KubeClient, log: Any) -> Windows:
    """The NADs (cluster-wide) and NodeSlicePools; what cannot be read is left out (pools fall back to CIDRs)."""
    configs: list[tuple[str, IPAMConfig]] = []
    slice_pools: list[dict[str, Any]] = []
    try:
        nads = client.list(client.resource(NADS, group=NAD_GROUP, version=NAD_VERSION))
    except WhereaboutsError as exc:
        log(f"pool-usage: NADs not read, windows taken from the pools' CIDRs: {exc.msg}")
        nads = []
    for nad in sorted(nads, key=lambda o: o.get("metadata", {}).get("creationTimestamp", "")):
        parsed = _nad_config(nad)
        if parsed is not None:
            configs.append(parsed)
    try:
        slice_pools = client.list(client.path(NODE_SLICE_POOLS))
    except WhereaboutsError as exc:
        log(f"pool-usage: NodeSlicePools not read: {exc.msg}")
    return Windows(tuple(configs), tuple(slice_pools))


def _nad_config(nad: dict[str, Any]) -> tuple[str, IPAMConfig] | None:
    meta = nad.get("metadata", {})
    try:
        config = nad_config(nad)
        found = whereabouts_ipam(config) if isinstance(config, dict) else None
        if found is None:
            return None
        name, ipam = found
        # the nodes' flat file is not readable here: a NAD leaning on it for its range gives no window
        cfg = parse_ipam({"datastore": "kubernetes", **ipam}, name, config.get("allowPersistentIPs"))
    except (ValueError, RecursionError, WhereaboutsError):
        return None
    return f"NAD {meta.get('namespace', '')}/{meta.get('name', '')}", cfg


def pool_status(obj: dict[str, Any], windows: Windows) -> dict[str, Any] | None:
    """The numbers of one listed IPPool; None for a pool whose name or range the plugin never writes."""
    key = windows.names.key(obj)
    if key is None:
        return None
    rng, source = pool_window(key, windows.configs)
    net = Network.parse(key.cidr)
    spans = [(max(lo, net.address), min(hi, net.last)) for lo, hi in rng.free_segments()]
    spans = [(lo, hi) for lo, hi in spans if lo <= hi]
    size = sum(hi - lo + 1 - _zeros(net.version, lo, hi) for lo, hi in spans)
    held = retained = taken = 0
    for _, offset, entry in resources.pool_offsets(obj):  # (a key that is no offset, as the plugin skips it)
        ip = net.address + offset
        if isinstance(entry, dict) and entry.get("retained"):
            retained += 1
        else:
            held += 1
        if any(lo <= ip <= hi for lo, hi in spans) and not (net.version == 4 and not ip & 0xFF):
            taken += 1
    return {"network": key.network, "node": key.node, "config": source, "size": size, "held": held,
            "retained": retained, "free": max(0, size - taken)}  # fmt: skip


def _zeros(version: int, lo: int, hi: int) -> int:
    """IPv4 addresses ending in .0 within [lo, hi]: never picked automatically."""
    return (hi >> 8) - ((lo - 1) >> 8) if version == 4 and lo <= hi else 0


def changed(obj: dict[str, Any], numbers: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return any(status.get(name, "") != numbers[name] for name in NUMBERS)  # an empty string is stored as absent


@dataclass
class _Pending:
    """The watch's view, shared with the writer: the latest object of each pool, and which changed since."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: dict[str, float] = field(default_factory=dict)  # name -> when first seen changed (monotonic)
    wake: threading.Event = field(default_factory=threading.Event)

    def seen(self, obj: dict[str, Any], now: float) -> None:
        name = obj.get("metadata", {}).get("name", "")
        with self.lock:
            self.latest[name] = obj
            self.dirty.setdefault(name, now)
        self.wake.set()

    def gone(self, name: str) -> None:
        with self.lock:
            self.latest.pop(name, None)
            self.dirty.pop(name, None)

    def relisted(self, objs: Collection[dict[str, Any]], now: float) -> None:
        with self.lock:
            self.latest = {o.get("metadata", {}).get("name", ""): o for o in objs}
            self.dirty = dict.fromkeys(self.latest, now)
        self.wake.set()


class PoolUsage:
    def __init__(self, ctx: Context, *, interval: float = INTERVAL) -> None:
        self.ctx, self.interval = ctx, interval
        self.client = ctx.client()
        self.windows = Windows()
        self.written: dict[str, float] = {}  # pool name -> when its status was last written (monotonic)
        self.gauges = {key: ctx.registry.gauge(f"pool_{key}", text, ("pool",)) for key, text in GAUGES.items()}

    def sync(self) -> int:
        """One pass over every pool (what --once does): the number of statuses written."""
        self.windows = read_windows(self.client, self.ctx.log)
        pools = self.client.list(self.client.path(IPPOOLS))
        self.forget_gone(obj.get("metadata", {}).get("name", "") for obj in pools)
        return sum(self.write(obj) for obj in pools)

    def forget_gone(self, names: Iterable[str]) -> None:
        """The gauges of pools not in `names` (deleted) stop being reported, and their last writes are forgotten
        (node slices' pools come and go for months)."""
        known = set(names)
        for gauge in self.gauges.values():
            gauge.forget([{"pool": name} for name in known])
        self.written = {name: at for name, at in self.written.items() if name in known}

    def write(self, obj: dict[str, Any]) -> bool:
        """Write `obj`'s status if a number changed; True when written."""
        numbers = pool_status(obj, self.windows)
        if numbers is None:
            return False
        name = obj["metadata"]["name"]
        for key, gauge in self.gauges.items():
            gauge.set(numbers[key], pool=name)
        if not changed(obj, numbers):
            return False
        summary = ", ".join(f"{k} {numbers[k]}" for k in ("size", "held", "retained", "free"))
        if self.ctx.dry_run or not self.ctx.may_act():
            why = "dry-run: would" if self.ctx.dry_run else "not leading: did not"
            self.ctx.log(f"pool-usage: {why} write IPPool {name} status: {summary}")
            return False
        updated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = self.client.path(IPPOOLS, name) + "/status"
        # the API server reads "" in a merge patch as null (and refuses it for a string): absent stands for ""
        body = {"status": {**{k: v if v != "" else None for k, v in numbers.items()}, "updated": updated}}
        return self.client.merge_patch_existing(path, body) is not None

    # Long-running

    def run(self, stop: threading.Event) -> None:
        """Watch the pools and write the statuses that changed, at most every `interval` per pool, until `stop`."""
        pending = _Pending()
        watcher = threading.Thread(target=self._watch, args=(pending, stop), daemon=True)
        watcher.start()
        last_resync = -RESYNC
        while not stop.is_set():
            self.ctx.health.beat("pool-usage")
            now = time.monotonic()
            if now - last_resync >= RESYNC:
                self.windows, last_resync = read_windows(self.client, self.ctx.log), now
                self.ctx.health.working("pool-usage", self.ctx.log)  # running again after a failure, if any
                with pending.lock:
                    pending.dirty.update({name: now - SETTLE for name in pending.latest if name not in pending.dirty})
                    known = list(pending.latest)
                self.forget_gone(known)
            wait = self._write_due(pending, now)
            pending.wake.wait(min(wait, 1.0))
            pending.wake.clear()

    def _write_due(self, pending: _Pending, now: float) -> float:
        """Write each changed pool whose time has come; returns the seconds until the next one is due."""
        with pending.lock:
            due = {}
            for name, first in pending.dirty.items():
                at = max(first + SETTLE, self.written.get(name, -self.interval) + self.interval)
                due[name] = at
            ready = [(name, pending.latest[name]) for name, at in due.items() if at <= now]
            for name, _ in ready:
                del pending.dirty[name]
        for name, obj in ready:
            try:
                if self.write(obj):
                    self.written[name] = time.monotonic()
            except TryAgainLater as exc:  # the next change or resync tries again
                self.ctx.log(f"pool-usage: IPPool {name} status not written: {exc.msg}")
        later = [at - now for at in due.values() if at > now]
        return min(later, default=1.0)

    def _watch(self, pending: _Pending, stop: threading.Event) -> None:
        client = self.ctx.client()
        path = client.path(IPPOOLS)
        version = ""
        try:
            while not stop.is_set():
                try:
                    if not version:
                        objs, version = client.list_with_version(path)
                        pending.relisted(objs, time.monotonic())
                    for event in client.watch(path, version, timeout=WATCH_TIMEOUT):
                        version = event.object.get("metadata", {}).get("resourceVersion") or version
                        if event.type == "DELETED":
                            pending.gone(event.object.get("metadata", {}).get("name", ""))
                        elif event.type in ("ADDED", "MODIFIED"):
                            pending.seen(event.object, time.monotonic())
                        if stop.is_set():
                            break
                except Expired:
                    version = ""
                except TryAgainLater as exc:
                    self.ctx.log(f"pool-usage: watch {path}: {exc.msg}; listing again")
                    version = ""
                    stop.wait(1.0)
        finally:
            client.close()
