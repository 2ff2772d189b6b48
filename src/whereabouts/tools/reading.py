"""Reads the commands share: pools read whole through the store's transactions, pods judged as the reconciler
judges them (controller.leaks.judge_pod), and when a Kubernetes reservation was made."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from whereabouts.controller.leaks import Judgement, Verdict, judge_pod, pod_state, timestamp
from whereabouts.errors import WhereaboutsError
from whereabouts.kube.resources import RESERVATIONS, guess_reservation_address, reservation_name
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import Network
from whereabouts.tools.errors import ToolError
from whereabouts.tools.target import Target

CHUNK = 200  # pools per transaction
Address = tuple[str, int, int]  # (network, IP version, address)


def read_pools(target: Target, keys: Sequence[PoolKey]) -> dict[PoolKey, dict[int, Owner]]:
    """Each pool's entries, read in transactions of CHUNK pools (a local store's lock is held that long only)."""
    store, pools = target.store(), dict[PoolKey, dict[int, Owner]]()
    try:
        for i in range(0, len(keys), CHUNK):
            chunk = list(keys[i : i + CHUNK])
            with store.transaction(chunk, overlapping=False) as txn:
                pools.update((key, dict(txn.snapshot.pools[key].allocations)) for key in chunk)
    except WhereaboutsError as exc:
        raise ToolError(exc.msg) from None
    return pools


def all_keys(target: Target, network: str | None = None) -> list[PoolKey]:
    """The pools (of `network`) the plugin could have written; the others are left out, said in the notes."""
    keys, odd = split_keys(target, network)
    target.notes.extend(f"pool {key.name}: its range {key.cidr!r} is not one the plugin writes: left out (see check)"
                        for key in odd)  # fmt: skip
    return keys


def split_keys(target: Target, network: str | None = None) -> tuple[list[PoolKey], list[PoolKey]]:
    """(pools keyed by a range as the plugin writes it, the others): a pool keyed '10.0.0.7/24' (an edited export
    imported before import refused it) is one no allocation reads, and no range arithmetic takes its CIDR."""
    try:
        keys: list[PoolKey] = target.store().pool_keys(target.networks())
    except WhereaboutsError as exc:
        raise ToolError(exc.msg) from None
    for name in getattr(target.store(), "ambiguous_pools", ()):
        target.notes.append(f"IPPool {name}: its name reads as more than one network and node (see the NADs and "
                            "NodeSlicePools): left out")  # fmt: skip
    keys = [key for key in keys if network is None or key.network == network]
    readable = [key for key in keys if _as_written(key.cidr)]
    return readable, [key for key in keys if not _as_written(key.cidr)]


def _as_written(cidr: str) -> bool:
    try:
        return Network.parse(cidr).text == cidr
    except ValueError:
        return False


class Pods:
    """Whether pods exist, with one GET per pod (none without a Kubernetes API: every pod is unknown)."""

    def __init__(self, target: Target) -> None:
        self.client = target.kube()
        self.seen: dict[str, dict[str, Any] | None] = {}

    @property
    def known(self) -> bool:
        return self.client is not None

    def get(self, podref: str, *, fresh: bool = False) -> dict[str, Any] | None:
        namespace, _, name = podref.partition("/")
        if self.client is None or not namespace or not name:
            return None
        if fresh or podref not in self.seen:
            self.seen[podref] = self.client.get(self.client.resource("pods", name, namespace=namespace), named=True)
        return self.seen[podref]

    def judge(self, podref: str, *, fresh: bool = False) -> Judgement:
        """The reconciler's judgement of the pod; UNKNOWN when there is no Kubernetes API to ask."""
        if self.client is None:
            return Judgement(Verdict.UNKNOWN, "no Kubernetes API to ask whether the pod exists (--kubeconfig)")
        pod = self.get(podref, fresh=fresh)
        return judge_pod(podref, None if pod is None else pod_state(pod))

    def status(self, podref: str) -> str:
        """'Running', 'Pending', ..., 'Terminating', 'Gone'; '?' without a Kubernetes API; '' without a pod."""
        if not podref:
            return ""
        if self.client is None:
            return "?"
        pod = self.get(podref)
        if pod is None:
            return "Gone"
        state = pod_state(pod)
        return "Terminating" if state.terminating else state.phase or "Unknown"


def reserved_since(target: Target, addresses: Iterable[Address]) -> dict[Address, float]:
    """When each address's Kubernetes reservation was made (the other stores record no time): a GET each for a
    few, one list for many."""
    client = target.kube() if target.datastore == "kubernetes" else None
    wanted = set(addresses)
    if client is None or not wanted:
        return {}
    objects: list[dict[str, Any] | None] = []
    if len(wanted) <= 20:
        objects += [client.get(client.path(RESERVATIONS, reservation_name(*address))) for address in sorted(wanted)]
    else:
        objects += client.list(client.path(RESERVATIONS))
    found = {}
    for obj in objects:
        address = guess_reservation_address(obj, target.networks()) if obj is not None else None
        made = timestamp((obj or {}).get("metadata", {}).get("creationTimestamp", ""))
        if address in wanted and made is not None:
            found[address] = made
    return found
