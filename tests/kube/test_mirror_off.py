"""kubernetes.ippool_mirror false, on a real kube-apiserver: the per-address reservations are the only record.
No IPPool is read or written, in process or through the node daemon; calls on many nodes racing still hold no
address twice; sticky addresses and node slices work from the reservations alone; and the config refuses the
one combination that would leave no record (overlapping ranges off). Also, mirror on and off: what a call served
in process reads after losing an address."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from test_fast_ipam import write_slice_pool
from test_sticky_kube import add, call, delete

from kube_server import KubeAPIServer
from support import CNIResult, netconf, running_daemon, served_through
from whereabouts.config import IPAMConfig, KubernetesSettings, parse_ipam
from whereabouts.errors import InvalidConfig
from whereabouts.kube.client import APIError, KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.model import Owner
from whereabouts.service import IPAMService
from whereabouts.store.kubernetes import KubernetesStore


@pytest.fixture(scope="module")
def node_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sock = str(tmp_path_factory.mktemp("node-daemon") / "plugin.sock")
    with running_daemon(sock):
        yield sock


@pytest.fixture(params=["in-process", "daemon"])
def served(request: pytest.FixtureRequest) -> Iterator[str]:
    sock = request.getfixturevalue("node_daemon") if request.param == "daemon" else ""
    with served_through(sock):
        yield request.param


def conf(tmp_path: Path, kubeconfig: Path, **ipam: Any) -> dict[str, Any]:
    return netconf(tmp_path, kubernetes={"kubeconfig": str(kubeconfig), "ippool_mirror": False}, **ipam)


def held(kube: KubeAPIServer, namespace: str) -> dict[str, str]:
    """address -> container ID, from the reservations (their spec.address, else their name)."""
    found = {}
    for name, obj in kube.objects(namespace, "overlappingrangeipreservations").items():
        found[obj["spec"].get("address") or name] = obj["spec"]["containerid"]
    return found


def test_adds_and_dels_hold_addresses_by_their_reservations_alone(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, served: str
) -> None:
    ns = kube_namespace
    config = conf(tmp_path, plugin_kubeconfig, range="10.57.0.0/29")
    assert [add(config, f"c{i}", f"p{i}", ns) for i in range(3)] == ["10.57.0.1/29", "10.57.0.2/29", "10.57.0.3/29"]
    assert add(config, "c1", "p1", ns) == "10.57.0.2/29"  # the same attachment again: the same address
    assert held(kube, ns) == {"10.57.0.1": "c0", "10.57.0.2": "c1", "10.57.0.3": "c2"}
    delete(config, "c1", "p1", ns)
    assert held(kube, ns) == {"10.57.0.1": "c0", "10.57.0.3": "c2"}
    assert call("CHECK", {**config, "prevResult": _prev("10.57.0.1/29")}, "c0", "p0", ns).returncode == 0
    assert add(config, "c3", "p3", ns) == "10.57.0.2/29"  # freed by the DEL: the lowest free again
    assert kube.objects(ns, "ippools") == {}  # nothing in the Go plugin's format, ever
    labels = kube.objects(ns, "overlappingrangeipreservations")["10.57.0.2"]["metadata"]["labels"]
    assert labels["subnet_29"] == "10.57.0.0"  # how a call reads a pool with the mirror off


def _prev(address: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "ips": [{"address": address}]}


def test_a_full_pool_says_so_and_an_address_taken_in_an_overlapping_range_is_not_handed_out(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, served: str
) -> None:
    ns = kube_namespace
    small = conf(tmp_path, plugin_kubeconfig, range="10.58.0.0/30")
    assert [add(small, f"a{i}", f"a{i}", ns) for i in range(2)] == ["10.58.0.1/30", "10.58.0.2/30"]
    result = call("ADD", small, "a2", "a2", ns)
    assert result.returncode != 0 and "10.58.0.0/30" in result.stdout  # exhausted, and it says which range
    wide = conf(tmp_path, plugin_kubeconfig, range="10.58.0.0/29")  # overlaps: shares the reservations
    assert add(wide, "b0", "b0", ns) == "10.58.0.3/29"
    assert kube.objects(ns, "ippools") == {}


def test_sticky_address_comes_back_on_another_nodes_slice_without_the_mirror(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, served: str
) -> None:
    ns = kube_namespace
    write_slice_pool(kube, ns, "testnet", "10.59.0.0/27", "/28", [("n1", "10.59.0.0/28"), ("n2", "10.59.0.16/28")])
    config = conf(tmp_path, plugin_kubeconfig, range="10.59.0.0/27", node_slice_size="/28", sticky="pod")
    assert add(config, "old", "db-0", ns, node="n1") == "10.59.0.1/27"
    delete(config, "old", "db-0", ns, node="n1")
    assert add(config, "x", "web-0", ns, node="n1") == "10.59.0.2/27"  # n1's slice passes over the retained one
    assert add(config, "new", "db-0", ns, node="n2") == "10.59.0.1/27"  # from n1's slice, on n2
    assert add(config, "y", "web-1", ns, node="n2") == "10.59.0.16/27"
    delete(config, "new", "db-0", ns, node="n2")
    assert add(config, "newer", "db-0", ns, node="n1") == "10.59.0.1/27"
    assert kube.objects(ns, "ippools") == {}


def test_four_nodes_racing_without_the_mirror_hold_nothing_twice(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """80 ADDs from 20 callers on four nodes (three daemons, one node's calls in process), then every DEL."""
    ns = kube_namespace
    config = conf(tmp_path, plugin_kubeconfig, range="10.60.0.0/24")
    sockets = [str(tmp_path / f"node-{i}.sock") for i in range(3)] + [""]

    def one(command: str, n: int) -> CNIResult:
        node = n % 4
        env = {"WHEREABOUTS_SOCKET": sockets[node]}  # "": in process
        return call(command, config, f"ctr-{n}", f"pod-{n}", ns, node=f"node-{node}", env=env)

    with ExitStack() as stack:
        for sock in sockets[:3]:
            stack.enter_context(running_daemon(sock))
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda n: one("ADD", n), range(80)))
        assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:3]
        got = [r.addresses()[0].split("/")[0] for r in results]
        assert len(set(got)) == 80, "an address handed out twice"
        assert held(kube, ns) == {address: f"ctr-{n}" for n, address in enumerate(got)}
        assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.60.0.0/24") for a in got)
        with ThreadPoolExecutor(max_workers=20) as pool:
            dels = list(pool.map(lambda n: one("DEL", n), range(80)))
        assert all(r.returncode == 0 for r in dels)
        assert held(kube, ns) == {} and kube.objects(ns, "ippools") == {}


