"""Sticky addresses below the CNI layer: the config keys, and the IPAM service's decisions on the memory store.

The same behaviours through the executable, on every datastore: tests/cni/test_cni_sticky.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from whereabouts import service as service_module
from whereabouts.config import IPAMConfig, parse_ipam
from whereabouts.errors import InvalidConfig
from whereabouts.model import EXHAUSTED, GONE, TAKEN, Owner, PoolKey, Refusal
from whereabouts.service import IPAMService
from whereabouts.sticky import DEFAULT_RETENTION, FixedReservation, call_key, call_mac, parse_duration
from whereabouts.store.memory import MemoryStore

KEY = PoolKey("", "10.0.0.0/28")
BASE = 0x0A000000  # 10.0.0.0


def cfg(datastore: str = "local", **ipam: Any) -> IPAMConfig:
    store = {"kubernetes": {"kubeconfig": "/nonexistent"}} if datastore == "kubernetes" else {}
    return parse_ipam({"type": "whereabouts", "range": "10.0.0.0/28", **store, **ipam}, "netA")


def pod(name: str, container: str = "", *, mode: str = "pod") -> Owner:
    """An attachment of pod ns/<name> whose address sticks to its pod (or, mode 'mac', to a MAC of its name)."""
    key = f"pod:ns/{name}/eth0" if mode == "pod" else f"mac:{name}"
    return Owner(container or f"ctr-{name}", "eth0", f"ns/{name}", sticky=key)


def address(outcome: object) -> str:
    assert not isinstance(outcome, Refusal), outcome
    assert isinstance(outcome, list)
    (assigned,) = outcome
    return str(assigned.address)


def entries(store: MemoryStore) -> dict[int, Owner]:
    """Host number -> entry."""
    return {ip - BASE: who for ip, who in store.pools[KEY].allocations.items()}


class Clock:
    """The service's `time` module, with a wall clock the test sets (the rest is the real module)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_000_000.0)
    monkeypatch.setattr(service_module, "time", fake)
    return fake


# -- config ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ipam", "mode"),
    [({}, ""), ({"sticky": ""}, ""), ({"sticky": None}, ""), ({"sticky": "pod"}, "pod"), ({"sticky": "mac"}, "mac"),
     ({"allowPersistentIPs": False, "sticky": "mac"}, "mac")],
)  # fmt: skip
def test_sticky_modes(ipam: dict[str, Any], mode: str) -> None:
    assert cfg(**ipam).sticky == mode


@pytest.mark.parametrize(
    ("ipam", "message"),
    [({"sticky": "bogus"}, "invalid sticky 'bogus': expected one of pod, mac, claim"),
     ({"sticky": True}, "invalid sticky True: expected one of pod, mac, claim"),
     # no other JSON value means "off" (each of these once counted as on)
     ({"sticky": False}, "invalid sticky False: expected one of pod, mac, claim"),
     ({"sticky": 0}, "invalid sticky 0: expected one of pod, mac, claim"),
     ({"sticky": {}}, "invalid sticky {}: expected one of pod, mac, claim"),
     ({"sticky": []}, "invalid sticky []: expected one of pod, mac, claim"),
     ({"sticky": "POD"}, "invalid sticky 'POD': expected one of pod, mac, claim"),
     ({"allowPersistentIPs": "yes"}, "invalid allowPersistentIPs 'yes': expected true or false"),
     ({"sticky": "mac", "allowPersistentIPs": True},
      "invalid sticky 'mac': allowPersistentIPs true means sticky claim")],
)  # fmt: skip
def test_bad_sticky_modes_name_the_key(ipam: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig) as raised:
        cfg("kubernetes", **ipam)
    assert raised.value.msg == message


