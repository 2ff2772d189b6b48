"""What the IPAM service needs from a store (the stores in whereabouts.store implement it; the service and
everything below it never import them): read a snapshot of some pools, commit a decision with compare-and-swap.

`transaction(keys)` yields a `Transaction` whose `snapshot` holds the pools (and, with overlapping ranges,
the network's reservations inside their CIDRs). `commit(changes)` writes the change set only if every pool
still has the version it was read at, and returns False otherwise: losing a race is a normal outcome, the
service reads again and retries. Stores that can hold a lock cheaply (SQLite, memory) hold it for the
transaction, so their commits never lose; remote stores (etcd, Kubernetes) do a real compare-and-swap.

I/O failures raise `TryAgainLater` (code 11): each backend maps its own client's exceptions in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from whereabouts.model import ChangeSet, Owner, PodFacts, PoolKey, SlicePool, Snapshot


class Transaction(Protocol):
    snapshot: Snapshot
    # After a commit that lost: the store already knows what beat it, so a decision made again at once differs
    # (the node daemon's copy read the holder of the address a create lost). The service then retries without
    # backing off: there is nothing to wait for, unlike a lost compare-and-swap on a whole pool.
    informed: bool

    def commit(self, changes: ChangeSet) -> bool: ...


class Store(Protocol):
    # Whether `pools_holding` costs about what reading the configured pools does (an index on the attachment,
    # or a read of the network's pools): then every DEL looks for the attachment's entries in pools no longer
    # configured (a range dropped from the config), not only when the configured ones held nothing.
    finds_attachments: bool
    # The most changes one commit may carry (0: no limit): the service commits a decision of more holds in
    # several rounds, and frees at most half as many lapsed retentions on an ADD's way. A change set of
    # releases only may have more: the store commits it in parts (etcd: at most 128 operations a transaction).
    max_changes: int

    def transaction(self, keys: Sequence[PoolKey], *, overlapping: bool) -> AbstractContextManager[Transaction]: ...

    def pools_holding(self, network: str, container_id: str, ifname: str) -> list[PoolKey]:
        """Every pool of `network` where the attachment holds an address (DEL releases them all)."""
        ...

    def pools_of(self, network: str) -> list[PoolKey]:
        """Every pool of `network` the store holds, configured or not (GC judges them all); [] where the store
        cannot tell its pools from other networks' (Kubernetes: its reconciler frees a gone pod's addresses)."""
        ...

    def pools_with_sticky(self, network: str, sticky: str) -> list[PoolKey]:
        """Every pool of `network` with an entry (held or retained) recorded under the sticky key `sticky`
        (with node slices, the key's address may be in another node's pool)."""
        ...

    def forget_attachment(self, network: str, owner: Owner) -> None:
        """After DEL released the attachment's pools: drop any other record of it that a call killed
        between non-atomic writes left behind, and (Kubernetes) what its reservations still standing back in
        pools the DEL did not read (a range dropped or widened since its ADD). Nothing to do for stores whose
        commits are atomic."""
        ...

    def abort(self, owner: Owner) -> None:
        """A call failed for good: take back what it wrote (stores that write one object at a time)."""
        ...

    def check_ready(self) -> None:
        """Raise TryAgainLater unless reads and writes can be served now (STATUS)."""
        ...

    def node_slices(self) -> NodeSlices | None:
        """Where Fast IPAM's node slices are listed (the Kubernetes store); None for stores without them."""
        ...

    def pods(self) -> Pods | None:
        """Where pods and IPAMClaims are read (the Kubernetes store); None for stores without them."""
        ...

    def reusable(self) -> bool:
        """After a call: whether this store may serve another (the node daemon keeps it open). It drops what
        the call learned, and says False when what it was opened from changed under it (a kubeconfig or token
        rewritten, a database file replaced): the daemon then opens it afresh."""
        ...

    def close(self) -> None: ...


class NodeSlices(Protocol):
    def slice_pool(self, name: str) -> SlicePool | None:
        """The NodeSlicePool `name` as plain values; None when there is none (yet)."""
        ...

    def where(self, name: str) -> str:
        """The NodeSlicePool `name` named for a message ('NodeSlicePool kube-system/net1')."""
        ...


class Pods(Protocol):
    """What sticky addresses read from Kubernetes beside the pools: each costs one request."""

    def pod(self, namespace: str, name: str) -> PodFacts | None:
        """The pod's controller and network-selection annotation; None when there is no such pod."""
        ...

    def has_claim(self, namespace: str, name: str) -> bool:
        """Whether the IPAMClaim exists."""
        ...

    def record_claim(self, namespace: str, name: str, ips: Sequence[str], owner_pod: str) -> bool:
        """Write the IPAMClaim's status: `ips` (CIDR strings) and `owner_pod`, the name of the pod now holding
        it; False when there is no such claim."""
        ...
