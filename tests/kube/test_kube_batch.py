"""A group commit on the Kubernetes store (the node daemon's `IPAMService.add_batch`): an attachment that
fails takes back its own writes, and only its own, on a real kube-apiserver.

The other writers the batch races with (a runtime's retried ADD served by another process, the Go plugin)
are made to act at a chosen point of the batch: before its Nth read, or before its Nth commit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kube_server import KubeAPIServer
from whereabouts.config import IPAMConfig, parse_ipam
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.model import EXHAUSTED, TAKEN, ChangeSet, Owner, PoolKey, Refusal
from whereabouts.service import IPAMService, RetryPolicy
from whereabouts.store.kubernetes import KubernetesStore, KubeTransaction

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"
A = Owner("ctr-a", "net1", "ns/a")
B = Owner("ctr-b", "net1", "ns/b")

Step = Callable[[], None] | None


class Interleaved(KubernetesStore):
    """A Kubernetes store that runs the next of `before_read` as each transaction starts, and the next of
    `before_commit` as each commit starts (None: nothing that time)."""

    def __init__(self, client: KubeClient) -> None:
        super().__init__(client)
        self.before_read: list[Step] = []
        self.before_commit: list[Step] = []

    @contextmanager
    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> Iterator[KubeTransaction]:
        _next(self.before_read)
        with super().transaction(keys, overlapping=overlapping) as txn:
            commit = txn.commit

            def interleaved(changes: ChangeSet) -> bool:
                _next(self.before_commit)
                return commit(changes)

            txn.commit = interleaved  # type: ignore[method-assign]
            yield txn


def _next(steps: list[Step]) -> None:
    step = steps.pop(0) if steps else None
    if step is not None:
        step()


def setup(kubeconfig: Path, tmp_path: Path, cidr: str) -> tuple[IPAMConfig, Interleaved]:
    ipam = {
        "type": "whereabouts",
        "range": cidr,
        "local_data_dir": str(tmp_path),
        "kubernetes": {"kubeconfig": str(kubeconfig)},
    }
    client = KubeClient(load_credentials(str(kubeconfig)))
    return parse_ipam(ipam, "netA"), Interleaved(client)


def state(kube: KubeAPIServer, namespace: str, cidr: str) -> tuple[dict[str, str], dict[str, str]]:
    """(address -> container ID) in the pool, and in the overlapping-range reservations."""
    network = ipaddress.ip_network(cidr)
    pool = kube.objects(namespace, "ippools").get(str(network).replace("/", "-"), {})
    entries = (pool.get("spec") or {}).get("allocations") or {}
    held = {str(network.network_address + int(k)): v["id"] for k, v in entries.items()}
    reserved = {
        n: o["spec"]["containerid"] for n, o in kube.objects(namespace, "overlappingrangeipreservations").items()
    }
    return held, reserved


def test_an_attachment_failing_in_a_batch_leaves_the_others_reservation(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """B asks for an address a lone Go reservation holds; the pool does not show it, so the batch's first
    commit reserves A's address, then loses B's. Before the retry, a retried ADD of A served by another
    process completes with A's reservation. The retry finds A held and B's address taken: B fails, and
    taking back B's writes must not delete A's reservation (the old store deleted every pending one)."""
    cidr = "10.83.0.0/29"
    cfg, store = setup(plugin_kubeconfig, tmp_path, cidr)
    go = {"containerid": "go-x", "podref": "ns/go-x", "ifname": "net1"}
    kube.request("POST", f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations",
                 {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
                  "metadata": {"name": "10.83.0.5", "namespace": kube_namespace}, "spec": go})  # fmt: skip
    retried_add = lambda: IPAMService(setup(plugin_kubeconfig, tmp_path, cidr)[1]).add(cfg, A)  # noqa: E731
    store.before_read = [None, retried_add]
    service = IPAMService(store, retry=RetryPolicy(base_delay=0.001))
    first, second = service.add_batch(cfg, [(A, ()), (B, ((4, int(ipaddress.ip_address("10.83.0.5"))),))])
    assert [a.address for a in first] == ["10.83.0.1/29"]
    assert isinstance(second, Refusal) and second.kind == TAKEN
    assert state(kube, kube_namespace, cidr) == ({"10.83.0.1": "ctr-a"}, {"10.83.0.1": "ctr-a", "10.83.0.5": "go-x"})


def test_an_attachment_failing_in_a_batch_takes_back_what_it_wrote_in_a_lost_attempt(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The first commit reserves A's and B's addresses, then loses the pool write: the Go plugin (with
    overlapping ranges off: no reservation) took B's address meanwhile. The retry commits A's; B finds the
    range full and fails. B's reservation must go with it (the old store forgot it once A's commit succeeded,
    leaving it to block the address)."""
    cidr = "10.84.0.0/30"
    cfg, store = setup(plugin_kubeconfig, tmp_path, cidr)
    go = {"2": {"id": "go-y", "podref": "ns/go-y", "ifname": "net1"}}
    pool = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
            "metadata": {"name": "10.84.0.0-30", "namespace": kube_namespace},
            "spec": {"range": cidr, "allocations": go}}  # fmt: skip
    store.before_commit = [lambda: kube.request("POST", f"{GROUP_PATH}/{kube_namespace}/ippools", pool)]
    service = IPAMService(store, retry=RetryPolicy(base_delay=0.001))
    first, second = service.add_batch(cfg, [(A, ()), (B, ())])
    assert [a.address for a in first] == ["10.84.0.1/30"]
    assert isinstance(second, Refusal) and second.kind == EXHAUSTED
    assert state(kube, kube_namespace, cidr) == ({"10.84.0.1": "ctr-a", "10.84.0.2": "go-y"}, {"10.84.0.1": "ctr-a"})