def test_claim_needs_kubernetes_and_allow_persistent_ips_means_claim() -> None:
    assert cfg("kubernetes", sticky="claim").sticky == "claim"
    assert cfg("kubernetes", allowPersistentIPs=True).sticky == "claim"
    top = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/28", "kubernetes": {"kubeconfig": "/x"}}, "n", True)
    assert top.sticky == "claim"  # the network config's own allowPersistentIPs
    with pytest.raises(InvalidConfig, match=r"invalid sticky 'claim'.*kubernetes datastore, not local"):
        cfg(sticky="claim")
    with pytest.raises(InvalidConfig, match=r"invalid sticky 'claim'.*kubernetes datastore, not etcd"):
        cfg(sticky="claim", etcd_host="127.0.0.1:2379")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, DEFAULT_RETENTION), ("", DEFAULT_RETENTION), ("72h", 72 * 3600), ("1h30m", 5400), ("90s", 90),
     ("1.5h", 5400), ("2m30s", 150), (600, 600)],
)  # fmt: skip
def test_sticky_retention_takes_go_durations(value: object, seconds: int) -> None:
    ipam = {} if value is None else {"sticky_retention": value}
    assert cfg(sticky="pod", **ipam).sticky_retention == seconds


@pytest.mark.parametrize("value", ["-1h", "abc", "0s", "1h30", "h", "1..5h", "1d", True, [], -5, 0])
def test_bad_sticky_retention_names_the_key(value: object) -> None:
    with pytest.raises(InvalidConfig, match="invalid sticky_retention"):
        cfg(sticky="pod", sticky_retention=value)


def test_parse_duration_refuses_what_go_would_not_read_as_a_duration() -> None:
    assert parse_duration("1h1m1s") == 3661
    assert parse_duration("1" * 40 + "s") is None  # absurdly long
    # capped as a number is: `expires` (now + the retention) must fit the IPPool's int64 field
    assert parse_duration("277777777h") == 277777777 * 3600 and parse_duration(999_999_999_999) == 999_999_999_999
    assert parse_duration("277777778h") is None and parse_duration("99999999999999999h") is None
    assert parse_duration(10**12) is None
    assert parse_duration(float("nan")) is None


def test_reservations_parse_to_normalised_keys() -> None:
    parsed = cfg(reservations=[{"address": "10.0.0.5", "pod": "ns/db-0"},
                               {"address": "10.0.0.6", "mac": "AA-BB-CC-DD-EE-FF"}]).reservations  # fmt: skip
    assert parsed == (
        FixedReservation(4, BASE + 5, "pod:ns/db-0"),
        FixedReservation(4, BASE + 6, "mac:aa:bb:cc:dd:ee:ff"),
    )
    assert parsed[0].address == "10.0.0.5"


@pytest.mark.parametrize(
    ("reservations", "message"),
    [("10.0.0.5", "invalid reservations '10.0.0.5'"),
     ([["10.0.0.5", "ns/a"]], "invalid reservations entry"),
     ([{"address": 5, "pod": "ns/a"}], "invalid reservations entry"),
     ([{"address": "10.0.0.5", "pod": "ns/a", "mac": "02:00:00:00:00:01"}], "invalid reservations entry"),
     ([{"address": "not-an-ip", "pod": "ns/a"}], "invalid reservations address 'not-an-ip': expected an IP"),
     ([{"address": "10.0.0.0", "pod": "ns/a"}], "not a usable address"),  # the network address
     ([{"address": "10.0.0.15", "pod": "ns/a"}], "not a usable address"),  # the broadcast address
     ([{"address": "10.0.0.5", "pod": "a"}], "invalid reservations pod 'a'"),
     ([{"address": "fd00::5", "pod": "ns/a"}], "not a usable address"),
     ([{"address": "10.0.0.5", "pod": "ns/"}], "invalid reservations pod 'ns/'"),
     ([{"address": "10.0.0.5", "pod": "NS/a"}], "invalid reservations pod 'NS/a'"),
     ([{"address": "10.0.0.5", "mac": "zz:00:00:00:00:01"}], "invalid reservations mac"),
     ([{"address": "10.0.0.5", "mac": "02:00:00:00:00:01"}, {"address": "10.0.0.6", "mac": "02-00-00-00-00-01"}],
      "listed twice")],
)  # fmt: skip
def test_bad_reservations_name_the_key(reservations: object, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message.replace("[", r"\[").replace("(", r"\(")):
        cfg(reservations=reservations)


