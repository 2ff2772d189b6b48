"""What `pool_capacity` reports: the addresses automatic picks can hand out in a pool, as its network config says.

An IPPool names only its range; the gateway (never handed out), `exclude` and `range_start`/`range_end` are in
the network config. For a pool a NetworkAttachmentDefinition configures, the capacity is that config's window
of the range minus what it excludes, its gateway included; for a node slice's pool, the part of that inside
the slice. A pool no NAD describes (a node's own CNI config file, which the controller cannot read) counts its
range alone: network, broadcast and IPv4 x.x.x.0 addresses out. When several NADs configure one pool, the
oldest counts. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from whereabouts.config import parse_ipam
from whereabouts.controller.leaks import Pool
from whereabouts.controller.nads import nad_config, whereabouts_ipam
from whereabouts.errors import WhereaboutsError
from whereabouts.model import PoolKey
from whereabouts.nodeslice import within_slice
from whereabouts.ranges import IPRange, Network


@dataclass(frozen=True)
class Window:
    pool: str  # the whole range's pool name, `[<network_name>-]<cidr>`
    prefix: str  # `<network_name>-`, or "": what a node slice's pool name starts with
    sliced: bool  # the network's first range, with node_slice_size set
    rng: IPRange


def windows(nads: Iterable[Mapping[str, Any]]) -> list[Window]:
    """Every whereabouts range the NADs configure, oldest NAD first; NADs that do not parse are skipped."""
    found = []
    for nad in sorted(nads, key=lambda n: n.get("metadata", {}).get("creationTimestamp", "")):
        try:
            config = nad_config(nad)
            named = whereabouts_ipam(config) if isinstance(config, Mapping) else None
            if named is None:
                continue
            # the datastore is the flat file's business: any kubernetes-only key parses
            cfg = parse_ipam({**named[1], "datastore": "kubernetes"}, named[0])
        except (ValueError, RecursionError, WhereaboutsError):
            continue
        prefix = f"{cfg.network_name}-" if cfg.network_name else ""
        for i, rng in enumerate(cfg.ranges):
            found.append(
                Window(PoolKey(cfg.network_name, rng.cidr).name, prefix, i == 0 and bool(cfg.slice_prefix), rng)
            )
    return found


def capacity(pool: Pool, configured: Sequence[Window]) -> int:
    for window in configured:
        if pool.name == window.pool:
            return window.rng.capacity()
    try:
        net = Network.parse(pool.cidr, strict=False)
    except ValueError:
        return pool.capacity
    for window in configured:
        rng = window.rng
        inside = net.version == rng.version and rng.network <= net.address and net.last <= rng.broadcast
        if window.sliced and inside and pool.prefix.startswith(window.prefix) and pool.prefix != window.prefix:
            return within_slice(rng, net.address, net.last).capacity()
    return pool.capacity
