"""The reservation of an IPPool entry that has none, made from the entry: what `kubectl whereabouts mirror off`,
the reconciler's repair and the node-slice controller (before a re-slice) create. The per-address reservation
is what guards an address across pools (a node's new slice overlapping its old slice's pool), so an entry
written without one (overlapping ranges off: a Go plugin's, or this plugin's before node slices wrote them
always) is an address a second pool could hand out."""

from __future__ import annotations

from whereabouts.errors import TryAgainLater
from whereabouts.kube import resources
from whereabouts.kube.client import Conflict, KubeClient
from whereabouts.kube.resources import RESERVATIONS
from whereabouts.model import Owner, PoolKey


def reserve_entry(client: KubeClient, key: PoolKey, version: int, ip: int, owner: Owner) -> Owner | None:
    """Create the reservation of pool `key`'s entry `ip` held by `owner`, labelled with the pool's range as the
    plugin writes it. None: created. Else it existed (409): the holder it names, which may be another."""
    name = resources.reservation_name(key.network, version, ip)
    obj = resources.reservation(name, owner, client.namespace, network=key.network, cidr=key.cidr,
                                address=(version, ip))  # fmt: skip
    try:
        client.create(client.path(RESERVATIONS), obj)
        return None
    except Conflict:
        found = client.get(client.path(RESERVATIONS, name))
    if found is None:
        raise TryAgainLater(f"reservation {name} existed, then was deleted before it could be read: try again")
    return resources.reservation_owner(found)
