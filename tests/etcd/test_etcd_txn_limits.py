"""The etcd store within etcd's limit of 128 operations per transaction (its --max-txn-ops default, which the
test etcd keeps): commits that would need more were refused on every try, so the same GC, group DEL, group
ADD, lapsed retentions or import failed for ever. And two ADDs of one attachment racing: one address, not two.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from etcd_server import EtcdServer
from whereabouts.config import IPAMConfig, parse_ipam
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import parse_ip, sortable_key
from whereabouts.service import IPAMService
from whereabouts.store.etcd import EtcdStore, EtcdTransaction, open_etcd
from whereabouts.store.etcd_gateway import EtcdGateway


def config(server: EtcdServer, prefix: str, *ranges: str, **extra: object) -> IPAMConfig:
    ipam = {"type": "whereabouts", "ipRanges": [{"range": r} for r in ranges], "etcd_host": server.url,
            "etcd_prefix": prefix, **extra}  # fmt: skip
    return parse_ipam(ipam, netconf_name="net1")


def store(cfg: IPAMConfig) -> EtcdStore:
    opened = open_etcd(cfg.store)  # type: ignore[arg-type]
    assert isinstance(opened, EtcdStore)
    return opened


def entries(server: EtcdServer, prefix: str, kind: str = "pools") -> dict[str, dict]:
    return {k: v for k, v in server.dump(prefix + "/").items() if f"/{kind}/" in k}


def test_the_test_etcd_keeps_the_default_limit(etcd: EtcdServer) -> None:
    """What the tests below rest on: 129 operations in one transaction are refused."""
    ops = [{"request_put": {"key": base64.b64encode(f"/limit/{i}".encode()).decode(), "value": ""}} for i in range(129)]
    try:
        etcd.call("kv/txn", {"success": ops})
    except OSError as exc:  # urllib's HTTPError
        assert "too many operations" in exc.read().decode()  # type: ignore[attr-defined]
    else:
        raise AssertionError("etcd took 129 operations in one transaction: the tests below prove nothing")


def test_gc_of_200_attachments_that_are_gone(etcd: EtcdServer, etcd_prefix: str) -> None:
    """200 releases: 400 keys and their attachment keys, far past one transaction. Releases commit in parts."""
    cfg = config(etcd, etcd_prefix, "10.73.0.0/23")
    service = IPAMService(store(cfg))
    for start in range(0, 200, 40):
        outcomes = service.add_batch(cfg, [(Owner(f"gone-{i}", "net1"), ()) for i in range(start, start + 40)])
        assert all(isinstance(o, list) for o in outcomes)
    service.add(cfg, Owner("alive", "net1"))
    assert len(entries(etcd, etcd_prefix)) == 201
    assert service.gc(cfg, {("alive", "net1")}) == 200
    assert [v["id"] for v in entries(etcd, etcd_prefix).values()] == ["alive"]
    assert [v["id"] for v in entries(etcd, etcd_prefix, "reservations").values()] == ["alive"]
    assert [v["id"] for v in entries(etcd, etcd_prefix, "attachments").values()] == ["alive"]


def test_a_64_caller_dual_stack_round_and_its_group_del(etcd: EtcdServer, etcd_prefix: str) -> None:
    """The node daemon's group commit takes up to 64 callers a round: dual-stack, 128 addresses with their
    reservations and attachment keys. The round goes as several commits, each within the limit; every caller
    gets its two addresses, none twice. Then the group DEL of all 64 (256 keys to delete)."""
    cfg = config(etcd, etcd_prefix, "10.74.0.0/24", "fd00:74::/120")
    service = IPAMService(store(cfg))
    owners = [Owner(f"ctr-{i}", "net1", f"ns/pod-{i}") for i in range(64)]
    outcomes = service.add_batch(cfg, [(owner, ()) for owner in owners])
    addresses = [[a.address for a in outcome] for outcome in outcomes]  # type: ignore[union-attr]
    assert all(len(pair) == 2 for pair in addresses), addresses
    assert len({a for pair in addresses for a in pair}) == 128
    held = entries(etcd, etcd_prefix)
    assert sorted((v["id"], v["address"]) for v in held.values()) == sorted(
        (o.container_id, a.split("/")[0]) for o, pair in zip(owners, addresses, strict=True) for a in pair
    )
    assert len(entries(etcd, etcd_prefix, "attachments")) == 64
    assert service.delete_batch(cfg, owners) == [None] * 64
    assert etcd.dump(etcd_prefix + "/") == {}


def put_lapsed(server: EtcdServer, prefix: str, count: int) -> None:
    """`count` MAC-sticky entries retained by their DEL, their retention passed, with their reservations, written
    as the store writes them (nothing of the plugin under test involved)."""
    past = int(time.time()) - 3600
    ops = []
    for i in range(count):
        address = str(ipaddress.ip_address("10.75.0.1") + i)
        version, ip = parse_ip(address)
        value = {"address": address, "id": f"old-{i}", "ifname": "net1", "podref": "", "netconf": "net1",
                 "sticky": f"mac:02:00:00:00:00:{i:02x}", "retained": past - 60, "expires": past}  # fmt: skip
        ik = sortable_key(version, ip)
        reservation = {k: v for k, v in value.items() if k != "netconf"}
        for key, stored in (
            (f"{prefix}/-/pools/-/10.75.0.0-22/{ik}", value),
            (f"{prefix}/-/reservations/{ik}", reservation),
        ):
            encoded = (base64.b64encode(key.encode()).decode(), base64.b64encode(json.dumps(stored).encode()).decode())
            ops.append({"request_put": {"key": encoded[0], "value": encoded[1]}})
    for start in range(0, len(ops), 100):
        server.call("kv/txn", {"success": ops[start : start + 100]})


def test_an_add_frees_a_few_lapsed_retentions_at_a_time(etcd: EtcdServer, etcd_prefix: str) -> None:
    """200 retentions past their time: an ADD frees them on its way, at most half a commit's worth each time,
    the next ADDs the rest (freeing all 200 at once made every ADD of the range fail)."""
    put_lapsed(etcd, etcd_prefix, 200)
    cfg = config(etcd, etcd_prefix, "10.75.0.0/22")
    service = IPAMService(store(cfg))
    first = service.add(cfg, Owner("new-0", "net1"))
    assert [a.address for a in first] == ["10.75.0.1/22"]  # type: ignore[union-attr]
    left = len(entries(etcd, etcd_prefix)) - 1
    assert 200 - EtcdStore.max_changes <= left < 200
    adds = -(-200 // (EtcdStore.max_changes // 2))  # enough ADDs to free all 200, half a commit's worth each
    for i in range(1, adds):
        service.add(cfg, Owner(f"new-{i}", "net1"))
    held = entries(etcd, etcd_prefix)
    assert sorted(v["id"] for v in held.values()) == sorted(f"new-{i}" for i in range(adds))
    assert len(entries(etcd, etcd_prefix, "reservations")) == adds


class Pausing(EtcdStore):
    """An etcd store that runs the next of `between` after its next transaction's read, before its decision is
    committed: another caller's writes land exactly there."""

    def __init__(self, gateway: EtcdGateway, *, prefix: str) -> None:
        super().__init__(gateway, prefix=prefix)
        self.between: list[Callable[[], None]] = []

    @contextmanager
    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> Iterator[EtcdTransaction]:
        with super().transaction(keys, overlapping=overlapping) as txn:
            if self.between:
                self.between.pop(0)()
            yield txn


