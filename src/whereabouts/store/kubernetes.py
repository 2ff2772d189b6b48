"""The Kubernetes datastore: the Go plugin's custom resources (formats and names: whereabouts.kube.resources).

No lock, and no resourceVersion either: each pool entry is written by a JSON patch whose `test` guard says
what the decision saw at that offset (absent, or held by the one being replaced). The API server applies the
patch atomically, so callers taking different addresses of one pool never conflict, and a failed guard sends
only the caller who lost that address back to read and decide again.

Writes are ordered so that a call killed between them leaves the safe state: a hold creates the reservation
first, then the pool entry (a lone reservation blocks the address, it never frees it); a release removes the
pool entry first, then the reservation. A lone reservation is resumed by the attachment's next ADD (if taken
in the range that ADD writes: one taken in another range of the network backs the attachment's entry there,
a range since widened or dropped), removed by its DEL (with that entry), or (for a pod that is gone) by the
reconciler.

An uncontended single-range ADD makes three requests: GET the pool, POST the reservation, PATCH the pool
(with node slices, a GET of the network's NodeSlicePool first: see whereabouts.nodeslice).
"""

from __future__ import annotations

from whereabouts import deadline
from whereabouts.config import KubernetesSettings
from whereabouts.errors import TryAgainLater
from whereabouts.kube import resources
from whereabouts.kube.client import APIError, Conflict, KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.kube.resources import ATTACHMENT_LABEL, IPPOOLS, NODE_SLICE_POOLS, RESERVATIONS, reservation_name
from whereabouts.model import Change, ChangeSet, Owner, PodFacts, PoolKey, PoolState, SlicePool, Snapshot
from whereabouts.ranges import parse_request
from whereabouts.record import record
from whereabouts.store.nodelock import node_locks

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: a CNI process pays for every import

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence
    from typing import Any

    from whereabouts.inventory import Tally
    from whereabouts.store.factory import Keep
    from whereabouts.store.kubecache import KubeCache

LOCK_WAIT = 20.0  # seconds a call waits for its node's turn on a pool before going ahead unlocked


