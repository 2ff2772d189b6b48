"""The etcd v3 datastore: one key per held address, every change a transaction guarded by revisions.

Key layout under `etcd_prefix` (default `/whereabouts`), network `-` for the default domain:
    <prefix>/<network>/pools/<node or ->/<cidr, '/' as '-'>/<ipkey>   who holds the address in that pool
    <prefix>/<network>/reservations/<ipkey>                          the network-wide overlapping guard
    <prefix>/<network>/attachments/<container ID>/<ifname>           an attachment holding addresses there
A name segment has '%' and '/' percent-encoded, and a name that is '-' itself is written '%2D' (a bare '-' is
the empty name).
Values are JSON `{"address", "id", "ifname", "podref"}`; pool entries also `"netconf"`, the network config name
the address was allocated under (GC goes by it; absent from entries written before it was recorded). Sticky
addresses add `"sticky"`, `"retained"`, `"expires"`, `"controller"`, `"fixed"` and `"node"` (see model.Owner),
each only when set. `ipkey` is
`4:0a000005` / `6:<32 hex>`, so a pool or a CIDR is one key range.

Why one key per address rather than one per pool: two callers conflict only when they write the same address,
never because they touched the same pool; a transaction compares exactly the keys it writes: "does not exist
yet" (create revision 0) for a new hold, "unchanged since read" (mod revision) for a release or a takeover.
The snapshot is read in a single read-only transaction, so pools and reservations come from one revision.

The attachment key makes two ADDs of one attachment (a runtime's retry while the first is in flight) conflict,
though each picked another address, so that the second reads again and finds the first's (ADD is idempotent):
every commit that makes an attachment hold an address writes its key, every one that releases a held address
deletes it, and each compares it "unchanged since the snapshot's revision" (a missing key passes).

etcd refuses a transaction of more than 128 compares or operations (its --max-txn-ops default): a change
writes up to three keys (pool entry, reservation, attachment), so the service gives a commit at most
`max_changes` changes; a commit of releases only (GC, a group DEL) that needs more goes as several
transactions, each guarded as a whole one would be (a release done twice releases nothing more).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from whereabouts.config import EtcdSettings
from whereabouts.errors import AddressTaken, InvalidConfig, TryAgainLater
from whereabouts.kube.transport import TLSSettings
from whereabouts.model import Change, ChangeSet, Owner, PoolKey, PoolState, Snapshot, overwrite_refused
from whereabouts.ranges import cidr_key_bounds, format_ip, from_sortable_key, sortable_key
from whereabouts.record import field, record
from whereabouts.store.etcd_gateway import EtcdError, EtcdGateway, b64, parse_endpoint, unb64

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Collection
    from typing import Any

    from whereabouts.inventory import Tally

    Planned = list[tuple[Change, list[tuple[str, dict[str, Any]]]]]  # changes, each with its keys' operations

DEFAULT_PREFIX = "/whereabouts"
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: compares, and operations, per transaction
# the most keys one change writes: pool entry, reservation, its attachment's key, and the key of the attachment
# it takes the address over from (a pod recreated under a new container ID, a sticky address's new holder)
KEYS_PER_CHANGE = 4


def _segment(name: str) -> str:
    """A name as one key segment: '' is '-', so a name '-' is written '%2D' ('%' and '/' encoded as ever)."""
    return "%2D" if name == "-" else name.replace("%", "%25").replace("/", "%2F") or "-"


def pool_prefix(prefix: str, key: PoolKey) -> str:
    return f"{prefix}/{_segment(key.network)}/pools/{_segment(key.node)}/{key.cidr.replace('/', '-')}/"


def reservation_prefix(prefix: str, network: str) -> str:
    return f"{prefix}/{_segment(network)}/reservations/"


def _unsegment(segment: str) -> str:
    return "" if segment == "-" else "-" if segment == "%2D" else segment.replace("%2F", "/").replace("%25", "%")


def attachment_key(prefix: str, network: str, owner: Owner) -> str:
    return f"{prefix}/{_segment(network)}/attachments/{_segment(owner.container_id)}/{_segment(owner.ifname)}"


def _prefix_end(key: str) -> str:
    return key[:-1] + chr(ord(key[-1]) + 1)


_OPTIONAL = ("netconf", "sticky", "retained", "expires", "controller", "fixed", "node")


def _owner_value(owner: Owner, address: str) -> str:
    value: dict[str, object] = {"address": address, "id": owner.container_id, "ifname": owner.ifname,
                                "podref": owner.podref}  # fmt: skip
    value.update((name, getattr(owner, name)) for name in _OPTIONAL if getattr(owner, name))
    return json.dumps(value)


def _owner(value: str) -> Owner:
    data = json.loads(unb64(value))
    return Owner(data.get("id", ""), data.get("ifname", ""), data.get("podref", ""), data.get("netconf", ""),
                 str(data.get("sticky", "")), _int(data.get("retained")), _int(data.get("expires")),
                 str(data.get("controller", "")), data.get("fixed") is True, str(data.get("node", "")))  # fmt: skip


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _split_ipkey(key: str) -> tuple[int, int]:
    return from_sortable_key(key.rsplit("/", 1)[1])


def _refuse_overwrite(change: Change, *found: Owner | None) -> None:
    """A compare on the revision read would let a hold write over anyone's record: see model.overwrite_refused."""
    for recorded in found:
        refused = overwrite_refused(change, recorded)
        if refused:
            raise AddressTaken(refused)