def test_call_mac_prefers_runtime_config_and_normalises() -> None:
    assert (
        call_mac({"runtimeConfig": {"mac": "02:AA:00:00:00:01"}}, {"MAC": "02:bb:00:00:00:01"}) == "02:aa:00:00:00:01"
    )
    assert call_mac({}, {"MAC": "02aa.0000.0001"}) == "02:aa:00:00:00:01"
    assert call_mac({"runtimeConfig": {}}, {}) == ""
    with pytest.raises(InvalidConfig, match="invalid CNI_ARGS MAC 'nope'"):
        call_mac({}, {"MAC": "nope"})
    with pytest.raises(InvalidConfig, match=r"invalid runtimeConfig\.mac 5"):
        call_mac({"runtimeConfig": {"mac": 5}}, {})


def test_call_key_needs_what_its_mode_sticks_to() -> None:
    assert call_key("pod", "ns/web-0", "net1", "") == "pod:ns/web-0/net1"
    assert call_key("mac", "", "eth0", "02:00:00:00:00:01") == "mac:02:00:00:00:00:01"
    assert call_key("", "ns/a", "eth0", "") == ""
    with pytest.raises(InvalidConfig, match="sticky pod: the call names no pod"):
        call_key("pod", "", "eth0", "")
    with pytest.raises(InvalidConfig, match="sticky mac: the call carries no MAC"):
        call_key("mac", "ns/a", "eth0", "")


# -- the service on the memory store ------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["walked", "indexed"])
def indexed(request: pytest.FixtureRequest) -> bool:
    """Each case also with the snapshots indexed as the node daemon's are (whereabouts.holdings)."""
    return bool(request.param)


def test_delete_retains_for_the_key_and_the_key_takes_it_back(clock: Clock, indexed: bool) -> None:
    config = cfg(sticky="pod", sticky_retention="1h")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    assert address(service.add(config, pod("web-0"))) == "10.0.0.1/28"
    service.delete(config, pod("web-0"))
    assert entries(store) == {1: pod("web-0").but(netconf="netA", retained=1_000_000, expires=1_003_600)}
    service.delete(config, pod("web-0"))  # a second DEL: out of its reach
    assert service.check(config, pod("web-0"), []) == Refusal(GONE, "container ctr-web-0 interface eth0 holds no "
                                                                     "address in range 10.0.0.0/28")  # fmt: skip
    assert address(service.add(config, pod("web-1"))) == "10.0.0.2/28"  # picks pass over it
    recreated = pod("web-0", "ctr-web-0-b").but(node="n2")
    assert address(service.add(config, recreated)) == "10.0.0.1/28"
    assert entries(store)[1] == recreated.named("netA")  # held again, by the new container
    service.delete(config, pod("web-0"))  # the old container's late DEL
    assert entries(store)[1] == recreated.named("netA")


def test_a_key_held_by_another_container_is_taken_over(clock: Clock, indexed: bool) -> None:
    """A StatefulSet pod recreated before its old container's DEL, or a VM's migration target."""
    config = cfg(sticky="pod")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    address(service.add(config, pod("web-0")))
    assert address(service.add(config, pod("web-0", "ctr-new"))) == "10.0.0.1/28"
    assert entries(store) == {1: pod("web-0", "ctr-new").named("netA")}
    service.delete(config, pod("web-0"))  # the old one's DEL releases nothing
    assert entries(store) == {1: pod("web-0", "ctr-new").named("netA")}


def test_mac_retention_lapses_on_the_next_add(clock: Clock, indexed: bool) -> None:
    config = cfg(sticky="mac", sticky_retention="10s")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    address(service.add(config, pod("02:00:00:00:00:01", mode="mac")))
    service.delete(config, pod("02:00:00:00:00:01", mode="mac"))
    clock.now += 9
    assert address(service.add(config, pod("02:00:00:00:00:02", mode="mac"))) == "10.0.0.2/28"
    clock.now += 1
    assert address(service.add(config, pod("02:00:00:00:00:03", mode="mac"))) == "10.0.0.1/28"