class KubeTransaction:
    def __init__(
        self,
        store: KubernetesStore,
        snapshot: Snapshot,
        objects: dict[PoolKey, dict[str, Any] | None],
        cache: KubeCache | None = None,
        unmirrored: dict[PoolKey, set[int]] | None = None,
    ) -> None:
        self.store, self.snapshot, self.objects = store, snapshot, objects
        self.cache = cache  # the node daemon's: reservations are the record, the pools a mirror
        self.unmirrored = unmirrored or {}  # entries laid over from reservations
        self.informed = False  # a create lost and its holder is in the daemon's copy now (storage.Transaction)

    def commit(self, changes: ChangeSet) -> bool:
        holds = [c for c in changes.changes if c.owner is not None]
        releases = [c for c in changes.changes if c.owner is None]
        if self.cache is not None or not self.store.mirror:
            return self._commit_reservations(self.cache, holds, releases)
        try:
            if changes.overlapping:
                for change in holds:
                    if not self._reserve(change):
                        return False
            for key in dict.fromkeys(c.key for c in changes.changes):
                self._write_pool(key, [c for c in changes.changes if c.key == key], changes.overlapping)
            if changes.overlapping:
                for change in releases:
                    self._unreserve(change, releases)
        except Conflict:
            return False
        for change in holds:  # written for good: nothing for abort() to take back (other attachments' stays)
            assert change.owner is not None  # (holds are the changes with an owner)
            self.store.committed(change.owner)
        return True

    def _commit_reservations(self, cache: KubeCache | None, holds: list[Change], releases: list[Change]) -> bool:
        """Hold by creating (or, from the holder seen, rewriting) each address's reservation, release by
        deleting it; the pools' entries follow through the cache's mirror writer (store.kubecache), if the
        IPPools are mirrored at all."""
        try:
            for change in holds:
                if not self._reserve(change):
                    return False
                assert change.owner is not None
                if cache is not None:
                    self.store.pending_addresses.setdefault(_attachment(change.owner), []).append(
                        (change.key, change.ip)
                    )
                    cache.holding(reservation_name(change.key.network, change.version, change.ip), change.owner)
                    cache.mirror.mark(change.key, change.ip)
            for change in releases:
                self._unreserve(change, releases)
                if cache is not None:
                    cache.mirror.mark(change.key, change.ip, change.previous)
        except Conflict:
            return False
        for change in holds:
            assert change.owner is not None
            self.store.committed(change.owner)
        return True

    def _reserve(self, change: Change) -> bool:
        """Create the network-wide reservation; False when someone else holds it (now known to the store)."""
        assert change.owner is not None
        network = change.key.network
        current = self.snapshot.reservations.get((network, change.version, change.ip))
        # A takeover (a recreated pod, a sticky key, a DEL retaining it) rewrites the holder the decision saw,
        # known to this store or not: one guarded patch, no create that would only find it taken.
        holder = current if current is not None and current.same_attachment(change.owner) else change.previous
        if current is not None and current.same_attachment(change.owner) and not _restated(current, change.owner):
            if (network, change.version, change.ip) not in self.store.hearsay:
                return True
            # Only the server's cache says it is this attachment's, and it may be behind (the attachment's DEL
            # just before): create it; a 409 says whose it is.
            holder = None
        name = reservation_name(network, change.version, change.ip)
        where = {"network": network, "cidr": change.key.cidr, "address": (change.version, change.ip)}
        try:
            if holder is not None:
                created = self.store.replace_reservation(name, change.owner, holder, **where)
            else:
                created = self.store.create_reservation(name, change.owner, **where)
        except Conflict:
            found = self.store.read_reservation_object(name)
            holder = None if found is None else resources.reservation_owner(found)
            if (found is not None and holder is not None and holder.same_attachment(change.owner)
                    and not _taken_in(found, change.key)):  # fmt: skip
                # The attachment's reservation of an entry in another range's pool (its config's range widened
                # or dropped since): it backs that entry, and a second one here would share it, so that the
                # release of either frees the address under the other. The next decision sees it reserved and,
                # having read the attachment's other pools, resumes it only if no entry stands behind it.
                self.store.known_reservations[(network, change.version, change.ip)] = holder
                self.store.hearsay.discard((network, change.version, change.ip))
                self.informed = True  # (known now to this store, and the daemon's copy read it)
                return False
            if holder is not None and holder.same_attachment(change.owner) and _restated(holder, change.owner):
                return self._restate(name, change, holder, where)  # e.g. a DEL retaining it: say so
            if holder is None or holder.same_attachment(change.owner):
                return holder is not None
            self.store.known_reservations[(network, change.version, change.ip)] = holder
            self.store.hearsay.discard((network, change.version, change.ip))
            self.store.contended = True
            self.informed = self.cache is not None  # (read into the copy: the next decision passes it over)
            return False
        # a failed ADD takes it back: deleted if it created it, else given back to the holder it took it from
        self.store.pending.setdefault(_attachment(change.owner), []).append((name, created, holder, where))
        # ours now: a retry after a lost pool write resumes it rather than picking another address
        self.store.known_reservations[(network, change.version, change.ip)] = change.owner
        self.store.hearsay.discard((network, change.version, change.ip))
        return True

    def _restate(self, name: str, change: Change, holder: Owner, where: dict[str, Any]) -> bool:
        """Rewrite the attachment's own reservation with its new sticky record; False if it changed hands."""
        assert change.owner is not None
        try:
            self.store.replace_reservation(name, change.owner, holder, **where)
        except Conflict:
            return False
        return True

    def _unreserve(self, change: Change, releases: list[Change]) -> None:
        """After the pool entry is gone: delete the address's reservation if it is still the released
        holder's. Read first, deleted with that read's resourceVersion as a precondition: a reservation
        someone else removed and another caller created meanwhile (the address was free from that moment)
        is theirs, and must stay. Kept while an entry of the same attachment in another pool read stands
        behind it (two entries of one reservation, written before an ADD stopped resuming one: see
        `_reserve`): its DEL's `forget_attachment` releases that one."""
        assert change.previous is not None
        previous, freed = change.previous, {(c.key, c.ip) for c in releases}
        if any(key != change.key and key.network == change.key.network and key.version == change.version
               and (key, change.ip) not in freed and (who := pool.allocations.get(change.ip)) is not None
               and who.same_attachment(previous) for key, pool in self.snapshot.pools.items()):  # fmt: skip
            return
        self.store.released.add((change.key.network, change.version, change.ip))
        self.store.delete_reservation_of(
            reservation_name(change.key.network, change.version, change.ip), change.previous
        )

    def _write_pool(self, key: PoolKey, changes: list[Change], reserved: bool) -> None:
        """Each entry is written guarded by what the decision saw at its offset (absent, or held by
        `previous`), in one JSON patch: no resourceVersion, so callers writing different addresses of one
        pool never conflict; a guard that fails means that address was taken meanwhile. `reserved`: the
        entries' reservations were written first (overlapping ranges; resources.entry)."""
        _, base = parse_request(key.cidr)
        laid = self.unmirrored.get(key, set())
        for change in changes:
            if change.owner is not None:  # a failed ADD gives each entry back to the holder it took it from
                taken = self.store.pending_pools.setdefault(_attachment(change.owner), {}).setdefault(key, {})
                if change.previous is not None and change.ip not in laid:
                    taken[str(change.ip - base)] = change.previous
        if self.objects[key] is None and self._create_pool(key, changes, reserved):
            return
        operations: list[dict[str, Any]] = []
        for change in changes:
            if change.ip in laid:  # the decision saw a reservation, the pool has no entry for it (guard: absent)
                if change.owner is not None:
                    operations += resources.entry_patch(change.ip - base, change.owner, None, reserved=reserved)
                continue
            operations += resources.entry_patch(change.ip - base, change.owner, change.previous, reserved=reserved)
        if operations:
            self.store.client.patch(self.store.client.path(IPPOOLS, key.name), operations)

    def _create_pool(self, key: PoolKey, changes: list[Change], reserved: bool) -> bool:
        """The first write into a range creates its pool; False if someone created it meanwhile."""
        obj = resources.new_pool(key, self.store.client.namespace)
        _, base = parse_request(key.cidr)
        for change in changes:
            if change.owner is not None:
                obj["spec"]["allocations"][str(change.ip - base)] = resources.entry(change.owner, reserved=reserved)
        try:
            self.objects[key] = self.store.client.create(self.store.client.path(IPPOOLS), obj)
        except Conflict:
            return False
        return True