@record
class EtcdTransaction:
    store: EtcdStore
    snapshot: Snapshot
    revisions: dict[str, int] = field(default_factory=dict)  # key -> mod revision, as read
    informed: bool = False  # a lost compare-and-swap on a pool: back off
    revision: int = 0  # etcd's revision the snapshot was read at

    def commit(self, changes: ChangeSet) -> bool:
        """One transaction; a change set of releases only that needs more than etcd takes in one goes as
        several, in order (False at the first that lost: what went before is released, and stays so)."""
        released = {(c.key, c.ip) for c in changes.changes if c.owner is None}
        crossing = _crossing(changes) if changes.overlapping else {}
        planned = [(change, self._plan(change, changes.overlapping, released, crossing)) for change in changes.changes]
        releases_only = all(change.owner is None or change.owner.retained for change in changes.changes)
        for part in _parts(planned) if releases_only else [planned]:
            compares: list[dict[str, Any]] = []
            ops: list[dict[str, Any]] = []
            for _, keys in part:
                for key, op in keys:
                    compares.append(self._unchanged(key))
                    ops.append(op)
            for key, op in self._attachments([change for change, _ in part]):
                compares.append(self._untouched(key))
                ops.append(op)
            reply = self.store.call("kv/txn", {"compare": compares, "success": ops})
            if not reply.get("succeeded"):
                return False
        return True

    def _attachments(self, changes: list[Change]) -> list[tuple[str, dict[str, Any]]]:
        """The attachment keys the changes write: put for each attachment made to hold an address, deleted for
        each whose held address is released, retained (a retained entry is no attachment's) or taken over."""
        puts: dict[str, Owner] = {}
        deletes: dict[str, None] = {}
        for change in changes:
            if change.owner is not None and not change.owner.retained:
                puts[attachment_key(self.store.prefix, change.key.network, change.owner)] = change.owner
            if change.previous is not None and not change.previous.retained:  # (taken over: another's)
                deletes[attachment_key(self.store.prefix, change.key.network, change.previous)] = None
        ops = [(key, _put(key, json.dumps({"id": owner.container_id, "ifname": owner.ifname,
                                           "podref": owner.podref}))) for key, owner in puts.items()]  # fmt: skip
        ops += [(key, {"request_delete_range": {"key": b64(key)}}) for key in deletes if key not in puts]
        return ops

    def _plan(
        self,
        change: Change,
        overlapping: bool,
        released: set[tuple[PoolKey, int]],
        crossing: dict[tuple[str, int, int], Owner],
    ) -> list[tuple[str, dict[str, Any]]]:
        """The pool entry and reservation keys the change writes, each with its operation. `crossing`: the
        addresses one change of the set releases in one pool and another holds in another (overlapping ranges),
        with the holder released: the hold writes the reservation over it, the release leaves it alone (etcd
        takes no put and delete of one key in a transaction)."""
        prefix, ik = self.store.prefix, sortable_key(change.version, change.ip)
        place = (change.key.network, change.version, change.ip)
        holder = self.snapshot.pools[change.key].allocations.get(change.ip)
        reserved = self.snapshot.reservations.get(place)
        if change.owner is not None:
            freed = crossing.get(place)
            over = None if reserved is not None and freed is not None and reserved.same_holder(freed) else reserved
            _refuse_overwrite(change, holder, over if overlapping else None)
        # A release removes only what the snapshot shows `previous` holding. A reservation records no network
        # config name (that goes with the pool entry), so it is matched by holder alone; it stays while an
        # entry of the same attachment in another pool read stands behind it (see LocalTransaction._release).
        reserved_by_previous = (
            reserved is not None
            and reserved.same_holder(change.previous)
            and not self._backed(change, released)
            and place not in crossing
        )
        keys: list[tuple[str, Owner | None]] = []
        if change.owner is not None or holder == change.previous:
            keys.append((pool_prefix(prefix, change.key) + ik, change.owner))
        if overlapping and (change.owner is not None or reserved_by_previous):
            keys.append((reservation_prefix(prefix, change.key.network) + ik, change.owner and change.owner.named("")))
        planned = []
        for key, owner in keys:
            if owner is None:
                planned.append((key, {"request_delete_range": {"key": b64(key)}}))
            else:
                planned.append((key, _put(key, _owner_value(owner, format_ip(change.version, change.ip)))))
        return planned

    def _backed(self, change: Change, released: set[tuple[PoolKey, int]]) -> bool:
        previous = change.previous
        return previous is not None and any(
            key != change.key and key.network == change.key.network and (key, change.ip) not in released
            and (who := pool.allocations.get(change.ip)) is not None and who.same_attachment(previous)
            and key.version == change.version
            for key, pool in self.snapshot.pools.items()
        )  # fmt: skip

    def _unchanged(self, key: str) -> dict[str, Any]:
        revision = self.revisions.get(key)
        if revision is None:
            return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}

    def _untouched(self, key: str) -> dict[str, Any]:
        """Not written since the snapshot was read (the key was not read: any revision up to the snapshot's)."""
        return {"key": b64(key), "target": "MOD", "result": "LESS", "mod_revision": str(self.revision + 1)}


