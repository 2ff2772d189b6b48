"""`pools`: how full each pool is. The store counts (Inventory.tally), over spans cut from the pool's window, so a
/8 holding a million addresses is answered without reading its entries.

    SIZE      addresses in the pool's CIDR (a node slice's: the slice)
    HELD      entries an attachment holds; RETAINED: sticky entries kept after their DEL (no attachment's)
    EXCLUDED  addresses automatic picks never hand out: network and broadcast, outside range_start/range_end,
              `exclude`, the gateway, IPv4 x.x.x.0 (known from the network's config; without one, the CIDR's)
    FREE      addresses automatic picks can still hand out
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from whereabouts.inventory import Tally
from whereabouts.model import PoolKey
from whereabouts.nodeslice import pool_window
from whereabouts.ranges import IPRange, Network
from whereabouts.tools.reading import all_keys
from whereabouts.tools.target import NetworkConfig, Target
from whereabouts.tools.view import Column, bar, count, render

if TYPE_CHECKING:
    from whereabouts.tools.target import ToolStore


@dataclass(frozen=True)
class PoolUsage:
    key: PoolKey
    config: str  # where its window comes from ("" none: the CIDR's)
    size: int
    capacity: int  # pickable addresses
    held: int
    retained: int
    free: int

    def row(self) -> dict[str, Any]:
        return {"network": self.key.network, "range": self.key.cidr, "node": self.key.node, "pool": self.key.name,
                "config": self.config, "size": self.size, "held": self.held, "retained": self.retained,
                "excluded": self.size - self.capacity, "free": self.free, "capacity": self.capacity,
                "used": self.capacity - self.free}  # fmt: skip


COLUMNS = (
    Column("NETWORK", "network"),
    Column("RANGE", "range"),
    Column("NODE", "node"),
    Column("SIZE", "size", lambda r: count(r["size"])),
    Column("HELD", "held", lambda r: count(r["held"])),
    Column("RETAINED", "retained", lambda r: count(r["retained"])),
    Column("EXCLUDED", "excluded", lambda r: count(r["excluded"])),
    Column("FREE", "free", lambda r: count(r["free"])),
    Column("USAGE", "used", lambda r: bar(r["used"], r["capacity"])),
    Column("POOL", "pool", wide=True),
    Column("CONFIG", "config", wide=True),
)


def run(target: Target, output: str, network: str | None) -> str:
    store = target.store()
    keys = all_keys(target, network)
    found = [usage(store, key, *window(key, target.configs)) for key in keys]
    found += unused_slices(target, {k for k in keys}, network)
    found.sort(key=lambda u: (u.key.network, u.key.version, Network.parse(u.key.cidr).address, u.key.node))
    return render("PoolList", [u.row() for u in found], COLUMNS, output) if found or output in ("json", "yaml") else ""


def window(key: PoolKey, configs: Sequence[NetworkConfig]) -> tuple[IPRange, str]:
    """The pool's range as its network's config says (the first config naming it), else its bare CIDR."""
    return pool_window(key, [(config.source, config.cfg) for config in configs])


def usage(store: ToolStore, key: PoolKey, rng: IPRange, config: str) -> PoolUsage:
    net = Network.parse(key.cidr)
    pickable = [(max(lo, net.address), min(hi, net.last)) for lo, hi in rng.free_segments()]
    pickable = [(lo, hi) for lo, hi in pickable if lo <= hi]
    tallies = store.tally(key, pickable + gaps(net, pickable))
    total = sum(tallies, Tally())
    capacity = sum(hi - lo + 1 - zeros(net.version, lo, hi) for lo, hi in pickable)
    taken = sum(t.entries - t.dot_zero for t in tallies[: len(pickable)])
    return PoolUsage(key, config, net.size, capacity, total.entries - total.retained, total.retained, capacity - taken)


def gaps(net: Network, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The CIDR's addresses outside `spans` (sorted, disjoint), as spans."""
    found, start = [], net.address
    for lo, hi in spans:
        if lo > start:
            found.append((start, lo - 1))
        start = hi + 1
    if start <= net.last:
        found.append((start, net.last))
    return found


def zeros(version: int, lo: int, hi: int) -> int:
    """IPv4 addresses ending in .0 within [lo, hi]: never picked automatically."""
    return (hi >> 8) - ((lo - 1) >> 8) if version == 4 and lo <= hi else 0


def unused_slices(target: Target, keys: set[PoolKey], network: str | None) -> list[PoolUsage]:
    """Fast IPAM: the slices the NodeSlicePools assign to nodes that hold no IPPool yet (nothing allocated)."""
    slices = target.store().node_slices()
    found = []
    for config in target.configs:
        cfg = config.cfg
        if not cfg.slice_prefix or slices is None or (network is not None and cfg.network_name != network):
            continue
        pool = slices.slice_pool(cfg.network_name or cfg.netconf_name)
        for node, cidr in pool.listing if pool is not None else ():
            key = PoolKey(cfg.network_name, cidr, node)
            if node and key not in keys:
                keys.add(key)
                rng, source = window(key, [config])
                capacity = sum(hi - lo + 1 - zeros(rng.version, lo, hi) for lo, hi in rng.free_segments())
                found.append(PoolUsage(key, source, Network.parse(cidr).size, capacity, 0, 0, capacity))
    return found