def _version(obj: dict[str, Any]) -> int:
    """An object's resourceVersion as a number (etcd's revision), 0 if it is not one (then reads stay quorum)."""
    version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
    return int(version) if version.isdigit() else 0


def _attachment(owner: Owner) -> tuple[str, str]:
    return owner.container_id, owner.ifname


class KubernetesStore:
    """One CNI call's (or the node daemon's) view of the Kubernetes store: its client, and what the call wrote."""

    finds_attachments = False  # pools_holding lists every IPPool of the namespace
    max_changes = 0  # (see storage.Store)

    def __init__(self, client: KubeClient, lock_dir: str = "", *, cache: KubeCache | None = None,
                 mirror: bool = True) -> None:  # fmt: skip
        self.client = client
        self.lock_dir = lock_dir  # node-local: this node's calls take turns per pool (see store.nodelock)
        self.cache = cache  # the node daemon's (store.kubecache); None in a CNI process
        self.mirror = mirror  # kubernetes.ippool_mirror: false, the reservations alone are read and written
        self.known_reservations: dict[tuple[str, int, int], Owner] = {}
        self.ambiguous_pools: list[str] = []  # IPPools pool_keys left out: names that read two ways
        self.hearsay: set[tuple[str, int, int]] = set()  # of those, known from the server's cache alone (any age)
        # What this call wrote and has not committed for good, per attachment (container ID, ifname): a batch
        # serves several, and one that fails takes back its own writes only.
        # (name, rv, the holder it was taken from or None if created, where)
        self.pending: dict[tuple[str, str], list[tuple[str, str, Owner | None, dict[str, Any]]]] = {}
        # pools written into, with the holder each entry was taken from (by offset; none: it was free)
        self.pending_pools: dict[tuple[str, str], dict[PoolKey, dict[str, Owner]]] = {}
        self.pending_addresses: dict[tuple[str, str], list[tuple[PoolKey, int]]] = {}  # cached
        self.contended = False  # an address this call chose was reserved by someone else
        self.released: set[tuple[str, int, int]] = set()  # addresses whose reservations this call released
        # Reservations read by _pools_where, by address, with the range each was taken in: laid over the pools
        # this call reads (a node daemon may not have mirrored them into the pool yet).
        self.learned: dict[tuple[str, int, int], tuple[tuple[int, int, int] | None, Owner]] = {}
        # The newest resourceVersion this call has read or written (mirror off, in process): a retry's read
        # of a range is served from the API server's cache, no older than that (see _read_reservations).
        self.seen = 0
        # What this call's quorum read of each range showed, by label selector: the list's resourceVersion and
        # the names listed (a retry's cached read is checked against it: see _list_range).
        self.quorum_reads: dict[str, tuple[int, set[str]]] = {}
        self.stamp = client.credentials.read_stamp  # of the credentials' files when read

    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> _Transacting:
        return _Transacting(self, keys, overlapping)

    def _begin(self, keys: Sequence[PoolKey], overlapping: bool) -> KubeTransaction:
        """What a transaction decides from, read with this node's locks on the pools held."""
        if overlapping and self.cache is not None:
            for key in keys:  # (served from the copy or not) the mirror is checked whole now and then
                self.cache.mirror.adopt(key)
        if (overlapping or not self.mirror) and self.cache is not None and self.cache.ready():
            return KubeTransaction(self, self.cache.snapshot(keys), {}, self.cache)
        if not self.mirror:
            return KubeTransaction(self, self._read_reservations(keys), {})
        objects = {key: self.client.get(self.client.path(IPPOOLS, key.name)) for key in keys}
        pools = {key: resources.decode_pool(key, obj) for key, obj in objects.items()}
        unmirrored = self._lay_learned(pools) if overlapping else {}
        if overlapping and self._lost_unseen(pools):
            self._learn_reservations({key.network for key in keys})
        reservations = dict(self.known_reservations) if overlapping else {}
        return KubeTransaction(self, Snapshot(pools, reservations), objects, unmirrored=unmirrored)

    def _read_reservations(self, keys: Sequence[PoolKey]) -> Snapshot:
        """With the mirror off (no IPPool is read): each pool is the reservations taken in its range (their
        `subnet_<prefix>` label), read from the server. One taken in another range of the network that
        overlaps this one is not among them: its create fails (409) and the call learns them all."""
        pools: dict[PoolKey, PoolState] = {}
        reservations = dict(self.known_reservations)
        for key in keys:
            version, base = parse_request(key.cidr)
            prefix = key.cidr.partition("/")[2]
            selector = f"subnet_{prefix}={reservation_name('', version, base)}"
            pool = pools[key] = PoolState(key, "reservations", {})
            for obj in self._list_range(selector):
                address = resources.reservation_address(obj["metadata"]["name"], {key.network})
                if address is not None and address[1] == version:
                    owner = resources.reservation_owner(obj)
                    pool.allocations[address[2]] = reservations[address] = owner
        if self._lost_unseen(pools):
            self._learn_reservations({key.network for key in keys})
            reservations.update(self.known_reservations)
        return Snapshot(pools, reservations)

    def _list_range(self, selector: str) -> list[dict[str, Any]]:
        """A range's reservations. A quorum read, but after this call lost an address: then it is served
        from the server's watch cache, no older than the newest reservation the call has seen (in its quorum
        read, the holder of the address it lost, what it wrote). That is all the retry needs (what this
        attachment holds was in the quorum read, and what that read did not show stays out; an address taken
        since is refused at its create), and it spares the server reading every reservation of the namespace
        back from etcd per lost race.
        (Reservations' versions only: the watch cache of reservations reaches those, where a list's own
        version, etcd's revision then, may be a write to another kind that it never sees: it would wait.)"""
        path, items = self.client.path(RESERVATIONS), None
        quorum = self.quorum_reads.get(selector)  # (a range this call has not read yet: a quorum read first)
        if self.seen and self.contended and quorum is not None:
            cached = {"resourceVersion": str(self.seen), "resourceVersionMatch": "NotOlderThan"}
            try:
                listed = self.client.list_with_version(path, labelSelector=selector, **cached)[0]
            except APIError as exc:
                if exc.status != 504:  # 504: the cache did not get there in time (3 s): a quorum read then
                    raise
            else:
                # The cache may be older than a deletion the quorum read showed (this attachment's own DEL, just
                # before: it must not look held still): a reservation no newer than that read and not in it is gone.
                at, names = quorum
                items = [obj for obj in listed if obj["metadata"]["name"] in names or _version(obj) > at]
        if items is None:
            items, version = self.client.list_with_version(path, labelSelector=selector)
            if version.isdigit():
                self.quorum_reads[selector] = (int(version), {obj["metadata"]["name"] for obj in items})
        self.seen = max([self.seen, *map(_version, items)])
        return items

    def _lost_unseen(self, pools: dict[PoolKey, PoolState]) -> bool:
        """Whether this call lost an address (a create refused) to a reservation that the pools just read do
        not show: one taken through another range of the network that overlaps these, where more may be, or
        by a call between its two writes. Then the next decision needs every reservation of the network.
        (Lost to one the pools show, as when callers on one range race for its lowest address, the pools are
        the whole story: no more reads.)"""
        if not self.contended:
            return False
        shown = {(key.network, version, ip) for key, pool in pools.items()
                 for version in (parse_request(key.cidr)[0],) for ip in pool.allocations}  # fmt: skip
        # (one lost in another network, by a store serving several, is not shown either: every one is learned)
        return any(at not in shown for at in self.known_reservations)

    def _lay_learned(self, pools: dict[PoolKey, PoolState]) -> dict[PoolKey, set[int]]:
        """Lay the reservations _pools_where learned over the pools as read, where a pool has no entry for
        the address (a node daemon has not written it yet); the addresses laid, by pool. Not one this call
        reserved itself and still owes the entry of (a pool write lost): laid, it would read as written, and
        the retry that resumes it would not write it."""
        laid: dict[PoolKey, set[int]] = {}
        subnets = {key: resources.pool_subnet(key) for key in pools}
        owed = {(where["network"], *where["address"]) for writes in self.pending.values() for *_, where in writes}
        for (network, version, ip), (subnet, owner) in self.learned.items():
            if (network, version, ip) in owed:
                continue
            for key, pool in pools.items():
                if key.network == network and subnets[key] == subnet and ip not in pool.allocations:
                    pool.allocations[ip] = owner
                    laid.setdefault(key, set()).add(ip)
        return laid

    def _learn_reservations(self, networks: set[str]) -> None:
        """After losing an address to a reservation the pool did not show (a call between its two
        writes): learn every reservation at once, from the API server's cache, rather than one per try."""
        for obj in self.client.list(self.client.path(RESERVATIONS), cached=True):
            parsed = resources.reservation_address(obj["metadata"]["name"], networks)
            if parsed is not None and parsed not in self.known_reservations:
                self.known_reservations[parsed] = resources.reservation_owner(obj)
                self.hearsay.add(parsed)

    def create_reservation(self, name: str, owner: Owner, **where: Any) -> str:
        """Create it; its resourceVersion (what a later delete of this very object is conditioned on).
        `where`: network, cidr and address, for the object's address and labels (resources.reservation)."""
        obj = self.client.create(
            self.client.path(RESERVATIONS), resources.reservation(name, owner, self.client.namespace, **where)
        )
        if self.cache is not None:
            self.cache.wrote_reservation(obj)
        self.seen = max(self.seen, _version(obj))
        return str(obj.get("metadata", {}).get("resourceVersion", ""))

    def replace_reservation(self, name: str, owner: Owner, previous: Owner, **where: Any) -> str:
        """Give it to `owner` (a recreated pod or a sticky key takes over its old attachment's, or a DEL
        retains it); its new resourceVersion. Only from `previous`, the holder the decision saw: a reservation
        that changed hands meanwhile (the old attachment's DEL, then another pod's ADD) is someone else's now,
        and taking it fails (Conflict). One request: a JSON patch whose `test`s name `previous` (or, when there
        is no such object, a create)."""
        path = self.client.path(RESERVATIONS, name)
        obj = resources.reservation(name, owner, self.client.namespace, **where)
        written = self.client.patch_existing(path, resources.reservation_patch(obj, previous))
        if written is None:
            written = self.client.create(self.client.path(RESERVATIONS), obj)
        if self.cache is not None:
            self.cache.wrote_reservation(written)
        return str(written.get("metadata", {}).get("resourceVersion", ""))

    def restore_reservation(self, name: str, version: str, previous: Owner, **where: Any) -> None:
        """Give the reservation this call wrote (at `version`) back to `previous`, the holder it took it from;
        nothing if it changed or went since (someone else's business now)."""
        if self.cache is not None:
            self.cache.releasing(name)
        obj = resources.reservation(name, previous, self.client.namespace, **where)
        operations = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "replace", "path": "/spec", "value": obj["spec"]},
            {"op": "add", "path": "/metadata/labels", "value": obj["metadata"]["labels"]},
        ]
        try:
            written = self.client.patch_existing(self.client.path(RESERVATIONS, name), operations)
        except Conflict:
            return
        if written is not None and self.cache is not None:
            self.cache.wrote_reservation(written)

    def read_reservation(self, name: str) -> Owner | None:
        obj = self.read_reservation_object(name)
        return None if obj is None else resources.reservation_owner(obj)

    def read_reservation_object(self, name: str) -> dict[str, Any] | None:
        if self.cache is not None:  # and keep it: the next decision sees who won
            return self.cache.reservations.fresh(name)
        obj = self.client.get(self.client.path(RESERVATIONS, name))
        if obj is not None:
            self.seen = max(self.seen, _version(obj))
        return obj

    def delete_reservation(self, name: str, resource_version: str = "") -> None:
        """Delete it; with `resource_version`, only that very object (a 409 means someone else's now)."""
        if self.cache is not None:
            self.cache.releasing(name)
        try:
            self.client.delete(self.client.path(RESERVATIONS, name), resource_version)
        except Conflict:
            return
        if self.cache is not None:
            self.cache.deleted_reservation(name, int(resource_version) if resource_version.isdigit() else -1)

    def delete_reservation_of(self, name: str, holder: Owner) -> None:
        """Delete it if `holder` holds it: as the cache shows it first (its resourceVersion the delete's
        precondition), then as the server does, if the cache was behind."""
        if self.cache is not None:
            self.cache.releasing(name, holder)
            obj = self.cache.reservations.get(name)
            if obj is not None and _records(obj, holder):
                path, version = self.client.path(RESERVATIONS, name), obj["metadata"]["resourceVersion"]
                try:
                    self.client.delete(path, version)  # deleted, or already gone (404): either way not there
                except Conflict:
                    pass  # a 409: changed since the cache saw it, read it below
                else:
                    self.cache.deleted_reservation(name, int(version) if version.isdigit() else -1)
                    return
            obj = self.cache.reservations.fresh(name)
        else:
            obj = self.client.get(self.client.path(RESERVATIONS, name))
        if obj is not None and _records(obj, holder):
            self.delete_reservation(name, obj["metadata"]["resourceVersion"])

    def pools_holding(self, network: str, container_id: str, ifname: str) -> list[PoolKey]:
        probe = Owner(container_id, ifname)
        selector = f"{ATTACHMENT_LABEL}={resources.attachment_label(probe)}"
        return self._pools_where(network, lambda owner: owner.same_attachment(probe), selector)

    def _pools_where(self, network: str, matches: Callable[[Owner], bool], selector: str) -> list[PoolKey]:
        """The pools of `network` with an entry that `matches`, or a reservation that does: a node daemon
        writes the entries a moment after the reservations (the pools are their mirror), so a call that
        reads the pools alone can miss what a daemon did just before. The reservations come from the node
        daemon's copy, or (a CNI process, a copy not current) from the server, `selector`-labelled."""
        found = set()
        listed = self.client.list(self.client.path(IPPOOLS)) if self.mirror else []
        for obj in listed:
            key = resources.pool_key(obj, network)
            if key is not None and any(map(matches, resources.decode_pool(key, obj).allocations.values())):
                found.add(key)
        if self.cache is not None and self.cache.ready(0):
            subnets = {held.subnet for held in self.cache.network_holdings(network).values() if matches(held.owner)}
        else:
            subnets = set()
            for obj in self.client.list(self.client.path(RESERVATIONS), selector):
                address, owner = (
                    resources.reservation_address(obj["metadata"]["name"], {network}),
                    resources.reservation_owner(obj),
                )
                if address is not None and matches(owner):
                    subnet = resources.reservation_subnet(obj["metadata"].get("labels") or {})
                    subnets.add(subnet)
                    self.learned[address] = (subnet, owner)
        # the pools those reservations were taken in: the IPPools of their ranges, else (no IPPool yet: a daemon's
        # mirror has not created it, or there is no mirror) the keys their ranges make
        pooled: dict[tuple[int, int, int], list[PoolKey]] = {}
        for obj in listed:
            if (key := resources.pool_key(obj, network)) is not None:
                pooled.setdefault(resources.pool_subnet(key), []).append(key)
        found.update(key for subnet in subnets if subnet in pooled for key in pooled[subnet])
        found.update(self._keys_of(network, {s for s in subnets if s is not None and s not in pooled}))
        return sorted(found)

    def _keys_of(self, network: str, subnets: set[tuple[int, int, int]]) -> set[PoolKey]:
        """The pools the reservations were taken in (their IPPools may not exist: not mirrored yet, or no mirror):
        a node's slice (a NodeSlicePool lists it) or a whole range."""
        if not subnets:
            return set()
        nodes = resources.slice_nodes(self.client.list(self.client.path(NODE_SLICE_POOLS)))
        return {resources.subnet_pool_key(network, subnet, nodes) for subnet in subnets}

    def pools_of(self, network: str) -> list[PoolKey]:
        """None: an IPPool's name does not tell its network from a node's slice of another ('blue-10.0.0.0-24'),
        and a GC must never judge another network's entries. The reconciler frees a gone pod's addresses."""
        return []

    def pools_with_sticky(self, network: str, sticky: str) -> list[PoolKey]:
        kind, _, rest = sticky.partition(":")
        namespace, _, pod = rest.partition("/")
        pod = pod.partition("/")[0]
        selector = f"{resources.STICKY_LABEL}={kind}"
        if kind == "pod" and (by_pod := resources.pod_selector(f"{namespace}/{pod}")):  # its labels
            selector += f",{by_pod}"
        return self._pools_where(network, lambda owner: owner.sticky == sticky, selector)

    # -- the operator's tools (whereabouts.inventory) --------------------------------------------------------

    def pool_keys(self, networks: Collection[str] = ()) -> list[PoolKey]:
        """Every IPPool in the namespace, its network told from a node by `networks` and by the NodeSlicePools
        (resources.PoolNames); a name that reads two ways is left out, named in `ambiguous_pools`."""
        slice_pools = self.client.list(self.client.path(NODE_SLICE_POOLS))
        if not self.mirror:  # no IPPools: the ranges the reservations were taken in
            subnets: dict[str, set[tuple[int, int, int]]] = {}
            listed = self.client.list(self.client.path(RESERVATIONS))
            for address, (subnet, _) in resources.labelled_reservations(listed, networks).items():
                subnets.setdefault(address[0], set()).add(subnet)
            return sorted(key for network, taken in subnets.items() for key in self._keys_of(network, taken))
        listed = self.client.list(self.client.path(IPPOOLS))
        names = resources.PoolNames(networks, (), slice_pools)
        keys = sorted(k for k in map(names.key, listed) if k is not None)
        self.ambiguous_pools = list(names.ambiguous)
        return keys

    def tally(self, key: PoolKey, spans: Sequence[tuple[int, int]]) -> list[Tally]:
        from whereabouts.inventory import tally_allocations

        with self.transaction([key], overlapping=False) as txn:
            return tally_allocations(key.version, txn.snapshot.pools[key].allocations, spans)

    def reserved(self, networks: Collection[str] = ()) -> dict[tuple[str, int, int], Owner]:
        found = {}
        for obj in self.client.list(self.client.path(RESERVATIONS)):
            address = resources.guess_reservation_address(obj, networks)
            if address is not None:
                found[address] = resources.reservation_owner(obj)
        return found

    def pods(self) -> KubePods:
        return KubePods(self.client)

    def forget_attachment(self, network: str, owner: Owner) -> None:
        """After a DEL released the pools: remove the reservations of this attachment still standing (not a
        retained one: the DEL, this one or an earlier, kept it for its sticky key, and its pool entry with it).
        One a crashed call left has no entry; one taken in a range the config no longer names (widened or
        dropped since its ADD) backs the attachment's entry in that range's pool, which the DEL did not read
        (`finds_attachments`): the entry goes first, then the reservation (`_drop_entries`), as in any release,
        else the entry would hold an address that its freed reservation lets the next pod take."""
        if self.cache is not None and self.cache.ready(0):
            left = [(name, obj) for name, obj in self.cache.attachment_reservations(network, owner)
                    if not resources.reservation_owner(obj).retained]  # fmt: skip
            for name, obj in left:
                self.delete_reservation(name, obj["metadata"]["resourceVersion"])
            # the reservations are the record, the entries the mirror's (its writer removes them, read afresh)
            for key, ip in self._entries_behind(network, left):
                self.cache.mirror.mark(key, ip, owner)
            return
        selector = f"{ATTACHMENT_LABEL}={resources.attachment_label(owner)}"
        # from the API server's cache (resourceVersion=0): cheap; a leftover it misses, the reconciler finds
        left = []
        for obj in self.client.list(self.client.path(RESERVATIONS), selector, cached=True):
            found = resources.reservation_owner(obj)
            if resources.reservation_address(obj["metadata"]["name"], {network}) is None:
                continue  # another network's (the same container and interface there): not this DEL's
            # the cache may lag: only the object it shows; a retained address keeps its reservation
            if found.same_attachment(owner) and not found.retained:
                left.append((obj["metadata"]["name"], obj))
        kept = self._drop_entries(network, owner, left) if self.mirror else set()
        for name, obj in left:
            if name not in kept:
                self.delete_reservation(name, obj["metadata"]["resourceVersion"])

    def _entries_behind(self, network: str, left: list[tuple[str, dict[str, Any]]]) -> list[tuple[PoolKey, int]]:
        """The pool entries the reservations `left` may back: each in the pool of the range it was taken in (its
        label), unless this call released its address already (the server's cache showing it still)."""
        taken: list[tuple[tuple[str, int, int], tuple[int, int, int]]] = []
        for name, obj in left:
            address = resources.reservation_address(name, {network})
            subnet = resources.reservation_subnet((obj.get("metadata") or {}).get("labels") or {})
            if address is not None and subnet is not None and address not in self.released:
                taken.append((address, subnet))
        if not taken:
            return []
        nodes = resources.slice_nodes(self.client.list(self.client.path(NODE_SLICE_POOLS)))
        return [(resources.subnet_pool_key(network, subnet, nodes), address[2]) for address, subnet in taken]

    def _drop_entries(self, network: str, owner: Owner, left: list[tuple[str, dict[str, Any]]]) -> set[str]:
        """Remove the attachment's entries that the reservations `left` back, each guarded by its holder; the
        names of the reservations to keep: their entry changed since it was read (the address's state is not
        known: kept, it blocks the address, never frees it)."""
        kept: set[str] = set()
        for key, ip in self._entries_behind(network, left):
            path = self.client.path(IPPOOLS, key.name)
            _, base = parse_request(key.cidr)
            for offset, raw in resources.pool_entries(self.client.get(path) or {}).items():
                if resources.offset_value(offset) != ip - base or not isinstance(raw, dict):
                    continue
                held = resources.entry_owner(raw)
                if not held.same_attachment(owner) or held.retained:
                    continue
                try:
                    self.client.patch(path, resources.entry_patch(offset, None, held.named("")))
                except Conflict:
                    kept.add(resources.reservation_name(network, key.version, ip))
        return kept

    def committed(self, owner: Owner) -> None:
        """`owner`'s writes are part of a commit that succeeded: no longer pending."""
        self.pending.pop(_attachment(owner), None)
        self.pending_pools.pop(_attachment(owner), None)
        self.pending_addresses.pop(_attachment(owner), None)

    def abort(self, owner: Owner) -> None:
        """A failed ADD: take back the reservations and pool entries this call wrote for `owner` (and only
        for it: in a batch the others' stand), best effort. What it created is deleted; what it took over (a
        sticky key's retained address, a recreated pod's) goes back to the holder it was taken from. Pool
        entries go first, as in a release: an abort cut short leaves a reservation blocking the address,
        never an entry without its reservation."""
        names = self.pending.pop(_attachment(owner), [])
        pools = self.pending_pools.pop(_attachment(owner), {})
        marked = self.pending_addresses.pop(_attachment(owner), [])
        try:
            for key in sorted(pools):
                self._drop_owner(key, owner, pools[key])
            for name, version, previous, where in names:
                if previous is None:
                    self.delete_reservation(name, version)
                else:
                    self.restore_reservation(name, version, previous, **where)
            if self.cache is not None:  # the mirror takes back the entries it may have written meanwhile
                for key, ip in marked:
                    self.cache.mirror.mark(key, ip, owner)
        except (TryAgainLater, Conflict):
            pass  # the API is failing too: what is left blocks addresses, never frees them; DEL repairs it

    def _drop_owner(self, key: PoolKey, owner: Owner, taken: dict[str, Owner]) -> None:
        """Remove `owner`'s entries from the pool, or give back those it `taken` (by offset) to their
        previous holder, each guarded by its holder: a JSON patch, so that other callers' writes to the pool
        meanwhile do not make it fail (a whole-object replace would)."""
        path = self.client.path(IPPOOLS, key.name)
        allocations = ((self.client.get(path) or {}).get("spec") or {}).get("allocations") or {}
        holder = owner.named("")  # guarded by container ID and ifname: what it wrote may have lost its name
        operations: list[dict[str, Any]] = []
        for offset, entry in allocations.items():
            if (entry.get("id"), entry.get("ifname")) == _attachment(owner):
                operations += resources.entry_patch(offset, taken.get(offset), holder)
        if operations:
            self.client.patch(path, operations)

    def node_slices(self) -> KubeNodeSlices:
        return KubeNodeSlices(self.client)

    def reusable(self) -> bool:
        self.known_reservations.clear()
        self.learned.clear()  # (a sticky key's reservations found elsewhere: the next call may see them released)
        self.hearsay.clear()
        self.pending.clear()
        self.pending_pools.clear()
        self.pending_addresses.clear()
        self.contended = False
        self.released.clear()
        self.seen = 0
        self.quorum_reads.clear()
        return self.client.credentials.stamp() == self.stamp

    def check_ready(self) -> None:
        self.client.list(self.client.path(IPPOOLS) + "?limit=1")

    def close(self) -> None:
        self.client.close()