def _crossing(changes: ChangeSet) -> dict[tuple[str, int, int], Owner]:
    """The addresses (network, version, address) the set releases in one pool and holds in another, with the
    holder each release frees there (an ADD freeing a lapsed retention in one range, taking it in another)."""
    held = {(c.key.network, c.version, c.ip) for c in changes.changes if c.owner is not None}
    return {
        place: c.previous
        for c in changes.changes
        if c.owner is None and c.previous is not None and (place := (c.key.network, c.version, c.ip)) in held
    }


def _put(key: str, value: str) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def _parts(planned: Planned) -> list[Planned]:
    """Releases in runs that each fit one transaction: its entry and reservation keys, and one attachment key
    per attachment it releases."""
    parts: list[Planned] = []
    part: Planned = []
    size, attachments = 0, set[tuple[str, str, str]]()
    for change, keys in planned:
        holder = change.previous
        attachment = (change.key.network, holder.container_id, holder.ifname) if holder is not None else None
        needed = len(keys) + (attachment is not None and attachment not in attachments)
        if part and size + needed > MAX_TXN_OPS:
            parts.append(part)
            part, size, attachments = [], 0, set()
            needed = len(keys) + (attachment is not None)
        part.append((change, keys))
        size += needed
        if attachment is not None:
            attachments.add(attachment)
    return [*parts, part] if part else parts