def test_two_adds_of_one_attachment_that_pick_different_addresses_hold_one(etcd: EtcdServer, etcd_prefix: str) -> None:
    """The runtime retries an ADD while the first is in flight. The first read the range while .1 was held
    and picked .2; meanwhile .1 was released and the retry took it. Each commit compared only the keys it
    wrote: both succeeded, and the attachment held two addresses. Now each compares the attachment's key:
    the first loses, reads again, and finds the retry's address (ADD is idempotent)."""
    cfg = config(etcd, etcd_prefix, "10.77.0.0/24")
    plain = IPAMService(store(cfg))
    plain.add(cfg, Owner("other", "net1"))  # holds .1
    pausing = Pausing(store(cfg).gateway, prefix=etcd_prefix)
    retried: list[object] = []

    def meanwhile() -> None:
        plain.delete(cfg, Owner("other", "net1"))
        retried.append(IPAMService(store(cfg)).add(cfg, Owner("twice", "net1")))

    pausing.between = [meanwhile]
    first = IPAMService(pausing).add(cfg, Owner("twice", "net1"))
    assert [[a.address for a in r] for r in retried] == [["10.77.0.1/24"]]  # type: ignore[attr-defined]
    assert [a.address for a in first] == ["10.77.0.1/24"]  # type: ignore[union-attr]
    assert [(v["id"], v["address"]) for v in entries(etcd, etcd_prefix).values()] == [("twice", "10.77.0.1")]


