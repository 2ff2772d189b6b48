"""The node daemon's view of the Kubernetes datastore: per-address objects as the unit of truth, the IPPool a
mirror written behind them.

One `KubeCache` per datastore settings, for the life of the daemon (the StorePool keeps it; a CNI process
never makes one). It watches the namespace's OverlappingRangeIPReservations and IPPools (kube.informer), so a
decision costs no read: the snapshot of a pool is its cached IPPool with every reservation of its network
inside its range laid over it (a reservation says who holds an address; an IPPool entry with no reservation
still blocks its address, since the Go plugin writes its entry before its reservation). Holding an address is
creating its reservation: the API server lets one create win, so two nodes deciding from copies that lag
each other never both hold it; the loser learns the holder and decides again. Releasing it is deleting the
reservation (with the resourceVersion seen as a precondition).

The IPPool entries follow, in batches, off the call's critical path (`MirrorWriter`): every MIRROR_DELAY
seconds a pool with changes gets one JSON patch that makes its entries say what the reservations say (the Go
plugin, and every reader of the Go format, still sees every address). One daemon writes a pool for all: every
daemon that serves a pool marks the addresses of every reservation its copy sees come and go there, and the
pool's writer (named in its WRITER_ANNOTATION by its last patch) writes them; the others only compare, and
take over when the writer has owed them an entry for MIRROR_LEASE seconds (a patch costs the server in
proportion to the pool: ten daemons patching it each round cost ten times one); a daemon that closes takes its
name off its pools (leaves it empty), and the next to see a change writes it within UNCLAIMED_WAIT (each
daemon's patience: the first names itself, the others see it).
A patch guards each entry it changes by what the cache showed there; one that fails reads the pool and is made
again. An entry is removed only when its address has no reservation (read afresh) and it is the entry of an
attachment seen released, or one this plugin wrote after its reservation (marked so) that a comparison (`adopt`)
finds with no reservation (its DEL's mirror round never ran, see `_left_over`). A writer
killed before a batch leaves entries missing (the reservations still hold the addresses: the Go plugin checks
them before it hands one out) or left over (they block an address until that comparison); the daemon that
takes over writes what its copy shows owed, the next daemon that serves the pool compares it whole (`adopt`),
and the reconciler releases left-over entries of pods that are gone.

Cost: an uncontended ADD is one create of a small object; the server's work per call no longer grows with
the number of addresses held. The mirror's patch still does, once per pool per MIRROR_DELAY, not per call.
Nor does the daemon's: the copy files each reservation as it arrives (whereabouts.holdings), and a decision
looks up what concerns its attachment instead of walking the pool.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from whereabouts import deadline
from whereabouts.config import KubernetesSettings
from whereabouts.holdings import Holdings, PoolEntries, PoolSources
from whereabouts.kube import resources
from whereabouts.kube.client import APIError, Conflict, KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.kube.informer import Informer, Object, version_of
from whereabouts.kube.resources import IPPOOLS, RESERVATIONS
from whereabouts.model import Owner, PoolKey, PoolState, Snapshot
from whereabouts.ranges import format_ip, parse_request

MIRROR_DELAY = 0.2  # seconds a pool's mirror waits for more changes before its patch
MIRROR_SHARE = 10  # ... and at least this many times what the last round of patches took
MIRROR_MAX_PAUSE = 2.0  # ... but no more than this (a slow round under load must not leave the pools stale)
MIRROR_MAX_BACKOFF = 30.0  # seconds between rounds at most while the server fails
SYNC_WAIT = 5.0  # seconds a first call waits for the cache to fill before reading the server itself
CONFIRM_BY_LIST = 8  # removals confirmed by one LIST of the reservations rather than a GET each, when more
CONFIRM_GET_WORTH = 25  # ... and more than one per this many reservations: a LIST reads (and decodes) them all
COMPLAIN_EVERY = 10.0  # seconds between log lines about a mirror that cannot be written
ADOPT_EVERY = 300.0  # seconds between full comparisons of a pool served with its reservations
MIRROR_LEASE = 8.0  # seconds a daemon leaves an entry it owes to the pool's writer before it writes itself
DEFER_PAUSE = 1.0  # seconds between rounds that only left pools to their writers (each compares what is owed)
WRITER_ANNOTATION = f"{resources.GROUP}/mirror-writer"  # the daemon that last wrote a pool's entries
WRITER_PATH = "/metadata/annotations/" + WRITER_ANNOTATION.replace("~", "~0").replace("/", "~1")  # (JSON pointer)
HAND_BACK_WAIT = 5.0  # seconds a closing daemon waits for its last round before it hands its pools back
HAND_BACK_BUDGET = 2.0  # ... and the seconds it may spend handing them back (a pod has 10 s to stop)
UNCLAIMED_WAIT = 2.0  # seconds at most a daemon waits before it writes a pool handed back (see _defers)
CLOSE_WAIT = 2.0  # seconds `close` waits for each watch's thread to end (a list under way ends within its timeout)
REPAIR = ("", "")  # marks an address an adoption found wrong: its reservation is read afresh before it is written

Address = tuple[str, int, int]  # (network, IP version, value)


@dataclass
class _Held:
    name: str
    owner: Owner
    obj: Object
    subnet: tuple[int, int, int] | None  # (IP version, network, prefix) of the pool it was taken in, if it says


@dataclass
class _Index:
    """Reservations by (network, version, ip) and by attachment (by network: the holdings'); names whose network
    is not known yet (a Go plugin's object carries no label) wait in `unplaced` until a call of some network asks."""

    by_address: dict[Address, _Held] = field(default_factory=dict)
    by_name: dict[str, Address] = field(default_factory=dict)
    by_attachment: dict[str, set[str]] = field(default_factory=dict)  # attachment label -> names
    unplaced: dict[str, Object] = field(default_factory=dict)
    objects: dict[str, Object] = field(default_factory=dict)  # every one indexed, by name
    generation: int = 0  # of `unplaced`: a network tries to place them once per change
    tried: dict[str, int] = field(default_factory=dict)  # network -> the generation it tried


@dataclass(frozen=True)
class _Decoded:
    """One version of a pool's IPPool, decoded (`state`) and its entries filed (`entries`, None: no entry);
    `written`: its spec.allocations as listed, to find what the next version changed."""

    version: object
    state: PoolState
    entries: PoolEntries | None
    written: Any
    plain: bool  # every offset written as one decimal number, as the Go plugin writes it (an address, one text)

    @staticmethod
    def of(key: PoolKey, obj: Object, previous: _Decoded | None) -> _Decoded:
        """`obj` decoded. From `previous` (an older version of the same pool) when there is one: only the entries
        that differ are decoded and filed again (a 10,000-entry pool cost the daemon 40-55 ms per version to decode
        and file whole, on the first call after each mirror patch; a round of changes costs a walk of its
        entries' texts). Decoded whole: offsets not written as the Go plugin writes them (`007`, two texts of one
        address: the last one listed wins), and a version that changes more than a third of the entries (filing
        them one by one costs more). Equal texts decode alike: the CRD's schema types every field."""
        written = resources.pool_entries(obj)
        version = obj["metadata"]["resourceVersion"]
        changes = None
        if previous is not None and previous.plain:
            limit = len(written) // 3 + 1 if isinstance(written, dict) else 0
            changes = _changes(key, previous.written, written, limit=limit)
        if changes is None or previous is None:
            state = resources.decode_pool(key, obj)
            entries = PoolEntries(state.allocations) if state.allocations else None
            return _Decoded(version, state, entries, written, all(_plain(text) is not None for text in written))
        allocations = dict(previous.state.allocations)
        for ip, owner in changes.items():
            if owner is None:
                allocations.pop(ip, None)
            else:
                allocations[ip] = owner
        entries = previous.entries.evolved(changes) if previous.entries is not None else PoolEntries(allocations)
        return _Decoded(version, PoolState(key, version, allocations), entries if allocations else None, written, True)


_ABSENT = object()


def _plain(offset: str) -> int | None:
    """The offset, if written as the Go plugin writes it: one decimal number, no other text for its address
    (None: any other key, one the decoding skips or reads as another spelling, is left to a whole one)."""
    value = resources.offset_value(offset)
    return value if value is not None and str(value) == offset else None


def _changes(key: PoolKey, before: Any, after: Any, *, limit: int) -> dict[int, Owner | None] | None:
    """The addresses whose entries differ from `before` to `after` (spec.allocations as listed), decoded (None:
    the entry went); None (decode the pool whole) when a changed offset is not one plain decimal number, or more
    than `limit` entries changed."""
    _, base = parse_request(key.cidr)
    changes: dict[int, Owner | None] = {}
    try:
        for offset, raw in after.items():
            if before.get(offset, _ABSENT) != raw:
                if (value := _plain(offset)) is None or len(changes) >= limit:
                    return None
                changes[base + value] = resources.entry_owner(raw)
        for offset in before.keys() - after.keys():
            if (value := _plain(offset)) is None or len(changes) >= limit:
                return None
            changes[base + value] = None
    except (ValueError, TypeError, AttributeError):  # not the format: decoding it whole says what is wrong
        return None
    return changes


class KubeCache:
    def __init__(self, settings: KubernetesSettings) -> None:
        def client() -> KubeClient:  # one each: a client's connection serves one request at a time
            return KubeClient(load_credentials(settings.kubeconfig))

        first = client()
        self.namespace = first.namespace
        self.lock = threading.Lock()
        self.index = _Index()
        self.decoded: dict[str, _Decoded] = {}  # pool name -> its IPPool's last version decoded
        self.holdings = Holdings()  # the reservations again, filed for decisions (whereabouts.holdings)
        self.own: dict[str, tuple[str, str]] = {}  # reservation -> the attachment a call of this daemon holds it for
        self.vanished: dict[str, Object] = {}  # of those, deleted by none of its calls: kept in the copy, recreated
        self.mirrored = settings.ippool_mirror  # false: the reservations alone; no IPPool read, watched or written
        self.reservations = Informer(first, first.path(RESERVATIONS), listener=self._reindex)
        pools_client = client()
        self.pools = Informer(pools_client, pools_client.path(IPPOOLS), listener=self._pool_changed)
        self.mirror = MirrorWriter(client(), self, enabled=self.mirrored)
        self.reservations.start()
        if self.mirrored:
            self.pools.start()

    def ready(self, wait: float = SYNC_WAIT) -> bool:
        """Whether decisions may come from the copy: both resources listed and watched (a watch refused, say
        by RBAC without `watch`, or failing: no, and the store reads the server as a CNI process does)."""
        return self.reservations.usable(wait) and (not self.mirrored or self.pools.usable(wait))

    def _pool_changed(self, name: str, obj: Object | None) -> None:
        if obj is None:  # deleted (a gone node's slice, a re-slice, by hand): its decoded entries go with it
            with self.lock:
                self.decoded.pop(name, None)
            self.mirror.deleted(name)

    # -- the index of reservations ------------------------------------------------------------------------------

    def _reindex(self, name: str, obj: Object | None) -> None:
        with self.lock:
            kept = obj is None and self._keeps_vanished(name)
            if not kept:
                was = self.index.by_name.get(name)
                before = None if was is None else (was, self.index.by_address[was])
                self._unindex(name)
                after = None if obj is None else self._index(name, obj)
                self._follow_own(name, obj)
        # (outside the lock: the writer's lock is taken under none of ours)
        if kept:
            self.mirror.restore.set()  # the writer's thread recreates it at once (restore_vanished)
            return
        self.mirror.watched(before, after, gone=obj is None)

    def _index(self, name: str, obj: Object) -> tuple[Address, _Held] | None:
        labels = obj.get("metadata", {}).get("labels") or {}
        owner_key = resources.attachment_label(resources.reservation_owner(obj))
        self.index.by_attachment.setdefault(owner_key, set()).add(name)
        self.index.objects[name] = obj
        network = labels.get(resources.NETWORK_LABEL, "")
        address = self._address(name, obj, network) or resources.reservation_address(name, set(self.index.tried))
        if address is None:  # (a network no call has asked about yet: placed when one does)
            self.index.unplaced[name] = obj
            self.index.generation += 1
            return None
        return address, self._place(name, obj, address)

    def _address(self, name: str, obj: Object, network: str) -> Address | None:
        text = (obj.get("spec") or {}).get("address")
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                version, ip = parse_request(text)
                if resources.reservation_name(network, version, ip) == name:
                    return network, version, ip
        return resources.reservation_address(name, {network})

    def _place(self, name: str, obj: Object, address: Address) -> _Held:
        index = self.index
        labels = obj.get("metadata", {}).get("labels") or {}
        subnet = resources.reservation_subnet(labels)
        owner = resources.reservation_owner(obj)
        held = index.by_address[address] = _Held(name, owner, obj, subnet)
        index.by_name[name] = address
        self.holdings.put(address, owner, subnet)
        return held

    def _unindex(self, name: str) -> None:
        index = self.index
        index.unplaced.pop(name, None)
        obj = index.objects.pop(name, None)
        if obj is not None:
            label = resources.attachment_label(resources.reservation_owner(obj))
            names = index.by_attachment.get(label, set())
            names.discard(name)
            if not names:  # attachments come and go for months: keep none that holds nothing
                index.by_attachment.pop(label, None)
        address = index.by_name.pop(name, None)
        if address is not None:
            index.by_address.pop(address, None)
            self.holdings.drop(address)

    def _place_unplaced(self, network: str) -> None:
        """Names of reservations not placed yet that read as `network`'s (caller holds the lock)."""
        for name, obj in list(self.index.unplaced.items()):
            address = resources.reservation_address(name, {network})
            if address is not None:
                del self.index.unplaced[name]
                self._place(name, obj, address)

    def held(self, address: Address) -> _Held | None:
        with self.lock:
            return self.index.by_address.get(address)

    def network_holdings(self, network: str) -> dict[Address, _Held]:
        with self.lock:
            self._place_waiting(network)
            return {a: self.index.by_address[a] for a in self.holdings.reserved.get(network, ())}

    def _place_waiting(self, network: str) -> None:
        """Place the reservations whose network was not known, if any may be `network`'s (caller holds the lock)."""
        if self.index.unplaced and self.index.tried.get(network) != self.index.generation:
            self.index.tried[network] = self.index.generation
            self._place_unplaced(network)

    def holds_in(self, key: PoolKey) -> bool:
        """Whether a reservation of the copy was taken in `key`'s range."""
        with self.lock:
            self._place_waiting(key.network)
            return self.holdings.pool(key.network, resources.pool_subnet(key)) is not None

    def attachment_reservations(self, network: str, owner: Owner) -> list[tuple[str, Object]]:
        """The reservations of the attachment (container ID and interface) in `network`: a reservation is the
        record of its address, and another network's is not this DEL's to drop."""
        with self.lock:
            names = self.index.by_attachment.get(resources.attachment_label(owner), set())
            found = [(name, self.index.objects[name]) for name in sorted(names)
                     if name in self.index.objects and self.index.by_name.get(name, ("",))[0] == network]  # fmt: skip
        return [(name, obj) for name, obj in found if resources.reservation_owner(obj).same_attachment(owner)]

    # -- this daemon's holds: a reservation deleted under one is recreated ---------------------------------------

    def holding(self, name: str, owner: Owner) -> None:
        """A call of this daemon holds reservation `name` for `owner` (committed); retained, it no longer does."""
        with self.lock:
            if owner.retained:
                self.own.pop(name, None)
            else:
                self.own[name] = (owner.container_id, owner.ifname)

    def releasing(self, name: str, holder: Owner | None = None) -> None:
        """A call of this daemon is about to delete reservation `name` (a release, an abort, a leftover), or to
        give it back to another holder: its deletion is no longer one to undo (with `holder`: if it is that
        one's; a stale DEL does not touch another attachment's)."""
        with self.lock:
            if holder is None or self.own.get(name) == (holder.container_id, holder.ifname):
                self.own.pop(name, None)

    def _keeps_vanished(self, name: str) -> bool:
        """(Caller holds the lock.) Reservation `name` was deleted: whether it is one a call of this daemon holds,
        released by none of its calls. The Go plugin's DEL (after its ADD lost the address to us: its
        reservation's create refused) deletes the reservation by name, whoever holds it; freed in the copy, the
        address would go to the next ADD while our attachment still uses it. Such a one stays in the copy and
        is recreated (restore_vanished) while its pod lives."""
        address = self.index.by_name.get(name)
        held = None if address is None else self.index.by_address.get(address)
        mine = self.own.get(name)
        if not self.mirrored or held is None or held.owner.retained or mine != (held.owner.container_id,
                                                                                 held.owner.ifname):  # fmt: skip
            self.own.pop(name, None)
            self.vanished.pop(name, None)
            return False
        self.vanished[name] = held.obj
        return True

    def _follow_own(self, name: str, obj: Object | None) -> None:
        """(Caller holds the lock.) Reservation `name` is `obj` now (None: deleted for good)."""
        owner = None if obj is None else resources.reservation_owner(obj)
        if name in self.vanished and owner is not None and (owner.container_id, owner.ifname) != self.own.get(name):
            sys.stderr.write(f"whereabouts-node: reservation {name}, deleted under an address a call of this daemon "
                             f"holds, was created meanwhile by container {owner.container_id} {owner.ifname} (pod "
                             f"{owner.podref or '-'}): the address is held twice\n")  # fmt: skip
        self.vanished.pop(name, None)
        if owner is None or owner.retained or (owner.container_id, owner.ifname) != self.own.get(name):
            self.own.pop(name, None)

    def restore_vanished(self, client: KubeClient) -> bool:
        """Recreate the reservations deleted under addresses this daemon's calls hold (`_keeps_vanished`), each
        only where there is none (a create), while its pod lives; one whose pod is gone or finished (the
        reconciler released it), or that a call of this daemon released meanwhile, is freed in the copy as a
        deletion is. Runs on the mirror writer's thread (with its client). False: some are left for next time."""
        with self.lock:
            waiting = list(self.vanished.items())
        for name, obj in waiting:
            with self.lock:
                mine = self.vanished.get(name) is obj and name in self.own
            owner = resources.reservation_owner(obj)
            if mine and _pod_lives(client, owner.podref):
                self._recreate(client, name, obj, owner)
            else:
                self._vanish(name, obj)
        with self.lock:
            return not self.vanished

    def _recreate(self, client: KubeClient, name: str, obj: Object, owner: Owner) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        body = {"apiVersion": resources.API_VERSION, "kind": resources.KINDS[RESERVATIONS], "spec": obj.get("spec"),
                "metadata": {"name": name, "namespace": self.namespace, "labels": labels}}  # fmt: skip
        try:
            created = client.create(client.path(RESERVATIONS), body)
        except Conflict:  # created by someone meanwhile: the copy learns whose (_follow_own says if another's)
            found = client.get(client.path(RESERVATIONS, name))
            if found is not None:
                self.reservations.put(found)
            return
        with self.lock:
            released = name not in self.own  # by a call of this daemon while it was being created: undo it
        if released:
            with contextlib.suppress(Conflict):  # (changed since: someone else's)
                client.delete(client.path(RESERVATIONS, name), created["metadata"]["resourceVersion"])
            self._vanish(name, obj)
            return
        sys.stderr.write(f"whereabouts-node: reservation {name} of container {owner.container_id} {owner.ifname} "
                         f"(pod {owner.podref or '-'}) was deleted by no call of this daemon while it holds the "
                         "address (the Go plugin's DEL after its failed ADD deletes it by name): "
                         "recreated\n")  # fmt: skip
        self.reservations.put(created)

    def _vanish(self, name: str, obj: Object) -> None:
        """Free a vanished reservation in the copy after all, as its deletion would have (if still the same)."""
        with self.lock:
            if self.vanished.get(name) is not obj:
                return
            del self.vanished[name]
            self.own.pop(name, None)
            address = self.index.by_name.get(name)
            held = None if address is None else self.index.by_address.get(address)
            if address is None or held is None or held.obj is not obj:
                return
            self._unindex(name)
        self.mirror.watched((address, held), None, gone=True)

    # -- snapshots ----------------------------------------------------------------------------------------------

    def pool_object(self, key: PoolKey) -> Object | None:
        return self.pools.get(key.name) if self.mirrored else None

    def snapshot(self, keys: Sequence[PoolKey]) -> Snapshot:
        """What a decision over `keys` reads: each pool as the mirror shows it with the reservations taken in its
        range laid over it (with the mirror off, the reservations alone), every reservation of their networks,
        and the view of the holdings that spares the decision a walk over them (whereabouts.holdings). The
        reservations' part is copied under one hold of the lock: one moment of the copy."""
        mirrored = {key: self._decoded(key) for key in keys}
        releasing = {key: self.mirror.releasing(key) for key in keys}  # entries this daemon is removing
        networks = {key.network for key in keys}
        pools: dict[PoolKey, PoolState] = {}
        sources: dict[PoolKey, PoolSources] = {}
        with self.lock:
            for network in networks:
                self._place_waiting(network)
            for key in keys:
                version, decoded, entries = mirrored[key]
                pools[key], sources[key] = self._pool_state(key, version, decoded, entries, releasing[key])
            reservations = self.holdings.holders(networks)
            view = self.holdings.view(self.lock, networks, sources)
        return Snapshot(pools, reservations, view)

    def pool_state(self, key: PoolKey) -> PoolState:
        return self.snapshot([key]).pools[key]

    def _decoded(self, key: PoolKey) -> tuple[object, PoolState, PoolEntries | None]:
        """The pool's IPPool decoded, and its entries filed (once per resourceVersion, from the version before:
        `_Decoded.of`)."""
        obj = self.pool_object(key)
        if obj is None:  # no IPPool (not written yet, gone, or no mirror): nothing to decode or keep
            with self.lock:
                self.decoded.pop(key.name, None)
            return None, resources.decode_pool(key, None), None
        version = obj["metadata"].get("resourceVersion")
        with self.lock:
            memo = self.decoded.get(key.name)
        if memo is None or memo.version != version or memo.state.key != key:
            memo = _Decoded.of(key, obj, memo if memo is not None and memo.state.key == key else None)
            with self.lock:
                self.decoded[key.name] = memo
        return memo.version, memo.state, memo.entries

    def _pool_state(
        self, key: PoolKey, version: object, decoded: PoolState, entries: PoolEntries | None,
        releasing: dict[int, set[tuple[str, str]]],
    ) -> tuple[PoolState, PoolSources]:  # fmt: skip
        """(Caller holds the lock.) A reservation's entry only where it says it was taken (another range of the
        network that overlaps this one sees it among the reservations, which block it there too)."""
        allocations = dict(decoded.allocations)
        for ip, released in releasing.items():
            mirrored = allocations.get(ip)
            if mirrored is not None and (mirrored.container_id, mirrored.ifname) in released:
                del allocations[ip]
        subnet = resources.pool_subnet(key)
        live = self.holdings.pool(key.network, subnet)
        if live is not None:
            bare = {}  # reservations written before they said their config: the mirrored entry's name
            for ip in live.bare:
                owner, mirrored = live.entries[ip], allocations.get(ip)
                if mirrored is not None and mirrored.same_attachment(owner):
                    bare[ip] = owner.but(netconf=mirrored.netconf)
            allocations.update(live.entries)
            allocations.update(bare)
        covered = entries is None or self.holdings.covers(key.network, key.version, allocations)
        return PoolState(key, version, allocations), PoolSources(key.network, subnet, entries, covered)

    # -- the process's own writes -------------------------------------------------------------------------------

    def wrote_reservation(self, obj: Object) -> None:
        self.reservations.put(obj)

    def deleted_reservation(self, name: str, version: int) -> None:
        self.reservations.drop(name, version)

    def close(self) -> None:
        """The mirror's last round and hand-back, then the watches stopped; each client is closed as its thread
        ends (15 caches made and closed left 60 sockets open until the garbage collector's next cycle). Its
        calls' reservations are no longer its own: a DEL served meanwhile by the cache that replaces it deletes
        one, which this one must not take for another's deletion and recreate (restore_vanished)."""
        with self.lock:
            self.own.clear()
        self.mirror.close()
        self.reservations.stop(CLOSE_WAIT)
        self.pools.stop(CLOSE_WAIT)


def _left_over(cache: KubeCache, key: PoolKey, obj: Object | None) -> dict[int, Owner]:
    """The entries of `key`'s IPPool written after their address's reservation (marked `reservation`:
    resources.entry) whose address has no reservation in the copy: released. This plugin writes an address's
    reservation before such an entry (an ADD in flight has its reservation already), and in process removes the
    entry before the reservation; a daemon's DEL deletes the reservation and leaves the entry to its mirror
    round, which a daemon killed meanwhile never ran, and no daemon watching saw the deletion: nobody else would
    remove it. The Go plugin's entries (it writes no such field, and drops it when it rewrites a pool) and this
    plugin's written without a reservation (a network config without overlapping ranges, then switched to them)
    are left alone: their address may be live with no reservation."""
    _, base = parse_request(key.cidr)
    found: dict[int, Owner] = {}
    for offset, raw in resources.pool_entries(obj or {}).items():
        value = resources.offset_value(offset)
        if value is None or not isinstance(raw, dict) or raw.get(resources.RESERVED) is not True:
            continue
        if cache.held((key.network, key.version, base + value)) is None:
            found[base + value] = resources.entry_owner(raw)
    return found


def _pod_lives(client: KubeClient, podref: str) -> bool:
    """Whether pod "<namespace>/<name>" is there and not finished (Succeeded, Failed); with no pod recorded, or
    no way to ask (its read refused), it may be: yes."""
    namespace, _, name = podref.partition("/")
    if not namespace or not name:
        return True
    try:
        pod = client.get(client.resource("pods", name, namespace=namespace), named=True)
    except APIError as exc:
        if not exc.status:  # the server unreachable: asked again next round
            raise
        return True
    return pod is not None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _attachment_of(raw: Any) -> tuple[str, str] | None:
    return None if raw is None else (raw.get("id", ""), raw.get("ifname", ""))


def round_pause(took: float, failures: int) -> float:
    """Seconds a mirror round gathers changes: at least MIRROR_DELAY, and ten times what the last round took (a
    big pool's patch costs the server more: its share of the server's time stays small), at most
    MIRROR_MAX_PAUSE; doubled per failed round while the server fails, up to MIRROR_MAX_BACKOFF. (The caller
    spreads it out, jitter, while other nodes' writers contend for the same pools.)"""
    pause = min(max(MIRROR_DELAY, MIRROR_SHARE * took), MIRROR_MAX_PAUSE)
    return float(min(pause * (2 ** min(failures, 7)), MIRROR_MAX_BACKOFF))


def writer_name() -> str:
    """Who this daemon's mirror writer is, in a pool's WRITER_ANNOTATION: its node, process and a random part
    (a restarted daemon, or two caches in one process, are different writers)."""
    node = os.environ.get("NODENAME") or socket.gethostname()
    return f"{node}/{os.getpid()}/{os.urandom(3).hex()}"


class MirrorWriter:
    """Writes the IPPool entries of a pool's addresses, batched (see the module): of every daemon's, as its
    copy shows them, while it is the pool's writer; none while another daemon is (see `_defers`)."""

    def __init__(self, client: KubeClient, cache: KubeCache, *, enabled: bool = True) -> None:
        self.client, self.cache, self.enabled = client, cache, enabled
        self.me = writer_name()
        self.dirty: dict[PoolKey, dict[int, set[tuple[str, str]]]] = {}  # ip -> attachments released there
        # per marked address: when it was first marked, and the pool's version in the copy when last marked
        self.first: dict[PoolKey, dict[int, tuple[float, int]]] = {}
        self.serving: set[PoolKey] = set()
        self.served: dict[tuple[str, tuple[int, int, int]], PoolKey] = {}  # (network, range) -> a pool served here
        self.patience = random.uniform(1.0, 1.5)  # (see _defers)
        self.closing = False
        self.writing: dict[PoolKey, dict[int, set[tuple[str, str]]]] = {}  # the round being written
        self.adopted: dict[PoolKey, float] = {}
        self.to_adopt: set[PoolKey] = set()  # pools to compare with their reservations once the copy is current
        self.held_adopted = False  # every pool with a reservation compared, once, when the copy is first current
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.restore = threading.Event()  # a reservation to recreate (KubeCache.restore_vanished): cuts a pause
        self.idle = threading.Event()
        self.idle.set()
        self.stopping = threading.Event()
        self.writes = self.failures = self.conflicts = self.deferred = 0
        self.complained = -COMPLAIN_EVERY
        self.thread = threading.Thread(target=self._run, name="ippool mirror", daemon=True)
        if enabled:  # (off: kubernetes.ippool_mirror false, nothing is marked, nothing written)
            self.thread.start()
            self.wake.set()  # a first round: compare the pools with their reservations once the copy is current

    def mark(self, key: PoolKey, ip: int, released: Owner | None = None, *, repair: bool = False) -> None:
        if not self.enabled:
            return
        version, now = version_of(self.cache.pool_object(key)), time.monotonic()
        with self.lock:
            times = self.first.setdefault(key, {})
            times[ip] = (times[ip][0] if ip in times else now, version)
            attachments = self.dirty.setdefault(key, {}).setdefault(ip, set())
            if released is not None:
                attachments.add((released.container_id, released.ifname))
            if repair:
                attachments.add(REPAIR)
            self.idle.clear()
        self.wake.set()

    def watched(self, before: tuple[Address, _Held] | None, after: tuple[Address, _Held] | None, *, gone: bool) -> None:
        """A reservation changed in the copy (`before` and `after` it, None: not placed; `gone`: deleted): its
        address is marked in the pool it was taken in, if a call of this daemon has served that pool (this
        daemon may be, or become, its writer). A holder deleted or replaced is marked released, as a DEL here
        marks it; one the copy could not place again (its network not known yet) is not."""
        if not self.enabled or not self.served:
            return
        if before is not None and (after is not None or gone):
            (address, held), key = before, self._served(*before)
            kept = after is not None and after[0] == address and after[1].owner.same_attachment(held.owner)
            if key is not None and not kept:
                self.mark(key, address[2], held.owner)
        if after is not None and (key := self._served(*after)) is not None:
            self.mark(key, after[0][2])

    def _served(self, address: Address, held: _Held) -> PoolKey | None:
        return None if held.subnet is None else self.served.get((address[0], held.subnet))

    def _defers(self, key: PoolKey, times: dict[int, tuple[float, int]]) -> bool:
        """Whether this round leaves `key` to its writer, the other daemon that wrote it last (ten daemons
        patching one big pool each round cost the server ten times one): until the oldest of its marks still
        owed is MIRROR_LEASE seconds old (times this writer's patience: daemons that take over from a killed
        writer, one whose watch fails, or an older daemon beside this one that writes only its own, do not all
        patch at once). A pool handed back by a daemon that stopped (its writer named as "") is left for up to
        UNCLAIMED_WAIT seconds, by patience too: the first to write it is named, and the others see it before
        their turn instead of all patching it in one round. Never while closing."""
        since = min((first for first, _ in times.values()), default=time.monotonic())
        waited = time.monotonic() - since
        if self.closing or waited >= MIRROR_LEASE * self.patience:
            return False
        obj = self.cache.pool_object(key)
        writer = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(WRITER_ANNOTATION)
        if writer == "":  # handed back (a new pool, or one a Go plugin made, names none: written at once)
            return waited < UNCLAIMED_WAIT * (self.patience - 1.0) * 2
        return writer not in (None, self.me)

    def _owed(
        self, key: PoolKey, addresses: dict[int, set[tuple[str, str]]], times: dict[int, tuple[float, int]]
    ) -> dict[int, set[tuple[str, str]]]:
        """The marks of `key` that its IPPool, as the copy shows it, does not say yet (the copy's view: no read),
        and those marked while the copy showed the version it shows now: the writer's patch made from a copy
        that lagged (an entry of a holder released meanwhile) may not have reached this copy yet."""
        obj = self.cache.pool_object(key)
        version, entries = version_of(obj), resources.pool_entries(obj or {})
        _, base = parse_request(key.cidr)
        owed = {base + offset for offset, _, _ in self._wanted(key, addresses, entries, confirm=False)}
        return {ip: released for ip, released in addresses.items() if ip in owed or times[ip][1] >= version}

    def releasing(self, key: PoolKey) -> dict[int, set[tuple[str, str]]]:
        """The addresses of `key` whose entries this daemon will remove (if still the released attachments')."""
        found: dict[int, set[tuple[str, str]]] = {}
        with self.lock:
            for batch in (self.writing.get(key, {}), self.dirty.get(key, {})):
                for ip, marks in batch.items():
                    if released := marks - {REPAIR}:
                        found.setdefault(ip, set()).update(released)
        return found

    def adopt(self, key: PoolKey, *, serving: bool = True) -> None:
        """Compare the whole pool with its reservations now and then (every ADOPT_EVERY seconds; first when a
        call of this daemon serves it): the entries a killed daemon did not write. Done by the writer's thread,
        once the copy is current. `serving`: a call of this daemon serves it (from now on, this daemon marks
        every change of its reservations: `watched`)."""
        if not self.enabled:
            return
        now = time.monotonic()
        with self.lock:
            if serving and key not in self.serving:
                self.serving.add(key)
                self.served[(key.network, resources.pool_subnet(key))] = key
            if now - self.adopted.get(key, -ADOPT_EVERY) < ADOPT_EVERY:
                return
            self.adopted[key] = now
            self.to_adopt.add(key)
            self.idle.clear()
        self.wake.set()

    def deleted(self, name: str) -> None:
        """IPPool `name` was deleted (by hand, say): a pool this daemon serves is compared with its reservations
        now, not ADOPT_EVERY seconds after the last time, and made again if they hold addresses in it (a Go
        plugin finding no pool reads them all free); one with nothing left to write is forgotten (a deleted
        network's, a node slice's that was re-sliced)."""
        with self.lock:
            keys = [key for key in self.serving if key.name == name]
            for key in keys:
                self.adopted.pop(key, None)
        forgotten = self._forget_idle(keys)
        for key in keys:
            if key not in forgotten:
                self.adopt(key, serving=False)

    def _forget_idle(self, keys: Sequence[PoolKey]) -> set[PoolKey]:
        """Forget the pools of `keys` that have nothing left here: no IPPool, no reservation in their range in
        the copy, nothing marked, being written or waiting to be compared. Networks come and go for months (a
        tenant names them, node slices are re-sliced), and every pool served was kept and compared every
        ADOPT_EVERY seconds for good. A call that serves one again serves it anew. Returns those forgotten."""
        idle = [key for key in keys if self.cache.pool_object(key) is None and not self.cache.holds_in(key)]
        with self.lock:  # (a mark made since is seen here: that pool is kept)
            marked = (self.dirty, self.first, self.writing, self.to_adopt)
            forgotten = {key for key in idle if key in self.serving and not any(key in marks for marks in marked)}
            if not forgotten:
                return forgotten
            self.serving -= forgotten
            for key in forgotten:
                self.adopted.pop(key, None)
            for where in [where for where, key in self.served.items() if key in forgotten]:
                del self.served[where]
            for key in self.serving:  # (another pool served in the same range, if any, is marked in from now on)
                self.served.setdefault((key.network, resources.pool_subnet(key)), key)
        return forgotten

    def adopt_held(self) -> None:
        """Every pool that a reservation of the copy was taken in (a pool named for its network and range
        alone: a node's slice pool waits for a call of that node): a daemon restarted after a kill -9 owes entries
        even if no call for their pools comes."""
        by_name = {obj.get("metadata", {}).get("name", ""): obj for obj in self.cache.pools.items()}
        with self.cache.lock:
            held = [(address[0], h.subnet) for address, h in self.cache.index.by_address.items() if h.subnet]
        for network, (version, base, prefix) in set(held):
            key = PoolKey(network, f"{format_ip(version, base)}/{prefix}")
            if key.name in by_name and resources.pool_key(by_name[key.name], network) == key:
                self.adopt(key, serving=False)

    def _adopt_waiting(self) -> bool:
        """Compare the pools waiting for it; False while the copy is not current (try again, backing off)."""
        if not self.to_adopt and self.held_adopted:
            return True
        if not self.cache.ready(SYNC_WAIT):  # the writer's own thread: wait for the copy, then compare at once
            return False
        if not self.held_adopted:
            self.held_adopted = True
            self.adopt_held()
        with self.lock:
            keys, self.to_adopt = self.to_adopt, set()
        for key in sorted(keys):
            state = self.cache.pool_state(key)
            obj = self.cache.pool_object(key)
            mirrored = resources.decode_pool(key, obj).allocations
            for ip, owner in state.allocations.items():
                if mirrored.get(ip) != owner:  # from a copy that may lag other nodes' DELs: read it again first
                    self.mark(key, ip, repair=True)
            for ip, owner in _left_over(self.cache, key, obj).items():
                # its pod gone or finished (a live pod's may have lost its reservation to the Go plugin's DEL
                # while no daemon watched: the reconciler recreates that one); removed if its reservation is
                # still missing when read afresh
                if not _pod_lives(self.client, owner.podref):
                    self.mark(key, ip, owner)
        return True

    def flush(self, wait: float = 10.0) -> bool:
        """Wait until everything marked so far is written (or `wait` passes)."""
        self.wake.set()
        return self.idle.wait(wait)

    def close(self) -> None:
        self.closing = True  # what is owed is written now, whoever the writer
        self.flush()
        self.stopping.set()
        self.wake.set()
        if self.enabled:
            self.thread.join(HAND_BACK_WAIT)
            if self.thread.is_alive():  # still in a request: the client stays its own (one request at a time)
                return
            handing = threading.Thread(target=self._hand_back, name="ippool mirror hand-back", daemon=True)
            handing.start()
            handing.join(HAND_BACK_BUDGET + 0.5)
            if handing.is_alive():
                return
        self.client.close()

    def _hand_back(self) -> None:
        """Take this daemon's name off the pools it is the writer of, where it still is (guarded; the name left
        empty: handed back): the others write them soon (`_defers`) instead of waiting MIRROR_LEASE for a writer
        that is gone (a DaemonSet's rolling update restarts every writer). Best effort, within HAND_BACK_BUDGET
        seconds (the pod's grace period is short), and given up at the first failure: a daemon killed leaves its
        name, and the others wait."""
        deadline.start(HAND_BACK_BUDGET)  # (this thread's own: every wait of its requests ends by then)
        for obj in self.cache.pools.items():
            metadata = obj.get("metadata", {})
            if (metadata.get("annotations") or {}).get(WRITER_ANNOTATION) != self.me:
                continue
            guard = {"op": "test", "path": WRITER_PATH, "value": self.me}
            name = metadata.get("name", "")
            try:
                self.client.patch_existing(
                    self.client.path(IPPOOLS, name), [guard, {"op": "replace", "path": WRITER_PATH, "value": ""}]
                )
            except Conflict:  # another daemon wrote it since (gone: patch_existing says None)
                pass
            except Exception as exc:  # the server down, the budget spent: the others wait, as for a daemon killed
                sys.stderr.write(f"whereabouts-node: IPPool {name}: this daemon's name as its mirror's writer "
                                 f"not taken off: {type(exc).__name__}: {exc}\n")  # fmt: skip
                return

    def _restore(self) -> bool:
        """Recreate the reservations deleted under addresses this daemon's calls hold (False: some left)."""
        self.restore.clear()
        try:
            return self.cache.restore_vanished(self.client)
        except Exception as exc:  # the server failing: next round
            self._complain(None, exc)
            return False

    def _pause(self, seconds: float, restored: bool) -> bool:
        """A round's pause (or until stopping); a reservation deleted meanwhile under an address this daemon holds
        is recreated at once, not after it: until then the server shows the address free, to the Go plugin and
        to other nodes' daemons. `restored` as the last recreation left it (False: some left for next time)."""
        end = time.monotonic() + seconds
        while not self.stopping.is_set() and (left := end - time.monotonic()) > 0:
            if self.restore.wait(min(left, 0.5)):
                restored = self._restore()
        return restored

    def _run(self) -> None:
        failures, took, resting = 0, 0.0, False
        compared = time.monotonic()
        while not self.stopping.is_set():
            self.wake.wait(ADOPT_EVERY)
            if time.monotonic() - compared >= ADOPT_EVERY:  # every pool served, with calls or none (an entry
                compared = time.monotonic()  # removed by hand comes back; a quiet pool beside busy ones too)
                with self.lock:
                    serving = sorted(self.serving)
                    # (a comparison older than ADOPT_EVERY says no more than none: pools adopted unserved go)
                    self.adopted = {key: at for key, at in self.adopted.items() if compared - at < ADOPT_EVERY}
                forgotten = self._forget_idle(serving)
                for key in serving:
                    if key not in forgotten:
                        self.adopt(key, serving=False)
            self.wake.clear()
            restored = self._restore()  # before the pause: the address is free on the server until then
            pause = max(round_pause(took, failures), DEFER_PAUSE if resting else 0.0)
            restored = self._pause(pause * random.uniform(0.75, 1.25), restored)
            started = time.monotonic()
            try:
                adopted = self._adopt_waiting()
            except Exception as exc:  # the server failing mid-comparison, a pool no decoding reads: next round
                adopted = False
                self._complain(None, exc)
            with self.lock:
                batch, self.dirty = self.dirty, {}
                first, self.first = self.first, {}
                self.writing = batch
            failed, resting = False, bool(batch)
            for key, addresses in sorted(batch.items()):
                try:
                    times = first[key]
                    if self._defers(key, times):
                        self.deferred += 1
                        self._requeue(key, self._owed(key, addresses, times), times)
                    else:
                        resting = False
                        self._write(key, addresses)
                except Conflict:  # contended: again next round, without backing off
                    self.conflicts += 1
                    self._requeue(key, addresses, first[key])
                except Exception as exc:  # the API server is down, or a bug: keep it for the next round
                    failed = True
                    self.failures += 1
                    self._requeue(key, addresses, first[key])
                    self._complain(key, exc)
            failures = failures + 1 if failed or not adopted or not restored else 0
            took = min(time.monotonic() - started, 5.0)
            with self.lock:
                self.writing = {}
                if self.dirty or self.to_adopt or not self.held_adopted or not restored:
                    self.wake.set()
                else:
                    self.idle.set()

    def _complain(self, key: PoolKey | None, exc: Exception) -> None:
        """One line on stderr (the container's log) per COMPLAIN_EVERY seconds at most."""
        now = time.monotonic()
        if now - self.complained >= COMPLAIN_EVERY:
            self.complained = now
            with self.lock:  # (marked meanwhile by the watch's thread)
                pending = sum(len(addresses) for addresses in self.dirty.values())
            which = "pools" if key is None else key.name
            sys.stderr.write(f"whereabouts-node: IPPool {which}: mirror not written ({pending} entries owed, "
                             f"again shortly): {type(exc).__name__}: {exc}\n")  # fmt: skip

    def _requeue(
        self, key: PoolKey, addresses: dict[int, set[tuple[str, str]]], times: dict[int, tuple[float, int]]
    ) -> None:
        if not addresses:
            return
        with self.lock:
            pending, marked = self.dirty.setdefault(key, {}), self.first.setdefault(key, {})
            for ip, released in addresses.items():
                first, version = times[ip]
                if ip in marked:  # marked again meanwhile
                    first, version = min(first, marked[ip][0]), max(version, marked[ip][1])
                marked[ip] = (first, version)
                pending.setdefault(ip, set()).update(released)

    def _write(self, key: PoolKey, addresses: dict[int, set[tuple[str, str]]]) -> None:
        path = self.client.path(IPPOOLS, key.name)
        for attempt in (1, 2, 3):
            obj = self.cache.pool_object(key) if attempt == 1 else self.client.get(path)
            if attempt > 1 and obj is not None:
                self.cache.pools.put(obj)
            if obj is None:
                wanted = self._wanted(key, addresses, {})
                if not any(owner is not None for _, owner, _ in wanted):
                    return
                if self._create(key, wanted):
                    return
                continue
            groups = self._operations(key, addresses, resources.pool_entries(obj))
            if not groups:
                return
            try:
                for chunk in resources.patch_chunks([self._claim(obj), *groups]):
                    self.cache.pools.put(self.client.patch(path, chunk))
                    self.writes += 1
                return
            except Conflict:
                continue  # an entry changed since the cache showed it: read the pool, make the patch again
        raise Conflict("TestFailed")

    def _claim(self, obj: Object) -> list[Any]:
        """JSON patch operations naming this daemon the pool's writer (see `_defers`), in its first patch (none
        when closing: the others would wait for a writer that is gone)."""
        if self.closing:
            return []
        annotations = obj.get("metadata", {}).get("annotations")
        if annotations is None:  # none yet: guarded, so that annotations added meanwhile are not replaced
            return [{"op": "test", "path": "/metadata/annotations", "value": None},
                    {"op": "add", "path": "/metadata/annotations", "value": {WRITER_ANNOTATION: self.me}}]  # fmt: skip
        if annotations.get(WRITER_ANNOTATION) == self.me:
            return []
        return [{"op": "add", "path": WRITER_PATH, "value": self.me}]

    def _wanted(
        self, key: PoolKey, addresses: dict[int, set[tuple[str, str]]], entries: Any, *, confirm: bool = True
    ) -> list[tuple[int, Owner | None, Owner | None]]:
        """(offset, what the entry should say or None to remove it, what it says now) for each changed one."""
        _, base = parse_request(key.cidr)
        found: list[tuple[int, Owner | None, Owner | None]] = []
        removing = [ip for ip, released in addresses.items() if self.cache.held((key.network, key.version, ip)) is None
                    and _attachment_of(entries.get(str(ip - base))) in released]  # fmt: skip
        # an adoption's entry to write: its copy may not have seen another node's DEL yet (writing on its word
        # would bring back an entry nobody removes)
        repairing = [ip for ip, released in addresses.items() if REPAIR in released and ip not in removing]
        # an entry of another attachment to be replaced on the copy's word: a copy that lags (behind a DEL and a
        # new holder's create) would write over the entry of the address's holder
        skip = {*removing, *repairing}
        repairing += [ip for ip in addresses if ip not in skip
                      and (raw := entries.get(str(ip - base))) is not None
                      and (held := self.cache.held((key.network, key.version, ip))) is not None
                      and not resources.entry_owner(raw).same_attachment(held.owner)]  # fmt: skip
        # the copy may lag: removing on its word could unmirror (a deferring round only compares: no read)
        confirmed = self._confirm(key, removing + repairing) if confirm else {}
        subnet = resources.pool_subnet(key)
        for ip, released in sorted(addresses.items()):
            offset = ip - base
            raw = entries.get(str(offset))
            have = None if raw is None else resources.entry_owner(raw)
            held = confirmed[ip] if ip in confirmed else self.cache.held((key.network, key.version, ip))
            if held is not None and held.subnet != subnet:
                held = None  # taken in another range of the network: not this pool's entry
            if held is not None:
                owner = held.owner
                if not owner.netconf and have is not None and have.same_attachment(owner):
                    owner = owner.but(netconf=have.netconf)  # a reservation written before it said its config
                if raw is None or raw != resources.entry(owner, reserved=True):
                    found.append((offset, owner, have))
            elif have is not None and (have.container_id, have.ifname) in released:
                found.append((offset, None, have))
        return found

    def _confirm(self, key: PoolKey, ips: list[int]) -> dict[int, _Held | None]:
        """Before entries go (or an adoption writes them): their addresses' reservations as the server has them
        now (None: there is none). A call served in process meanwhile (this daemon died mid-call, or declined)
        may have taken one again for the same attachment after the copy last saw it; another node's DEL may
        have released one. One GET each for a few; one LIST for many (a GET costs the server about what a LIST
        costs per object it holds: with 10,000 reservations, 30 GETs are far cheaper than one LIST)."""
        names = {resources.reservation_name(key.network, key.version, ip): ip for ip in ips}
        with self.cache.lock:
            held = len(self.cache.index.objects)
        if len(names) > max(CONFIRM_BY_LIST, held // CONFIRM_GET_WORTH):
            listed, _ = self.client.list_with_version(self.client.path(RESERVATIONS))
            found = {obj["metadata"]["name"]: obj for obj in listed if obj["metadata"]["name"] in names}
        else:
            found = {name: obj for name in names if (obj := self.client.get(self.client.path(RESERVATIONS, name)))}
        for obj in found.values():
            self.cache.wrote_reservation(obj)
        return {ip: self.cache.held((key.network, key.version, ip)) if name in found else None
                for name, ip in names.items()}  # fmt: skip

    def _operations(self, key: PoolKey, addresses: dict[int, set[tuple[str, str]]], entries: Any) -> list[list[Any]]:
        """Each changed entry's guarded JSON patch operations (a group: never split between two patches)."""
        return [resources.entry_patch(offset, owner, have, exact=have is not None, reserved=True)
                for offset, owner, have in self._wanted(key, addresses, entries)]  # fmt: skip

    def _create(self, key: PoolKey, wanted: list[tuple[int, Owner | None, Owner | None]]) -> bool:
        obj = resources.new_pool(key, self.client.namespace)
        if not self.closing:  # (see _claim)
            obj["metadata"]["annotations"] = {WRITER_ANNOTATION: self.me}
        for offset, owner, _ in wanted:
            if owner is not None:
                obj["spec"]["allocations"][str(offset)] = resources.entry(owner, reserved=True)
        try:
            self.cache.pools.put(self.client.create(self.client.path(IPPOOLS), obj))
        except Conflict:
            return False
        self.writes += 1
        return True