def reservation(kube: KubeAPIServer, namespace: str, name: str, holder: str) -> None:
    spec = {"containerid": holder, "podref": f"ns/{holder}", "ifname": "net1"}
    kube.request("POST", f"{GROUP_PATH}/{namespace}/overlappingrangeipreservations",
                 {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
                  "metadata": {"name": name, "namespace": namespace}, "spec": spec})  # fmt: skip


def test_a_release_never_deletes_the_reservation_someone_else_made_meanwhile(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """A's pool entry outlived its reservation (a DEL of A racing its ADD removed it): the address was free
    to take from that moment, and C took it (its reservation, its entry once A's is gone). A's DEL removes
    A's entry, then must leave C's reservation alone (the old store deleted it by name: C then held the
    address with no cluster-wide guard, and an overlapping range could hand it out twice)."""
    cidr = "10.85.0.0/29"
    cfg, store = setup(plugin_kubeconfig, tmp_path, cidr)
    IPAMService(store).add(cfg, A)  # 10.85.0.1
    kube.request("DELETE", f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations/10.85.0.1")
    store.before_commit = [lambda: reservation(kube, kube_namespace, "10.85.0.1", "ctr-c")]
    IPAMService(store).delete(cfg, A)
    assert state(kube, kube_namespace, cidr) == ({}, {"10.85.0.1": "ctr-c"})


def test_a_stale_cached_reservation_is_not_deleted_once_someone_else_holds_the_address(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path, monkeypatch
) -> None:
    """DEL's cleanup of leftovers lists reservations from the API server's watch cache, which can lag: it
    may still show A's reservation after A's release deleted it and C created the same name. Deleting by
    name took C's; only the very object listed may go."""
    cidr = "10.86.0.0/29"
    cfg, store = setup(plugin_kubeconfig, tmp_path, cidr)
    reservation(kube, kube_namespace, "10.86.0.1", "ctr-a")
    stale = store.client.list(store.client.path("overlappingrangeipreservations"))
    kube.request("DELETE", f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations/10.86.0.1")
    reservation(kube, kube_namespace, "10.86.0.1", "ctr-c")
    monkeypatch.setattr(store.client, "list", lambda *args, **kw: stale)  # the cache, behind the writes
    store.forget_attachment(cfg.network_name, A)
    assert state(kube, kube_namespace, cidr)[1] == {"10.86.0.1": "ctr-c"}