@record(frozen=True)
class KubeNodeSlices:
    """Fast IPAM's input: the networks' NodeSlicePools (the node-slice controller writes them)."""

    client: KubeClient

    def slice_pool(self, name: str) -> SlicePool | None:
        obj = self.client.get(self.client.path(NODE_SLICE_POOLS, name))
        return None if obj is None else resources.slice_pool_value(obj, self.where(name))

    def where(self, name: str) -> str:
        return f"NodeSlicePool {self.client.namespace}/{name}"


@record(frozen=True)
class KubePods:
    """Sticky addresses' reads of pods and IPAMClaims (see whereabouts.storage.Pods)."""

    client: KubeClient

    def pod(self, namespace: str, name: str) -> PodFacts | None:
        obj = self.client.get(self.client.resource("pods", name, namespace=namespace), named=True)
        return None if obj is None else resources.pod_facts(obj)

    def has_claim(self, namespace: str, name: str) -> bool:
        return self.client.get(self._claim_path(namespace, name)) is not None

    def record_claim(self, namespace: str, name: str, ips: Sequence[str], owner_pod: str) -> bool:
        """Through the status subresource where the CRD declares one, else on the object itself. The IPAMClaim
        CRD (k8snetworkplumbingwg/ipamclaims) requires both `ips` and `ownerPod` in a status: without the pod,
        the API server refuses the patch (422)."""
        path = self._claim_path(namespace, name)
        body = {"status": {"ips": list(ips), "ownerPod": owner_pod}}
        if self.client.merge_patch_existing(path + "/status", body) is not None:
            return True
        return self.client.merge_patch_existing(path, body) is not None

    def _claim_path(self, namespace: str, name: str) -> str:
        return self.client.resource(resources.IPAMCLAIMS, name, group=resources.CLAIMS_GROUP,
                                    version=resources.CLAIMS_VERSION, namespace=namespace)  # fmt: skip