def counted_store(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, *, mirror: bool, stale_first: bool
) -> tuple[KubernetesStore, list[dict[str, str]]]:
    """A store whose LISTs are recorded (their query parameters). With `stale_first`, its first read of the
    range answers as before another caller's ADD landed: the first labelled LIST empty (mirror off), the
    first GET of the IPPool absent (mirror on)."""
    store = KubernetesStore(KubeClient(load_credentials(str(kubeconfig))), mirror=mirror)
    lists: list[dict[str, str]] = []
    real_list, real_get = store.client.list_with_version, store.client.get
    stale = [stale_first]

    def listing(path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        lists.append(params)
        items, version = real_list(path, **params)
        if stale[0] and params.get("labelSelector"):
            stale[0] = False  # (as a quorum read just before the first of them was written: its version then)
            return [], str(min(int(obj["metadata"]["resourceVersion"]) for obj in items) - 1) if items else version
        return items, version

    def getting(path: str) -> dict[str, Any] | None:
        obj = real_get(path)
        if stale[0] and "/ippools/" in path:
            stale[0] = False
            return None
        return obj

    monkeypatch.setattr(store.client, "list_with_version", listing)
    monkeypatch.setattr(store.client, "get", getting)
    return store, lists


def reads_of_everything(lists: list[dict[str, str]]) -> int:
    return sum(1 for params in lists if not params.get("labelSelector"))


def ipam_config(tmp_path: Path, kubeconfig: Path, cidr: str, mirror: bool) -> IPAMConfig:
    kubernetes = {"kubeconfig": str(kubeconfig), "ippool_mirror": mirror}
    ipam = {"type": "whereabouts", "range": cidr, "local_data_dir": str(tmp_path), "kubernetes": kubernetes}
    return parse_ipam(ipam, "netA")


@pytest.mark.parametrize("mirror", [False, True], ids=["mirror-off", "mirror-on"])
def test_an_address_lost_to_a_caller_on_the_same_range_costs_no_read_of_every_reservation(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, mirror: bool,
) -> None:  # fmt: skip
    """In process, callers racing for a range's lowest address: the loser's next read of the range shows the
    winner, so it reads nothing more (before: every loss also listed every reservation of the namespace), and
    with the mirror off that read is served from the server's cache, no older than the winner's create."""
    cfg = ipam_config(tmp_path, plugin_kubeconfig, "10.58.0.0/28", mirror)
    other = IPAMService(KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=mirror))
    assert [a.address for a in other.add(cfg, Owner("winner", "eth0"))] == ["10.58.0.1/28"]
    store, lists = counted_store(plugin_kubeconfig, monkeypatch, mirror=mirror, stale_first=True)
    assert [a.address for a in IPAMService(store).add(cfg, Owner("loser", "eth0"))] == ["10.58.0.2/28"]
    assert store.contended  # (it did lose the first address)
    assert reads_of_everything(lists) == 0, lists
    if not mirror:  # a quorum read, then the retry's from the server's cache, not older than the winner
        winner = kube.objects(kube_namespace, "overlappingrangeipreservations")
        versions = [int(obj["metadata"]["resourceVersion"]) for obj in winner.values()
                    if obj["spec"]["containerid"] == "winner"]  # fmt: skip
        first, retry = lists
        assert "resourceVersion" not in first
        assert retry["resourceVersionMatch"] == "NotOlderThan" and int(retry["resourceVersion"]) >= versions[0]