@pytest.mark.parametrize(("datastore", "lapses"), [("local", True), ("kubernetes", False)])
def test_pod_retention_lapses_only_where_no_reconciler_looks_for_the_pod(
    clock: Clock, datastore: str, lapses: bool, indexed: bool
) -> None:
    config = cfg(datastore, sticky="pod", sticky_retention="10s")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    address(service.add(config, pod("web-0")))
    service.delete(config, pod("web-0"))
    clock.now += 3600
    assert address(service.add(config, pod("web-1"))) == ("10.0.0.1/28" if lapses else "10.0.0.2/28")


def test_a_claims_address_never_lapses(clock: Clock, indexed: bool) -> None:
    config = cfg("kubernetes", sticky="claim", sticky_retention="1s")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    vm = Owner("launcher-a", "net1", "ns/virt-launcher-a", sticky="claim:ns/vm1.net")
    address(service.add(config, vm))
    service.delete(config, vm)
    assert entries(store)[1].expires == 0 and entries(store)[1].retained == 1_000_000
    clock.now += 10 * 365 * 86400
    assert address(service.add(config, Owner("x", "net1", "ns/x"))) == "10.0.0.2/28"


def test_an_add_with_sticky_off_releases_no_retained_entry(clock: Clock, indexed: bool) -> None:
    """A config of the same name with sticky off (another namespace's NAD, say) is no proof that the key is
    gone: its ADD passes over the retained entries, and the key gets its address back."""
    sticky_a = cfg(sticky="pod")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    address(service.add(sticky_a, pod("a")))
    address(service.add(sticky_a, pod("b")))
    service.delete(sticky_a, pod("a"))
    service.delete(sticky_a, pod("b"))
    plain_a = cfg()
    assert address(service.add(plain_a, Owner("c", "eth0", "ns/c"))) == "10.0.0.3/28"
    assert entries(store)[1].retained and entries(store)[2].retained
    assert address(service.add(sticky_a, pod("a", "ctr-a2"))) == "10.0.0.1/28"


def test_exhausted_range_counts_held_and_retained(clock: Clock, indexed: bool) -> None:
    config = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/29", "sticky": "pod"}, "netA")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    for i in range(6):
        address(service.add(config, pod(f"web-{i}")))
    for i in (1, 2, 4):
        service.delete(config, pod(f"web-{i}"))
    refusal = service.add(config, pod("web-9"))
    assert isinstance(refusal, Refusal) and refusal.kind == EXHAUSTED
    assert "6 held, of which 3 retained for sticky keys" in refusal.msg


def test_fixed_reservation_is_kept_from_every_other_key(clock: Clock, indexed: bool) -> None:
    config = cfg(sticky="pod", reservations=[{"address": "10.0.0.1", "pod": "ns/db-0"}])
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    assert address(service.add(config, pod("web-0"))) == "10.0.0.2/28"
    taken = service.add(config, pod("web-1"), ((4, BASE + 1),))
    assert isinstance(taken, Refusal) and taken.kind == TAKEN
    assert "reserved for pod:ns/db-0; cannot give it to container ctr-web-1" in taken.msg
    mine = ((4, BASE + 1),)
    assert address(service.add(config, pod("db-0"), mine, mine)) == "10.0.0.1/28"
    assert entries(store)[1].fixed and entries(store)[1].state == "reserved"
    service.delete(config, pod("db-0"))  # a fixed address needs no retaining: the config keeps it anyway
    assert 1 not in entries(store)
    assert address(service.add(config, pod("web-3"))) == "10.0.0.3/28"


def test_gc_retains_sticky_entries_and_leaves_retained_ones_alone(clock: Clock, indexed: bool) -> None:
    config = cfg(sticky="pod")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    address(service.add(config, pod("a")))
    address(service.add(config, pod("b")))
    service.delete(config, pod("a"))
    assert service.gc(config, set()) == 1  # b's attachment is gone: retained, as its DEL would have
    assert all(who.retained for who in entries(store).values())
    assert service.gc(config, set()) == 0