def _records(obj: dict[str, Any], holder: Owner) -> bool:
    """Whether reservation `obj` is `holder`'s record, its pod too: written by this plugin, the same attachment;
    by a Go plugin, as far as it says (v0.7 and later record no container ID: Owner.recorded_in). A pool entry
    the Go plugin wrote, released, would otherwise leave its reservation blocking the address for good."""
    found = resources.reservation_owner(obj)
    return holder.recorded_in(found) and found.podref == holder.podref


def _taken_in(obj: dict[str, Any], key: PoolKey) -> bool:
    """Whether reservation `obj` was taken in `key`'s range, as its `subnet_<prefix>` label says (one that says
    none, a Go plugin's, may back an entry of any pool)."""
    return resources.reservation_subnet((obj.get("metadata") or {}).get("labels") or {}) == resources.pool_subnet(key)


def _restated(current: Owner, owner: Owner) -> bool:
    """Whether the object's record must be rewritten to say what `owner` says: its sticky record (retained now,
    or back), or the network config it is held under (an ADD under a name took the attachment's address over:
    a GC of that config judges it now)."""
    if owner.netconf and current.netconf != owner.netconf:
        return True
    return any(getattr(current, name) != getattr(owner, name) for name in resources.STICKY_FIELDS)


class _Transacting:
    """`with store.transaction(keys) as txn`: this node's locks on the pools (store.nodelock) for as long as
    the transaction runs, the snapshot read under them. (A class rather than `contextlib.contextmanager`: a
    CNI process pays for every import.)"""

    __slots__ = ("keys", "locks", "overlapping", "store")

    def __init__(self, store: KubernetesStore, keys: Sequence[PoolKey], overlapping: bool) -> None:
        self.store, self.keys, self.overlapping = store, keys, overlapping
        names = [f"{store.client.namespace}.{key.name}" for key in keys] if store.lock_dir else []
        self.locks = node_locks(store.lock_dir, names, timeout=0.0)

    def __enter__(self) -> KubeTransaction:
        self.locks.timeout = deadline.remaining(LOCK_WAIT)
        self.locks.__enter__()
        try:
            return self.store._begin(self.keys, self.overlapping)
        except BaseException:
            self.locks.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        self.locks.__exit__()


def open_kubernetes(settings: KubernetesSettings, *, keep: Keep | None = None) -> KubernetesStore:
    """With `keep` (the node daemon), the store decides from the watch-fed cache its stores share and holds
    addresses by their reservations alone (store.kubecache); without it, as every CNI process does, it reads
    the pools and writes them with each call."""
    store = KubernetesStore(KubeClient(load_credentials(settings.kubeconfig)), lock_dir=settings.lock_dir,
                            mirror=settings.ippool_mirror)  # fmt: skip
    if keep is not None:
        from whereabouts.store.kubecache import KubeCache

        namespace = store.client.namespace  # (a kubeconfig rewritten to name another: the copy is of the old one)
        store.cache = keep(settings, lambda: KubeCache(settings), lambda cache: cache.namespace == namespace)
    return store
