"""The IPAM service loop: snapshot -> decide -> compare-and-swap -> bounded, jittered retry."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from whereabouts.config import IPAMConfig, parse_ipam
from whereabouts.errors import TryAgainLater
from whereabouts.model import EXHAUSTED, GONE, ChangeSet, Owner, PoolKey, Refusal
from whereabouts.service import IPAMService, RetryPolicy
from whereabouts.store.memory import MemoryStore, MemoryTransaction

A = Owner("ctr-a", "eth0", "ns/a")


@dataclass
class RacingStore(MemoryStore):
    """A memory store whose first `lose` commits find the pool changed underneath them (as etcd or the
    Kubernetes API would report a stale revision)."""

    lose: int = 0
    attempts: int = 0

    @contextmanager
    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> Iterator[MemoryTransaction]:
        with super().transaction(keys, overlapping=overlapping) as txn:
            yield _Racing(self, txn.snapshot)


class _Racing(MemoryTransaction):
    def commit(self, changes: ChangeSet) -> bool:
        store = self.store
        assert isinstance(store, RacingStore)
        store.attempts += 1
        if store.attempts <= store.lose:
            return False
        return super().commit(changes)


def cfg(**extra: object):
    return parse_ipam({"type": "whereabouts", "range": "10.0.0.0/29", **extra})


def test_add_retries_lost_races_then_commits() -> None:
    store = RacingStore(lose=3)
    (assigned,) = IPAMService(store, retry=RetryPolicy(base_delay=0.001)).add(cfg(), A)
    # after lost races the caller spreads out among the lowest free addresses (here: the whole /29)
    assert assigned.address in {f"10.0.0.{n}/29" for n in range(1, 7)}
    assert store.attempts == 4 and store.commits == 1


def test_first_attempt_takes_the_lowest() -> None:
    store = RacingStore(lose=0)
    (assigned,) = IPAMService(store).add(cfg(), A)
    assert assigned.address == "10.0.0.1/29"


def test_retries_are_bounded_then_try_again_later() -> None:
    store = RacingStore(lose=10**6)
    policy = RetryPolicy(attempts=5, base_delay=0.001)
    with pytest.raises(TryAgainLater, match="kept changing"):
        IPAMService(store, retry=policy).add(cfg(), A)
    assert store.attempts == 5 and store.commits == 0
    assert store.pools == {}


def test_retries_stop_at_the_deadline() -> None:
    store = RacingStore(lose=10**6)
    policy = RetryPolicy(attempts=10**6, deadline=0.2, base_delay=0.01, max_delay=0.05)
    with pytest.raises(TryAgainLater):
        IPAMService(store, retry=policy).add(cfg(), A)
    assert store.attempts < 100


def test_idempotent_add_writes_nothing() -> None:
    store = MemoryStore()
    service = IPAMService(store)
    first = service.add(cfg(), A)
    again = service.add(cfg(), A)
    assert [a.address for a in again] == [a.address for a in first]
    assert store.commits == 1


def test_delete_releases_in_pools_no_longer_configured() -> None:
    store = MemoryStore()
    service = IPAMService(store)
    service.add(cfg(), A)
    service.delete(parse_ipam({"type": "whereabouts", "range": "10.9.0.0/24"}), A)
    assert all(not pool.allocations for pool in store.pools.values())
    assert store.reservations == {}


def test_delete_of_unknown_attachment_writes_nothing() -> None:
    store = MemoryStore()
    IPAMService(store).delete(cfg(), A)
    assert store.commits == 0


def named_cfg(name: str):
    return parse_ipam({"type": "whereabouts", "range": "10.0.0.0/29"}, name)


def test_add_records_the_network_config_name_with_the_pool_entry_only() -> None:
    store = MemoryStore()
    (assigned,) = IPAMService(store).add(named_cfg("netA"), A)
    (pool,) = store.pools.values()
    assert pool.allocations == {int(ipaddress.ip_interface(assigned.address).ip): A.named("netA")}
    assert list(store.reservations.values()) == [A]  # a reservation records no name


def test_gc_keeps_valid_attachments_and_other_network_configs() -> None:
    store = MemoryStore()
    service = IPAMService(store)
    for n in range(4):
        service.add(named_cfg("netA"), Owner(f"ctr-{n}", "eth0"))
    service.add(named_cfg("netB"), Owner("ctr-b", "eth0"))
    service.add(cfg(), Owner("ctr-unnamed", "eth0"))  # a config without a name: its entry proves nothing
    released = service.gc(named_cfg("netA"), {("ctr-1", "eth0"), ("ctr-3", "eth0")})
    assert released == 2
    (pool,) = store.pools.values()
    assert sorted(o.container_id for o in pool.allocations.values()) == ["ctr-1", "ctr-3", "ctr-b", "ctr-unnamed"]
    assert len(store.reservations) == 4  # the released addresses' reservations went with them
    assert service.gc(cfg(), set()) == 0  # GC of a config without a name releases nothing


def test_status_reports_exhaustion() -> None:
    store = MemoryStore()
    service = IPAMService(store)
    small = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/30"})
    assert service.status(small) is None
    service.add(small, Owner("x", "eth0"))
    service.add(small, Owner("y", "eth0"))
    unable = service.status(small)
    assert unable is not None and unable.kind == EXHAUSTED and "range 10.0.0.0/30" in unable.msg
    assert store.commits == 2  # STATUS never writes


def test_status_counts_fixed_reservations_as_taken() -> None:
    """An ADD of a pod no reservation names cannot take a fixed address: with every free one reserved for
    another pod, STATUS says ADD cannot be served."""
    store = MemoryStore()
    service = IPAMService(store)
    small = parse_ipam(
        {
            "type": "whereabouts",
            "range": "10.0.0.0/29",
            "reservations": [{"address": f"10.0.0.{n}", "pod": f"ns/db-{n}"} for n in (2, 3, 4, 5, 6)],
        }
    )
    assert service.status(small) is None
    service.add(small, Owner("x", "eth0"))
    unable = service.status(small)
    assert unable is not None and unable.kind == EXHAUSTED and "range 10.0.0.0/29" in unable.msg
    assert isinstance(service.add(small, Owner("y", "eth0")), Refusal)  # as STATUS said


def test_check_detects_lost_address() -> None:
    store = MemoryStore()
    service = IPAMService(store)
    (assigned,) = service.add(cfg(), A)
    assert service.check(cfg(), A, [assigned.address]) is None
    (pool,) = store.pools.values()
    pool.allocations.pop(int(ipaddress.ip_interface(assigned.address).ip))
    gone = service.check(cfg(), A, [assigned.address])
    assert gone is not None and gone.kind == GONE and "holds no address in range 10.0.0.0/29" in gone.msg


def batch_cfg(cidr: str = "10.7.0.0/29") -> IPAMConfig:
    return parse_ipam({"type": "whereabouts", "range": cidr})


def test_add_batch_gives_each_attachment_its_own_lowest_address_in_one_commit() -> None:
    store = RacingStore()
    owners = [Owner(f"ctr-{i}", "eth0", f"ns/p{i}") for i in range(4)]
    results = IPAMService(store).add_batch(batch_cfg(), [(o, ()) for o in owners])
    assert [[a.address for a in r] for r in results] == [["10.7.0.1/29"], ["10.7.0.2/29"], ["10.7.0.3/29"],
                                                         ["10.7.0.4/29"]]  # fmt: skip
    assert store.attempts == 1


def test_add_batch_one_exhausted_attachment_does_not_fail_the_others() -> None:
    store = RacingStore()
    owners = [Owner(f"ctr-{i}", "eth0") for i in range(8)]  # a /29 has 6 usable addresses
    results = IPAMService(store).add_batch(batch_cfg(), [(o, ()) for o in owners])
    assert [len(r) for r in results[:6] if isinstance(r, list)] == [1] * 6
    assert [r.kind for r in results[6:] if isinstance(r, Refusal)] == [EXHAUSTED, EXHAUSTED]
    held = {o.container_id for pool in store.pools.values() for o in pool.allocations.values()}
    assert held == {f"ctr-{i}" for i in range(6)}


def test_add_batch_is_idempotent_and_retries_as_a_whole() -> None:
    store = RacingStore(lose=1)  # the first commit loses its race: the whole batch is decided again
    service = IPAMService(store, retry=RetryPolicy(base_delay=0.001))
    first = service.add_batch(batch_cfg(), [(A, ()), (Owner("ctr-b", "eth0"), ())])
    again = service.add_batch(batch_cfg(), [(Owner("ctr-b", "eth0"), ()), (A, ()), (A, ())])
    assert [r[0].address for r in first] == ["10.7.0.1/29", "10.7.0.2/29"]
    assert [r[0].address for r in again] == ["10.7.0.2/29", "10.7.0.1/29", "10.7.0.1/29"]
    assert store.attempts == 2  # the second batch held everything already: nothing to commit


def test_delete_batch_releases_every_attachment_in_one_commit() -> None:
    store = RacingStore()
    service = IPAMService(store)
    owners = [Owner(f"ctr-{i}", "eth0") for i in range(4)]
    service.add_batch(batch_cfg(), [(o, ()) for o in owners])
    attempts = store.attempts
    assert service.delete_batch(batch_cfg(), [*owners[:3], Owner("never-added", "eth0")]) == [None] * 4
    assert store.attempts == attempts + 1
    held = {o.container_id for pool in store.pools.values() for o in pool.allocations.values()}
    assert held == {"ctr-3"}