def test_a_retry_read_from_the_cache_does_not_wait_for_writes_to_other_kinds(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reservations' watch cache reaches only reservations' versions: a retry asking for etcd's revision
    after a write to another kind (here a ConfigMap, after the winner's create) would wait 3 s for it and get
    a 504. It asks for the newest reservation it saw, and is answered at once."""
    cfg = ipam_config(tmp_path, plugin_kubeconfig, "10.60.0.0/28", False)
    other = IPAMService(KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=False))
    assert [a.address for a in other.add(cfg, Owner("winner", "eth0"))] == ["10.60.0.1/28"]
    kube.request("POST", f"/api/v1/namespaces/{kube_namespace}/configmaps",
                 {"metadata": {"name": "newer"}, "data": {"a": "b"}})  # fmt: skip
    store, lists = counted_store(plugin_kubeconfig, monkeypatch, mirror=False, stale_first=True)
    started = time.monotonic()
    assert [a.address for a in IPAMService(store).add(cfg, Owner("loser", "eth0"))] == ["10.60.0.2/28"]
    assert time.monotonic() - started < 2
    assert [params.get("resourceVersionMatch", "") for params in lists] == ["", "NotOlderThan"]


def test_a_cache_that_does_not_catch_up_in_time_means_a_quorum_read(
    plugin_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = ipam_config(tmp_path, plugin_kubeconfig, "10.61.0.0/28", False)
    other = IPAMService(KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=False))
    assert [a.address for a in other.add(cfg, Owner("winner", "eth0"))] == ["10.61.0.1/28"]
    store, lists = counted_store(plugin_kubeconfig, monkeypatch, mirror=False, stale_first=True)
    counted = store.client.list_with_version

    def behind(path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        if params.get("resourceVersionMatch"):
            lists.append(params)
            raise APIError("504 Timeout: Too large resource version", status=504, path=path)
        return counted(path, **params)

    monkeypatch.setattr(store.client, "list_with_version", behind)
    assert [a.address for a in IPAMService(store).add(cfg, Owner("loser", "eth0"))] == ["10.61.0.2/28"]
    assert [params.get("resourceVersionMatch", "") for params in lists] == ["", "NotOlderThan", ""]


@pytest.mark.parametrize("mirror", [False, True], ids=["mirror-off", "mirror-on"])
def test_an_address_lost_to_an_overlapping_range_reads_every_reservation_once(
    plugin_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: bool
) -> None:
    """Held through another range of the network, an address is in no read of this range's: the loser learns
    them all at once (the API server's cache), rather than losing one address per try."""
    wide, narrow = (ipam_config(tmp_path, plugin_kubeconfig, cidr, mirror) for cidr in ("10.59.0.0/24", "10.59.0.0/28"))
    other = IPAMService(KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=mirror))
    assert [[a.address for a in other.add(wide, Owner(f"w{i}", "eth0"))] for i in range(3)] == [
        ["10.59.0.1/24"], ["10.59.0.2/24"], ["10.59.0.3/24"]
    ]  # fmt: skip
    store, lists = counted_store(plugin_kubeconfig, monkeypatch, mirror=mirror, stale_first=False)
    assert [a.address for a in IPAMService(store).add(narrow, Owner("n", "eth0"))] == ["10.59.0.4/28"]
    assert reads_of_everything(lists) == 1, lists  # one read of them all, after the first loss


def test_the_mirror_off_needs_overlapping_ranges(tmp_path: Path) -> None:
    kube = {"kubeconfig": str(tmp_path / "k.kubeconfig"), "ippool_mirror": False}
    with pytest.raises(InvalidConfig, match="ippool_mirror false with enable_overlapping_ranges false"):
        parse_ipam({"type": "whereabouts", "range": "10.61.0.0/24", "kubernetes": kube,
                    "enable_overlapping_ranges": False})  # fmt: skip
    cfg = parse_ipam({"type": "whereabouts", "range": "10.61.0.0/24", "kubernetes": kube})
    assert isinstance(cfg.store, KubernetesSettings) and not cfg.store.ippool_mirror
    on = parse_ipam({"type": "whereabouts", "range": "10.61.0.0/24", "kubernetes": {**kube, "ippool_mirror": "true"}})
    assert isinstance(on.store, KubernetesSettings) and on.store.ippool_mirror
    with pytest.raises(InvalidConfig, match=r"kubernetes\.ippool_mirror"):
        parse_ipam({"type": "whereabouts", "range": "10.61.0.0/24", "kubernetes": {**kube, "ippool_mirror": "no"}})


@pytest.mark.parametrize(
    ("text", "ok"),
    [("web-0", True), ("", True), ("a" * 63, True), ("a" * 64, False), ("web,x=y", False), ("web!", False),
     ("-web", False), ("web in (a)", False)],
)  # fmt: skip
def test_only_a_label_value_goes_into_a_label_selector(text: str, ok: bool) -> None:
    """A sticky key's pod names narrow the LIST of its reservations only when they are label values: a name
    carrying a selector's syntax would add requirements of its own."""
    from whereabouts.kube.resources import is_label_value

    assert is_label_value(text) is ok


def test_a_retry_read_from_a_cache_behind_the_attachments_del_gives_no_address_without_its_reservation(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry's cached read is no older than the newest reservation the call saw, and may be older than a
    deletion its quorum read showed: here the attachment's own reservation, deleted by its DEL just before
    (a container added again under its ID, as podman does on a restart). A cache that has not seen that DEL
    yet (a legal answer, modelled by the answer it gave before it) must not make the call believe it still
    holds that address, and hand it out with no reservation behind it."""
    wide, narrow = (ipam_config(tmp_path, plugin_kubeconfig, cidr, False) for cidr in ("10.62.0.0/24", "10.62.0.0/28"))

    def service() -> IPAMService:
        return IPAMService(KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=False))

    mine = Owner("c", "eth0", "ns/p")
    assert [a.address for a in service().add(wide, Owner("w", "eth0"))] == ["10.62.0.1/24"]  # not in narrow's reads
    assert [a.address for a in service().add(narrow, mine)] == ["10.62.0.2/28"]
    store = KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=False)
    path, selector = store.client.path("overlappingrangeipreservations"), "subnet_28=10.62.0.0"
    newest = max(int(obj["metadata"]["resourceVersion"]) for obj in store.client.list(path))
    before = store.client.list_with_version(path, labelSelector=selector, resourceVersion=str(newest),
                                            resourceVersionMatch="NotOlderThan")  # fmt: skip
    assert [obj["spec"]["containerid"] for obj in before[0]] == ["c"]
    service().delete(narrow, mine)
    assert held(kube, kube_namespace) == {"10.62.0.1": "w"}
    real = store.client.list_with_version

    def behind_the_del(path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        lagging = params.get("resourceVersionMatch") == "NotOlderThan" and params.get("labelSelector") == selector
        if lagging and int(before[1]) >= int(params["resourceVersion"]):
            return before  # the watch cache as it was before the DEL: still no older than asked
        return real(path, **params)

    monkeypatch.setattr(store.client, "list_with_version", behind_the_del)
    (got,) = IPAMService(store).add(narrow, mine)  # loses 10.62.0.1 (held through the wide range), then retries
    assert store.contended
    assert held(kube, kube_namespace).get(got.address.split("/")[0]) == "c", "told an address it does not hold"


@pytest.mark.parametrize("mirror", [False, True], ids=["mirror-off", "mirror-on"])
def test_every_reservation_learned_from_a_cache_behind_the_attachments_del_gives_no_address_without_one(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, mirror: bool,
) -> None:  # fmt: skip
    """An address lost to a holder through an overlapping range makes the call learn every reservation, from
    the API server's cache (resourceVersion 0: of any age). A cache still showing the attachment's own
    reservation, deleted by its DEL just before, must not make the call take it for held and write nothing."""
    wide, narrow = (ipam_config(tmp_path, plugin_kubeconfig, cidr, mirror) for cidr in ("10.63.0.0/24", "10.63.0.0/28"))

    def store() -> KubernetesStore:
        return KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))), mirror=mirror)

    mine = Owner("c", "eth0", "ns/p")
    assert [a.address for a in IPAMService(store()).add(wide, Owner("w", "eth0"))] == ["10.63.0.1/24"]
    assert [a.address for a in IPAMService(store()).add(narrow, mine)] == ["10.63.0.2/28"]
    lagging = store()
    path = lagging.client.path("overlappingrangeipreservations")
    newest = max(int(obj["metadata"]["resourceVersion"]) for obj in lagging.client.list(path))
    before = lagging.client.list_with_version(path, resourceVersion=str(newest), resourceVersionMatch="NotOlderThan")
    IPAMService(store()).delete(narrow, mine)
    assert held(kube, kube_namespace) == {"10.63.0.1": "w"}
    real = lagging.client.list_with_version

    def behind_the_del(path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        if params.get("resourceVersion") == "0" and not params.get("labelSelector"):
            return before  # every reservation, as the cache showed them before the DEL
        return real(path, **params)

    monkeypatch.setattr(lagging.client, "list_with_version", behind_the_del)
    (got,) = IPAMService(lagging).add(narrow, mine)  # loses 10.63.0.1 (held through the wide range): learns
    assert lagging.contended
    assert held(kube, kube_namespace).get(got.address.split("/")[0]) == "c", "told an address it does not hold"