def test_adds_of_one_attachment_racing_with_churn_hold_one_address(etcd: EtcdServer, etcd_prefix: str) -> None:
    """Threads ADD the same attachment at once while other attachments come and go around the lowest
    addresses: every ADD of it answers the same address, and it holds that one alone."""
    cfg = config(etcd, etcd_prefix, "10.78.0.0/24")
    stop = threading.Event()

    def churn(n: int) -> None:
        service = IPAMService(store(cfg))
        while not stop.is_set():
            service.add(cfg, Owner(f"churn-{n}", "net1"))
            service.delete(cfg, Owner(f"churn-{n}", "net1"))

    churners = [threading.Thread(target=churn, args=(n,)) for n in range(3)]
    for thread in churners:
        thread.start()
    try:
        for round_ in range(8):
            owner = Owner(f"dup-{round_}", "net1")
            answers: list[list[str]] = []
            start = threading.Barrier(6)

            def add(owner: Owner = owner, answers: list[list[str]] = answers, start: threading.Barrier = start) -> None:
                service = IPAMService(store(cfg))
                start.wait()
                answers.append([a.address for a in service.add(cfg, owner)])  # type: ignore[union-attr]

            threads = [threading.Thread(target=add) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(answers) == 6 and len({tuple(a) for a in answers}) == 1, answers
            held = [v["address"] for v in entries(etcd, etcd_prefix).values() if v["id"] == owner.container_id]
            assert [f"{a}/24" for a in held] == answers[0]
    finally:
        stop.set()
        for thread in churners:
            thread.join()


def test_a_round_of_pods_recreated_under_new_container_ids_fits_a_transaction(
    etcd: EtcdServer, etcd_prefix: str
) -> None:
    """Each ADD of a StatefulSet pod recreated before its old sandbox's DEL takes over its pod's address: the
    entry, the reservation and the new attachment's key written, the old attachment's key deleted, four keys.
    42 of them in one round were 168 operations (etcd: "too many operations in txn request", code 11 for the
    whole round on every try, e.g. after a node reboot)."""
    cfg = config(etcd, etcd_prefix, "10.79.0.0/24")
    service = IPAMService(store(cfg))
    olds = [Owner(f"old-{i}", "net1", f"ns/sts-{i}") for i in range(42)]
    first = service.add_batch(cfg, [(o, ()) for o in olds])
    assert all(isinstance(o, list) for o in first), first
    again = service.add_batch(cfg, [(Owner(f"new-{i}", "net1", f"ns/sts-{i}"), ()) for i in range(42)])
    assert again == first  # each pod kept its address
    held = {value["id"] for value in entries(etcd, etcd_prefix).values()}
    assert held == {f"new-{i}" for i in range(42)}


def put_raw(server: EtcdServer, items: dict[str, dict]) -> None:
    ops = [{"request_put": {"key": base64.b64encode(k.encode()).decode(),
                            "value": base64.b64encode(json.dumps(v).encode()).decode()}}
           for k, v in items.items()]  # fmt: skip
    server.call("kv/txn", {"success": ops})


def test_a_lapsed_retention_freed_in_one_range_and_taken_in_an_overlapping_one(
    etcd: EtcdServer, etcd_prefix: str
) -> None:
    """ipRanges 10.76.0.0/25 and 10.76.0.0/24 (one network, overlapping): a MAC-sticky address retained in the
    /24 whose retention lapsed is freed by the next ADD, which takes it in the /25, in one commit: the
    release's reservation delete and the hold's put of one key (before: etcd refused the transaction, code 11;
    then the hold refused to write over the lapsed holder's reservation, code 102; for every ADD, for good)."""
    ik = sortable_key(*parse_ip("10.76.0.1"))
    past = int(time.time()) - 3600
    value = {"address": "10.76.0.1", "id": "old", "ifname": "net1", "podref": "", "netconf": "net1",
             "sticky": "mac:02:00:00:00:00:01", "retained": past - 60, "expires": past}  # fmt: skip
    put_raw(etcd, {
        f"{etcd_prefix}/-/pools/-/10.76.0.0-24/{ik}": value,
        f"{etcd_prefix}/-/reservations/{ik}": {k: v for k, v in value.items() if k != "netconf"},
    })  # fmt: skip
    cfg = config(etcd, etcd_prefix, "10.76.0.0/25", "10.76.0.0/24")
    service = IPAMService(store(cfg))
    got = service.add(cfg, Owner("new", "net1", "ns/new"))
    assert isinstance(got, list) and [a.address for a in got] == ["10.76.0.1/25", "10.76.0.2/24"], got
    pools = entries(etcd, etcd_prefix)
    assert [v["id"] for v in pools.values()] == ["new", "new"]  # the lapsed entry in the /24 is gone
    reservations = entries(etcd, etcd_prefix, "reservations")
    assert [v["id"] for v in reservations.values()] == ["new", "new"]