class EtcdStore:
    # pools_holding reads every entry of the network: once per attachment of a node daemon's DEL round is too
    # many for every DEL (a range dropped from the config is left to GC, which reads the network's pools once)
    finds_attachments = False
    max_changes = MAX_TXN_OPS // KEYS_PER_CHANGE  # changes per commit (beyond: releases only, split)

    def __init__(self, gateway: EtcdGateway, *, prefix: str = DEFAULT_PREFIX, files: tuple[str, ...] = ()) -> None:
        self.gateway = gateway
        self.prefix = prefix.rstrip("/")
        self.files = files  # TLS files it was opened with
        self.stamp = _stamp(files)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.gateway.call(path, body)
        except EtcdError as exc:
            raise TryAgainLater(f"etcd refused {path}: {exc.message}") from exc

    @contextmanager
    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> Iterator[EtcdTransaction]:
        ranges = [(pool_prefix(self.prefix, k), _prefix_end(pool_prefix(self.prefix, k))) for k in keys]
        if overlapping:
            for key in keys:
                base = reservation_prefix(self.prefix, key.network)
                lo, hi = cidr_key_bounds(key.cidr)
                ranges.append((base + lo, base + hi + "\0"))
        reply = self.call("kv/txn", {"success": [_range_op(lo, hi) for lo, hi in ranges]})
        txn = EtcdTransaction(self, Snapshot({}))
        with _reading("kv/txn"):
            revision = txn.revision = int(reply["header"]["revision"])
            responses = [r["response_range"].get("kvs", []) for r in reply.get("responses", [])]
            if len(responses) != len(ranges):
                raise ValueError(f"{len(responses)} responses to {len(ranges)} reads")
            for key, kvs in zip(keys, responses, strict=False):
                txn.snapshot.pools[key] = PoolState(key, revision if kvs else None, self._collect(kvs, txn, None))
            for key, kvs in zip(keys, responses[len(keys) :], strict=False):
                self._collect(kvs, txn, key.network)
        yield txn

    def _collect(self, kvs: list[dict[str, Any]], txn: EtcdTransaction, network: str | None) -> dict[int, Owner]:
        """Record revisions; return a pool's allocations, or (network given) fill the reservations."""
        allocations = {}
        for kv in kvs:
            key = unb64(kv["key"])
            txn.revisions[key] = int(kv.get("mod_revision", 0))
            version, ip = _split_ipkey(key)
            if network is None:
                allocations[ip] = _owner(kv.get("value", ""))
            else:
                txn.snapshot.reservations[(network, version, ip)] = _owner(kv.get("value", ""))
        return allocations

    def pools_holding(self, network: str, container_id: str, ifname: str) -> list[PoolKey]:
        probe = Owner(container_id, ifname)
        return self._pools_where(network, lambda owner: owner.same_attachment(probe))

    def _pools_where(self, network: str, matches: Callable[[Owner], bool]) -> list[PoolKey]:
        base = f"{self.prefix}/{_segment(network)}/pools/"
        reply = self.call("kv/range", {"key": b64(base), "range_end": b64(_prefix_end(base))})
        found = set()
        with _reading("kv/range"):
            for kv in reply.get("kvs", []):
                if matches(_owner(kv.get("value", ""))):
                    node, cidr, _ = unb64(kv["key"])[len(base) :].split("/")
                    found.add(PoolKey(network, _cidr_from_segment(cidr), _unsegment(node)))
        return sorted(found)

    def pools_of(self, network: str) -> list[PoolKey]:
        """From the keys alone (keys_only: the values stay on the server)."""
        base = f"{self.prefix}/{_segment(network)}/pools/"
        reply = self.call("kv/range", {"key": b64(base), "range_end": b64(_prefix_end(base)), "keys_only": True})
        found = set()
        for kv in reply.get("kvs", []):
            node, cidr, _ = unb64(kv["key"])[len(base) :].split("/")
            found.add(PoolKey(network, _cidr_from_segment(cidr), _unsegment(node)))
        return sorted(found)

    def pools_with_sticky(self, network: str, sticky: str) -> list[PoolKey]:
        return self._pools_where(network, lambda owner: owner.sticky == sticky)

    # -- the operator's tools (whereabouts.inventory) --------------------------------------------------------

    def pool_keys(self, networks: Collection[str] = ()) -> list[PoolKey]:
        """From the keys alone (keys_only: the values stay on the server)."""
        base = self.prefix + "/"
        reply = self.call("kv/range", {"key": b64(base), "range_end": b64(_prefix_end(base)), "keys_only": True})
        found = set()
        with _reading("kv/range"):
            for kv in reply.get("kvs", []):
                parts = unb64(kv["key"])[len(base) :].split("/")
                if len(parts) == 5 and parts[1] == "pools":
                    network, _, node, cidr, _ = parts
                    found.add(PoolKey(_unsegment(network), _cidr_from_segment(cidr), _unsegment(node)))
        return sorted(found)

    def tally(self, key: PoolKey, spans: Sequence[tuple[int, int]]) -> list[Tally]:
        from whereabouts.inventory import tally_allocations

        with self.transaction([key], overlapping=False) as txn:
            return tally_allocations(key.version, txn.snapshot.pools[key].allocations, spans)

    def reserved(self, networks: Collection[str] = ()) -> dict[tuple[str, int, int], Owner]:
        base = self.prefix + "/"
        reply = self.call("kv/range", {"key": b64(base), "range_end": b64(_prefix_end(base))})
        found = {}
        with _reading("kv/range"):
            for kv in reply.get("kvs", []):
                parts = unb64(kv["key"])[len(base) :].split("/")
                if len(parts) == 3 and parts[1] == "reservations":
                    found[(_unsegment(parts[0]), *from_sortable_key(parts[2]))] = _owner(kv.get("value", ""))
        return found

    def pods(self) -> None:
        return None

    def forget_attachment(self, network: str, owner: Owner) -> None:
        return None  # commits are atomic: nothing is ever left half-written

    def abort(self, owner: Owner) -> None:
        return None

    def node_slices(self) -> None:
        return None

    def reusable(self) -> bool:
        """True while its TLS files are the ones it was opened with (a rotated client certificate: reopen)."""
        return _stamp(self.files) == self.stamp

    def check_ready(self) -> None:
        self.call("kv/range", {"key": b64(self.prefix + "/"), "limit": "1", "keys_only": True})

    def close(self) -> None:
        self.gateway.close()


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Reading etcd's reply to `path`: one that is not as etcd writes its replies (a field missing, a key or
    value that is no key or value of this store) is a bad answer, code 11 as an unreachable etcd, not a crash."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise TryAgainLater(f"etcd gave a reply to {path} it never gives ({type(exc).__name__}: {exc})") from None


