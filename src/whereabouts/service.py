"""The IPAM service: snapshot -> decide -> compare-and-swap commit -> retry, for every verb.

The same loop serves every store: a SQLite transaction whose commit cannot lose, an etcd revision or a
Kubernetes resourceVersion whose commit can. Retries are bounded in count and time, with jittered backoff,
and end in TryAgainLater (code 11).
"""

from __future__ import annotations

import time

from whereabouts import deadline
from whereabouts.allocator import Decision, PoolRange, allocate, lapsed, release, release_all_but
from whereabouts.config import IPAMConfig
from whereabouts.errors import TryAgainLater, WhereaboutsError
from whereabouts.model import ABANDONED, GONE, Change, ChangeSet, Owner, PoolKey, PoolState, Refusal, Snapshot
from whereabouts.ranges import parse_request
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import ModuleType
    from typing import TypeVar

    from whereabouts.storage import NodeSlices, Store, Transaction

    T = TypeVar("T")
    Plan = tuple[Owner | None, Owner | None]  # (owner to write, None: release; the holder it replaces)

SPREAD_LIMIT = 32  # a caller retrying after lost races picks among at most this many lowest free addresses


@record(frozen=True)
class RetryPolicy:
    attempts: int = 1000
    deadline: float = 45.0  # seconds for the whole call: well inside the runtime's own CNI timeout
    base_delay: float = 0.005
    max_delay: float = 0.25
    quick_retries: int = 16  # retries without backing off after losses whose winner the store learned


@record(frozen=True)
class Assigned:
    """One address handed to the attachment: the range it came from, and the address with prefix."""

    pool_range: PoolRange
    address: str


def pool_ranges(cfg: IPAMConfig) -> tuple[PoolRange, ...]:
    return tuple(PoolRange(PoolKey(cfg.network_name, rng.cidr), rng) for rng in cfg.ranges)