def test_a_batch_gives_each_key_its_own_retained_address(clock: Clock, indexed: bool) -> None:
    config = cfg(sticky="pod")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    for name in ("a", "b", "c"):
        address(service.add(config, pod(name)))
        service.delete(config, pod(name))
    outcomes = service.add_batch(config, [(pod(n, f"new-{n}"), ()) for n in ("c", "x", "a", "b")])
    assert [address(o) for o in outcomes] == ["10.0.0.3/28", "10.0.0.4/28", "10.0.0.1/28", "10.0.0.2/28"]


def test_a_mac_takes_over_only_entries_of_its_own_pods_namespace(clock: Clock, indexed: bool) -> None:
    """Any pod may set any MAC: one in another namespace that copies a VM's gets an ordinary address, and the
    VM's entry, held or retained, stays the VM's."""
    config = cfg(sticky="mac")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    vm = Owner("ctr-vm", "eth0", "vms/vm-a", sticky="mac:02:00:00:00:00:01")
    thief = Owner("ctr-thief", "eth0", "evil/thief", sticky="mac:02:00:00:00:00:01")
    assert address(service.add(config, vm)) == "10.0.0.1/28"
    assert address(service.add(config, thief)) == "10.0.0.2/28"
    assert entries(store)[1] == vm.named("netA")
    service.delete(config, vm)
    service.delete(config, thief)
    assert address(service.add(config, thief.but(container_id="ctr-thief-2"))) == "10.0.0.2/28"  # its own
    assert entries(store)[1].retained and entries(store)[1].podref == "vms/vm-a"
    renamed = vm.but(container_id="ctr-vm-2", podref="vms/vm-a-launcher")  # its namespace: taken back
    assert address(service.add(config, renamed)) == "10.0.0.1/28"
    # an entry recorded without a pod goes to a caller without one, not to a pod
    nameless = Owner("ctr-n", "eth0", sticky="mac:02:00:00:00:00:09")
    assert address(service.add(config, nameless)) == "10.0.0.3/28"
    assert address(service.add(config, nameless.but(container_id="ctr-p", podref="ns/p"))) == "10.0.0.4/28"
    assert address(service.add(config, nameless.but(container_id="ctr-n2"))) == "10.0.0.3/28"


def test_a_fixed_mac_reservation_goes_to_its_mac_in_any_namespace(clock: Clock, indexed: bool) -> None:
    """The config names the MAC: its address follows the MAC wherever the pod is, as before."""
    config = cfg(sticky="mac", reservations=[{"address": "10.0.0.5", "mac": "02:00:00:00:00:05"}])
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    mine = ((4, BASE + 5),)
    first = Owner("ctr-a", "eth0", "ns-a/a", sticky="mac:02:00:00:00:00:05")
    assert address(service.add(config, first, mine, mine)) == "10.0.0.5/28"
    second = Owner("ctr-b", "eth0", "ns-b/b", sticky="mac:02:00:00:00:00:05")
    assert address(service.add(config, second, mine, mine)) == "10.0.0.5/28"
    assert entries(store) == {5: second.but(netconf="netA", fixed=True)}


def test_a_batch_leaves_a_request_changing_an_earlier_ones_address_for_the_next_round(
    clock: Clock, indexed: bool
) -> None:
    """Two containers of one key (or of one pod) in one round: the later takes over what the earlier got, in a
    commit of its own, as if they had come one after the other."""
    config = cfg(sticky="mac")
    store = MemoryStore(indexed=indexed)
    service = IPAMService(store)
    a, b = pod("02:00:00:00:00:01", "ctr-a", mode="mac"), pod("02:00:00:00:00:01", "ctr-b", mode="mac")
    web, web_again = Owner("ctr-w", "eth0", "ns/web-0"), Owner("ctr-w2", "eth0", "ns/web-0")
    commits = store.commits
    outcomes = service.add_batch(config, [(a, ()), (web, ()), (b, ()), (web_again, ()), (pod("x", mode="mac"), ())])
    assert [address(o) for o in outcomes] == ["10.0.0.1/28", "10.0.0.2/28", "10.0.0.1/28", "10.0.0.2/28", "10.0.0.3/28"]
    assert store.commits == commits + 2
    assert {ip: who.container_id for ip, who in entries(store).items()} == {1: "ctr-b", 2: "ctr-w2", 3: "ctr-x"}