def _range_op(lo: str, hi: str) -> dict[str, Any]:
    return {"request_range": {"key": b64(lo), "range_end": b64(hi)}}


def _cidr_from_segment(segment: str) -> str:
    address, _, prefix = segment.rpartition("-")
    return f"{address}/{prefix}"


def open_etcd(settings: EtcdSettings) -> EtcdStore:
    tls = TLSSettings(ca_file=settings.ca_cert_file, cert_file=settings.cert_file, key_file=settings.key_file)
    use_tls = bool(settings.ca_cert_file or settings.cert_file)
    try:
        endpoints = [parse_endpoint(e, tls=use_tls) for e in settings.endpoints]
    except ValueError:
        shown = ",".join(redacted(e) for e in settings.endpoints)
        raise InvalidConfig(f"invalid etcd_host {shown!r}: expected host:port or URLs") from None
    gateway = EtcdGateway(endpoints, tls=tls, username=settings.username, password=settings.password)
    files = tuple(f for f in (settings.ca_cert_file, settings.cert_file, settings.key_file) if f)
    return EtcdStore(gateway, prefix=settings.prefix or DEFAULT_PREFIX, files=files)


def redacted(endpoint: str) -> str:
    """An endpoint as a message may show it: credentials written into it (`http://user:pass@host`) as '***'."""
    scheme, sep, rest = endpoint.rpartition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def _stamp(files: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    stamps = []
    for path in files:
        try:
            info = os.stat(path)
            stamps.append((info.st_ino, info.st_mtime_ns))
        except OSError:
            stamps.append((0, 0))
    return tuple(stamps)