class IPAMService:
    def __init__(
        self, store: Store, *, retry: RetryPolicy | None = None, node: str = "", slices: NodeSlices | None = None
    ) -> None:
        self.store = store
        self.retry = retry or RetryPolicy()
        self.node = node  # Fast IPAM: the node whose slice this call allocates from ("": found by nodeslice)
        self.slices = slices  # Fast IPAM: where the node slices are listed (configs with node_slice_size)

    def _ranges(
        self, cfg: IPAMConfig, *, required: bool = True, requested: tuple[tuple[int, int], ...] = ()
    ) -> tuple[PoolRange, ...] | Refusal:
        """The pools a call works on. With node slices the first range's pool is this node's slice, looked
        up in the network's NodeSlicePool once per call; `required` False drops it when there is none."""
        if not cfg.slice_prefix:
            return pool_ranges(cfg)
        if self.slices is None:
            raise TryAgainLater(f"network {cfg.network_name or cfg.netconf_name}: node slices, but none listed")
        from whereabouts.nodeslice import node_pool_ranges  # Fast IPAM only: other calls never load it

        return node_pool_ranges(cfg, self.slices, self.node, required=required, requested=requested)

    def _pools(self, cfg: IPAMConfig) -> tuple[PoolRange, ...]:
        """The pools of a DEL or GC: the node's slice only where there is one (they never refuse)."""
        ranges = self._ranges(cfg, required=False)
        assert not isinstance(ranges, Refusal)  # only a call that must allocate is refused
        return ranges

    def add(
        self,
        cfg: IPAMConfig,
        owner: Owner,
        requested: tuple[tuple[int, int], ...] = (),
        fixed_mine: tuple[tuple[int, int], ...] = (),
        live: Callable[[], bool] | None = None,
    ) -> list[Assigned] | Refusal:
        """ADD for one attachment. `fixed_mine`: the addresses of `reservations` that name its pod or MAC (the
        caller requests them too); every other fixed reservation is kept from it. `live`: see add_batch."""
        wanted = None if live is None else (lambda i: live())
        (outcome,) = self.add_batch(cfg, [(owner, requested)], fixed_mine, live=wanted)
        return outcome

    def add_batch(
        self,
        cfg: IPAMConfig,
        requests: Sequence[tuple[Owner, tuple[tuple[int, int], ...]]],
        fixed_mine: tuple[tuple[int, int], ...] = (),
        live: Callable[[int], bool] | None = None,
    ) -> list[list[Assigned] | Refusal]:
        """ADD for several attachments of one network at once (the node daemon's group commit): one read,
        one decision taking them in order, one commit. Each gets its addresses or its own refusal (an
        exhausted range, a taken address); a failure of the store (an exception) fails them all (those of an
        earlier round, committed already, find their addresses again when their runtime retries). Every
        address is recorded under the network config's name (GC goes by it).

        A request whose decision changes an address an earlier one of the round changes (one sticky key or
        one pod, under two containers: the later takes over what the earlier just got) is left for another
        round, after the earlier is committed: a store must not see two changes of one address in one commit
        (etcd refuses the whole transaction), and both must not be answered with the address. So are the
        requests that would take a commit past the store's `max_changes` (etcd's limit of operations per
        transaction), and the lapsed retentions an ADD frees on its way are at most half that many (the
        rest go with the next ADDs).

        `live(i)` (the node daemon's) says whether request i's caller still waits, asked as each decision is
        made, right before its commit: one that hung up, or whose deadline passed, is left out of the commit
        and refused (ABANDONED): an address committed for it would be nobody's to use or release."""
        requests = [(owner.named(cfg.netconf_name), requested) for owner, requested in requests]
        ranges = self._ranges(cfg, requested=requests[0][1] if len(requests) == 1 else ())
        if isinstance(ranges, Refusal):
            return [ranges] * len(requests)
        keys = _keys(ranges)
        elsewhere = self._sticky_elsewhere(cfg, [owner for owner, _ in requests], keys)
        keys += elsewhere
        now = int(time.time())
        pending = list(range(len(requests)))  # the requests of the round being decided
        resuming: list[Owner] = []  # attachments whose decision resumed a reservation, before their pools are read
        looked_up: set[tuple[str, str]] = set()  # attachments whose other pools are read with `keys`
        limit = self.store.max_changes  # changes per commit (0: any number)

        def decide(txn: Transaction, attempt: int) -> tuple[ChangeSet, list[Decision | Refusal | None]]:
            # Lost a race twice: spread out among the lowest few free addresses, since callers that all
            # re-pick the lowest collide again and only one of them wins each round. (The first retry
            # re-picks the lowest: the race may have been with a holder the store now knows about.)
            skip = _random().randrange(min(2 ** (attempt - 1), SPREAD_LIMIT)) if attempt >= 2 else 0
            freed = lapsed(keys=keys, snapshot=txn.snapshot, now=now, expire_pods=cfg.store.kind != "kubernetes")
            if limit:
                freed = freed[: limit // 2]
            working = txn.snapshot if len(pending) == 1 and not freed else _working_copy(txn.snapshot)
            _apply(working, ChangeSet(tuple(freed), (), cfg.overlapping))
            changes: list[Change] = []
            changed: set[object] = set()  # the addresses this round's decisions change
            outcomes: list[Decision | Refusal | None] = []  # None: left for the next round
            full = False  # a request did not fit this commit: it and those after it wait for the next
            for i in pending:
                owner, requested = requests[i]
                if full:
                    outcomes.append(None)
                    continue
                if live is not None and not live(i):
                    outcomes.append(Refusal(ABANDONED, f"container {owner.container_id} interface {owner.ifname}: "
                                                       "its caller went away before the commit"))  # fmt: skip
                    continue
                decision = allocate(ranges=ranges, snapshot=working, owner=owner, requested=requested,
                                    overlapping=cfg.overlapping, skip=skip, fixed=cfg.reservations,
                                    fixed_mine=fixed_mine, elsewhere=elsewhere)  # fmt: skip
                if isinstance(decision, Refusal):
                    outcomes.append(decision)
                    continue
                if decision.resumed and (owner.container_id, owner.ifname) not in looked_up:
                    resuming.append(owner)
                places = {_place(change, cfg.overlapping) for change in decision.changes.changes}
                if places & changed:
                    outcomes.append(None)
                    continue
                if limit and changes and len(freed) + len(changes) + len(decision.changes.changes) > limit:
                    full = True
                    outcomes.append(None)
                    continue
                changed |= places
                outcomes.append(decision)
                changes += decision.changes.changes
                if working is not txn.snapshot:
                    _apply(working, decision.changes)  # the next attachment sees what this one takes
            if resuming:  # nothing committed: decided again once their other pools are read
                return ChangeSet((), (), cfg.overlapping), [None] * len(outcomes)
            expected = tuple((key, txn.snapshot.pools[key].version) for key in keys)
            return ChangeSet(_after_freeing(freed, changes), expected, cfg.overlapping), outcomes

        decided: dict[int, Decision | Refusal] = {}
        try:
            while pending:
                outcomes = self._run(keys, cfg.overlapping, decide)
                if resuming:
                    keys += self._other_pools(cfg, resuming, keys)
                    looked_up.update((owner.container_id, owner.ifname) for owner in resuming)
                    resuming.clear()
                    continue
                decided.update((i, done) for i, done in zip(pending, outcomes, strict=True) if done is not None)
                pending = [i for i in pending if i not in decided]
        except WhereaboutsError:
            for i in pending:
                self.store.abort(requests[i][0])
            raise
        results: list[list[Assigned] | Refusal] = []
        for i, (owner, _) in enumerate(requests):
            outcome = decided[i]
            if isinstance(outcome, Refusal):
                self.store.abort(owner)  # what an earlier, lost attempt of this one wrote
                results.append(outcome)
            else:
                results.append([Assigned(pr, pr.rng.with_address(ip)) for pr, ips in outcome.held for ip in ips])
        return results

    def _other_pools(self, cfg: IPAMConfig, owners: Sequence[Owner], keys: list[PoolKey]) -> list[PoolKey]:
        """The pools of the network outside `keys` where the attachments hold entries: a reservation one of
        them backs is not resumed (whereabouts.occupancy: `resumable`)."""
        found: dict[PoolKey, None] = {}
        for owner in owners:
            found.update(dict.fromkeys(self.store.pools_holding(cfg.network_name, owner.container_id, owner.ifname)))
        return [key for key in found if key not in keys]

    def _sticky_elsewhere(self, cfg: IPAMConfig, owners: Sequence[Owner], keys: list[PoolKey]) -> list[PoolKey]:
        """With node slices: the other pools of the network where the attachments' sticky keys hold an address
        (the node each was on before), so that the key gets it back on this node."""
        if not cfg.slice_prefix or not any(owner.sticky for owner in owners):
            return []
        found: dict[PoolKey, None] = {}
        for owner in owners:
            if owner.sticky:
                found.update(dict.fromkeys(self.store.pools_with_sticky(cfg.network_name, owner.sticky)))
        return [key for key in found if key not in keys]

    def delete(self, cfg: IPAMConfig, owner: Owner) -> None:
        """Release the attachment's addresses in the configured pools, then in whichever other pools of the
        network hold it (a range dropped from the config since its ADD: a dual-stack config that lost its IPv6
        range). Where that lookup reads every pool (etcd, Kubernetes: `finds_attachments`), only when it
        held nothing in the configured ones or, with node slices, a range released nothing (a re-slice since
        the ADD left its address in the node's old pool); on Kubernetes `forget_attachment` then releases what
        the attachment's reservations still standing back elsewhere."""
        (outcome,) = self.delete_batch(cfg, [owner])
        if outcome is not None:
            raise outcome

    def delete_batch(self, cfg: IPAMConfig, owners: Sequence[Owner]) -> list[WhereaboutsError | None]:
        """DEL for several attachments of one network at once (the node daemon's group commit): one read,
        one commit for the configured pools; then, for each, the pools elsewhere and its leftovers. A
        failure of that first commit fails them all; a later one fails only its own attachment. An attachment
        named twice (a DEL retried while the first waits in the round) is released once, and both get that
        answer: two releases of one address decided from one read make the commit lose on every try."""
        configured = _keys(self._pools(cfg))
        attachments: dict[tuple[str, str], Owner] = {}
        for owner in owners:
            attachments.setdefault((owner.container_id, owner.ifname), owner)
        unique = list(attachments.values())
        released = self._release_in(configured, cfg, unique)
        answers: dict[tuple[str, str], WhereaboutsError | None] = {}
        for owner, count in zip(unique, released, strict=True):
            outcome: WhereaboutsError | None = None
            try:
                self._release_elsewhere(cfg, owner, configured, count)
                self.store.forget_attachment(cfg.network_name, owner)
            except WhereaboutsError as exc:
                outcome = exc
            answers[owner.container_id, owner.ifname] = outcome
        return [answers[owner.container_id, owner.ifname] for owner in owners]

    def _release_elsewhere(self, cfg: IPAMConfig, owner: Owner, configured: list[PoolKey], released: int) -> None:
        if not released or self.store.finds_attachments or (cfg.slice_prefix and released < len(cfg.ranges)):
            held = self.store.pools_holding(cfg.network_name, owner.container_id, owner.ifname)
            known = set(configured)
            elsewhere = [key for key in held if key not in known]
            if elsewhere:
                self._release_in(elsewhere, cfg, [owner])

    def _release_in(self, keys: list[PoolKey], cfg: IPAMConfig, owners: Sequence[Owner]) -> list[int]:
        """Release what each owner holds in `keys`, in one commit; how many addresses each released."""

        retain = _retainer(cfg)

        def decide(txn: Transaction, attempt: int) -> tuple[ChangeSet, list[int]]:
            changes: list[Change] = []
            counts = []
            for owner in owners:
                released = release(keys=keys, snapshot=txn.snapshot, owner=owner, overlapping=cfg.overlapping,
                                   retain=retain)  # fmt: skip
                changes += released.changes
                counts.append(len(released.changes))
            expected = tuple((key, txn.snapshot.pools[key].version) for key in keys)
            return ChangeSet(tuple(changes), expected, cfg.overlapping), counts

        return self._run(keys, cfg.overlapping, decide)

    def check(self, cfg: IPAMConfig, owner: Owner, expected: list[str]) -> Refusal | None:
        """Every range must still hold an address for the attachment, and so must each address in `expected`:
        else a Refusal saying which is gone."""
        ranges = self._ranges(cfg)
        if isinstance(ranges, Refusal):
            return ranges
        keys = _keys(ranges)
        # as the config's ADD holds them: through the node daemon, the reservations are the record (the
        # Kubernetes store's pools follow them a moment later)
        with self.store.transaction(keys, overlapping=cfg.overlapping) as txn:
            by_key = {key: _held_by(txn, key, owner) for key in keys}  # once per pool: ranges may share one
        held = {pr: by_key[pr.key] for pr in ranges}
        if cfg.slice_prefix and not all(held.values()):
            held = self._held_in_old_slices(cfg, owner, held)
        who = f"container {owner.container_id} interface {owner.ifname}"
        for pr, ips in held.items():
            if not ips:
                return Refusal(GONE, f"{who} holds no address in range {pr.rng.cidr}")
        lists = {id(ips): (pr.rng.version, ips) for pr, ips in held.items()}  # ranges sharing a pool share one
        addresses = {(version, ip) for version, ips in lists.values() for ip in ips}
        missing = [address for address in expected if parse_request(address) not in addresses]
        return Refusal(GONE, f"{who} no longer holds {', '.join(missing)}") if missing else None

    def _held_in_old_slices(
        self, cfg: IPAMConfig, owner: Owner, held: dict[PoolRange, list[int]]
    ) -> dict[PoolRange, list[int]]:
        """After a re-slice the attachment's address may be in another pool of the network (its node's
        old slice): an address there inside the range counts as held."""
        others = self.store.pools_holding(cfg.network_name, owner.container_id, owner.ifname)
        with self.store.transaction(others, overlapping=False) as txn:
            found = [(key, ip) for key in others for ip, who in txn.snapshot.pools[key].allocations.items()
                     if who.held_by(owner)]  # fmt: skip
        return {
            pr: ips or sorted(ip for key, ip in found if pr.rng.contains(key.version, ip)) for pr, ips in held.items()
        }

    def gc(self, cfg: IPAMConfig, valid: set[tuple[str, str]], *, node: str | None = None) -> int:
        """Release every allocation in the network's pools (the configured ones, and those of ranges dropped
        from the config since, as far as the store can list them: `pools_of`) made under this network config's
        name whose attachment is not in `valid` (the runtime's list for this network config only) and, with
        `node`, that records that node (a store every node shares: the list is of one host's attachments). A
        config without a name can prove no allocation its own: nothing is released. Another network_name's
        pools are never read: their entries are not this config's to judge, whatever name they record."""
        if not cfg.netconf_name:
            return 0
        keys = _keys(self._pools(cfg))
        keys += [key for key in self.store.pools_of(cfg.network_name) if key.network == cfg.network_name
                 and key not in keys]  # fmt: skip

        def decide(txn: Transaction, attempt: int) -> tuple[ChangeSet, int]:
            changes = release_all_but(keys=keys, snapshot=txn.snapshot, netconf=cfg.netconf_name, keep=valid,
                                      node=node, overlapping=cfg.overlapping, retain=_retainer(cfg))  # fmt: skip
            return changes, len(changes.changes)

        return self._run(keys, cfg.overlapping, decide)

    def status(self, cfg: IPAMConfig) -> Refusal | None:
        """Whether an ADD could be served now: the store takes writes (else TryAgainLater) and every range has
        a free address (found by running the allocator on a probe attachment that no fixed reservation names,
        committing nothing)."""
        ranges = self._ranges(cfg)
        if isinstance(ranges, Refusal):
            return ranges
        self.store.check_ready()
        with self.store.transaction(_keys(ranges), overlapping=cfg.overlapping) as txn:
            return probe(cfg, ranges, txn.snapshot)

    # -- the operator's tools (kubectl whereabouts): guarded writes of single entries, decided on a fresh read --

    def release_entry(self, key: PoolKey, ip: int, holder: Owner) -> bool:
        """Release `ip` of pool `key`, and its network-wide reservation, while `holder` (held or retained, as the
        operator saw it) still has it there; False when it changed meanwhile (released, or taken over)."""
        return self._one(key, ip, lambda current, reserved: (None, holder) if current == holder else None)

    def restore_reservation(self, key: PoolKey, ip: int, holder: Owner) -> bool:
        """Write the missing network-wide reservation of `holder`'s entry at `ip` (rewriting the entry as it is);
        False when the entry changed meanwhile or the address is reserved by now."""

        def plan(current: Owner | None, reserved: Owner | None) -> tuple[Owner | None, Owner | None] | None:
            return (holder, holder) if current == holder and reserved is None else None

        return self._one(key, ip, plan)

    def release_reservation(self, key: PoolKey, ip: int, holder: Owner) -> bool:
        """Drop `holder`'s reservation of `ip`, which no entry of pool `key` stands behind (stores that commit a
        hold's entry and reservation at once: local, etcd); False when an entry holds the address by now."""

        def plan(current: Owner | None, reserved: Owner | None) -> tuple[Owner | None, Owner | None] | None:
            return (None, holder) if current is None and holder.same_holder(reserved) else None

        return self._one(key, ip, plan)

    def _one(self, key: PoolKey, ip: int, plan: Callable[[Owner | None, Owner | None], Plan | None]) -> bool:
        """One guarded change of one address: `plan(current holder, reservation)` says (owner, previous) or
        None (nothing to do: it changed meanwhile)."""

        def decide(txn: Transaction, attempt: int) -> tuple[ChangeSet, bool]:
            pool = txn.snapshot.pools[key]
            planned = plan(pool.allocations.get(ip), txn.snapshot.reservations.get((key.network, key.version, ip)))
            if planned is None:
                return ChangeSet((), (), True), False
            change = Change(key, key.version, ip, planned[0], previous=planned[1])
            return ChangeSet((change,), ((key, pool.version),), True), True

        return self._run([key], True, decide)

    def import_entries(
        self, key: PoolKey, entries: Mapping[int, Owner], *, overlapping: bool
    ) -> tuple[list[int], list[tuple[int, Owner]]]:
        """Write entries moved from another datastore (or host-local) into pool `key`, each only where the address
        is free or already this attachment's: (the addresses written or found in place, those held by another
        with that holder). The network's reservations are read whatever `overlapping` (which says only whether
        the entries get one): an address reserved for another (a fixed or sticky one, another range's) is held."""

        def decide(txn: Transaction, attempt: int) -> tuple[ChangeSet, tuple[list[int], list[tuple[int, Owner]]]]:
            pool, placed, refused, changes = txn.snapshot.pools[key], [], [], []
            for ip, owner in sorted(entries.items()):
                current = pool.allocations.get(ip)
                reserved = txn.snapshot.reservations.get((key.network, key.version, ip))
                holder = current or reserved
                if holder is not None and not holder.same_attachment(owner):
                    refused.append((ip, holder))
                    continue
                placed.append(ip)
                if current is None:
                    changes.append(Change(key, key.version, ip, owner))
            return ChangeSet(tuple(changes), ((key, pool.version),), overlapping), (placed, refused)

        return self._run([key], True, decide)

    def _run(
        self, keys: list[PoolKey], overlapping: bool, decide: Callable[[Transaction, int], tuple[ChangeSet, T]]
    ) -> T:
        started = time.monotonic()
        delay, quick = self.retry.base_delay, 0
        for attempt in range(self.retry.attempts):
            with self.store.transaction(keys, overlapping=overlapping) as txn:
                changes, outcome = decide(txn, attempt)
                if not changes:
                    return outcome
                deadline.remaining(self.retry.deadline)  # past the call's deadline: commit nothing, say so
                if txn.commit(changes):
                    return outcome
                informed = txn.informed
            if informed and quick < self.retry.quick_retries:
                quick += 1  # what beat it is known: decide again at once (bounded, should a copy keep lying)
                continue
            if time.monotonic() - started + delay > self.retry.deadline:
                break
            time.sleep(_random().uniform(0, deadline.remaining(delay)))  # full jitter: racing callers spread out
            delay = min(delay * 2, self.retry.max_delay)
        raise TryAgainLater(
            f"gave up after {time.monotonic() - started:.1f}s: pools {', '.join(k.name for k in keys)} kept changing"
        )


def probe(cfg: IPAMConfig, ranges: tuple[PoolRange, ...], snapshot: Snapshot) -> Refusal | None:
    """STATUS's question to the allocator: would an ADD of an attachment that no fixed reservation names get an
    address in every range of `snapshot`? (It decides for a probe attachment and commits nothing.)"""
    decision = allocate(ranges=ranges, snapshot=snapshot, owner=Owner("whereabouts-status-probe", "probe"),
                        overlapping=cfg.overlapping, fixed=cfg.reservations)  # fmt: skip
    return decision if isinstance(decision, Refusal) else None


def empty_snapshot(ranges: tuple[PoolRange, ...]) -> Snapshot:
    """What a store that holds nothing yet reads for `ranges`."""
    return Snapshot({key: PoolState(key) for key in _keys(ranges)})


def _random() -> ModuleType:
    """`random`, imported on first use: only a call that lost a race needs it, and every call pays the import."""
    import random

    return random


def _retainer(cfg: IPAMConfig) -> Callable[[Owner, Owner], Owner | None] | None:
    """With `sticky` on: what a DEL (or a GC) leaves of an entry it would release: the entry retained for its
    sticky key (as recorded, else the releasing call's), until the retention passes (a claim's: until the
    IPAMClaim is deleted). An entry with no key, or a fixed reservation (the config keeps its address from
    everyone else anyway), is released."""
    if not cfg.sticky:
        return None
    now = int(time.time())

    def retain(recorded: Owner, releasing: Owner) -> Owner | None:
        key = recorded.sticky or releasing.sticky
        if not key or recorded.fixed:
            return None
        expires = 0 if key.startswith("claim:") else now + cfg.sticky_retention
        return recorded.but(sticky=key, retained=now, expires=expires)

    return retain


def _after_freeing(freed: list[Change], changes: list[Change]) -> tuple[Change, ...]:
    """The lapsed entries' releases, then the decision's changes; where the decision takes a freed address,
    one change replaces the lapsed holder instead (a store must not see a release and a hold of one address)."""
    taken = {(change.key, change.ip): i for i, change in enumerate(changes)}
    kept = []
    for change in freed:
        i = taken.get((change.key, change.ip))
        if i is None:
            kept.append(change)
        else:
            held = changes[i]
            changes[i] = Change(held.key, held.version, held.ip, held.owner, previous=change.previous)
    return (*kept, *changes)


def _place(change: Change, overlapping: bool) -> tuple[object, ...]:
    """The record a change writes: with overlapping ranges also the network-wide reservation of its address,
    which another pool's change of that address writes too."""
    if overlapping:
        return (change.key.network, change.version, change.ip)
    return (change.key, change.ip)


def _working_copy(snapshot: Snapshot) -> Snapshot:
    pools = {key: PoolState(key, pool.version, dict(pool.allocations)) for key, pool in snapshot.pools.items()}
    return Snapshot(pools, dict(snapshot.reservations), snapshot.index and snapshot.index.fork())


def _apply(snapshot: Snapshot, changes: ChangeSet) -> None:
    for change in changes.changes:
        if snapshot.index is not None:
            snapshot.index.apply(change)
        allocations = snapshot.pools[change.key].allocations
        if change.owner is None:
            allocations.pop(change.ip, None)
            if changes.overlapping:
                snapshot.reservations.pop((change.key.network, change.version, change.ip), None)
            continue
        allocations[change.ip] = change.owner
        if changes.overlapping:
            snapshot.reservations[(change.key.network, change.version, change.ip)] = change.owner


def _held_by(txn: Transaction, key: PoolKey, owner: Owner) -> list[int]:
    allocations = txn.snapshot.pools[key].allocations
    return sorted(ip for ip, who in allocations.items() if who.held_by(owner))


def _keys(ranges: tuple[PoolRange, ...]) -> list[PoolKey]:
    return list(dict.fromkeys(pr.key for pr in ranges))
