"""Fast IPAM on the plugin's side: this node's slice of the first range, from the network's NodeSlicePool.

Loaded only when `node_slice_size` is set. The NodeSlicePool (named after `network_name`, else the network
config's `name`, in the kubeconfig context's namespace, written by the node-slice controller) lists the
range's slices and the node holding each. The call's pool is then `[<network_name>-]<node>-<slice>` (the Go
plugin's name), and its window is the slice intersected with the whole range's window: `range_start`,
`range_end` and `exclude` still apply (the Go plugin drops them: #666), the whole range's network and
broadcast addresses are never picked, a slice's own first and last addresses are ordinary hosts. Addresses
carry the whole range's prefix (the pod is on the whole network), with the configured gateway.

The node is `NODENAME`, else the `nodename` file in the configuration directory, else the hostname. An ADD
that finds no NodeSlicePool, no slice for its node, or a NodeSlicePool slicing another range or size than the
config says (the controller has not caught up with a changed NAD yet) fails with code 11: the runtime
retries, and the controller fixes that within moments. DEL and GC never fail for it: without a slice they
work on the other ranges, and DEL falls back to whichever pools hold the attachment.
"""

from __future__ import annotations

import os

from whereabouts.allocator import PoolRange
from whereabouts.config import FLAT_FILE_PATHS, read_config_file
from whereabouts.errors import TryAgainLater
from whereabouts.iptext import format_address, parse_network
from whereabouts.model import EXHAUSTED, OUTSIDE, PoolKey, Refusal
from whereabouts.names import is_object_name, require_object_name
from whereabouts.ranges import IPRange, Network, format_ip

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Sequence

    from whereabouts.config import IPAMConfig, SameFile
    from whereabouts.storage import NodeSlices

NODENAME_FILE = "nodename"


def node_name(cfg: IPAMConfig, given: str = "", same_file: SameFile | None = None) -> str:
    """`given` (NODENAME), else `<configuration dir>/nodename` (the Go installer writes it), else the hostname.
    `same_file`: the node daemon's check that its caller sees the same file (config.load_ipam)."""
    if given:
        return given
    for directory in _config_dirs(cfg):
        path = os.path.join(directory, NODENAME_FILE)
        if same_file is not None and not same_file(path, "nodename file", False):
            continue
        # anything there but a regular file (a FIFO, a device, a directory) or one over MAX_FILE: code 7
        text = read_config_file(path, "nodename file")
        name = text.decode(errors="replace").strip() if text else ""
        if name:
            return name
    return os.uname().nodename


def _config_dirs(cfg: IPAMConfig) -> list[str]:
    """`configuration_path` may name the directory or the flat file in it; unset: the flat file's default places."""
    path = cfg.configuration_path
    if path:
        return [path if os.path.isdir(path) else os.path.dirname(path)]
    return [os.path.dirname(default) for default in FLAT_FILE_PATHS]


def slice_pool_name(cfg: IPAMConfig) -> str:
    return cfg.network_name or cfg.netconf_name


def node_pool_ranges(
    cfg: IPAMConfig, slices: NodeSlices, node: str, *, required: bool, requested: tuple[tuple[int, int], ...] = ()
) -> tuple[PoolRange, ...] | Refusal:
    """The call's pools: this node's slice of the first range, then the other ranges whole. Without a
    slice: TryAgainLater if `required`, else the other ranges alone. A Refusal when the slice lies outside
    the range's window, or a requested address outside the slice."""
    whole = tuple(PoolRange(PoolKey(cfg.network_name, rng.cidr), rng) for rng in cfg.ranges)
    node = node_name(cfg, node)
    if not _usable(node, node, required=required):
        return whole[1:]
    cidr, problem = _slice_of(cfg, slices, node)
    if problem:
        if required:
            raise TryAgainLater(problem)
        return whole[1:]
    net = Network.parse(cidr)
    version, network, last = net.version, net.address, net.last
    key = PoolKey(cfg.network_name, cidr, node)
    if not _usable(key.name, node, required=required):  # `<network_name>-<node>-<slice>` may be too long
        return whole[1:]
    sliced = PoolRange(key, within_slice(cfg.ranges[0], network, last))
    if required and sliced.rng.first > sliced.rng.last:
        return Refusal(
            EXHAUSTED,
            f"node {node}'s slice {cidr} of range {cfg.ranges[0].cidr} lies outside the range's window "
            f"{format_ip(version, cfg.ranges[0].first)}-{format_ip(version, cfg.ranges[0].last)}",
        )
    return _outside(sliced, network, last, requested) or (sliced, *whole[1:])


def _usable(name: str, node: str, *, required: bool) -> bool:
    """Whether `name`, made from the node's name, is a Kubernetes object name. If not, an ADD fails with
    code 7; a DEL or GC goes on without the slice (an ADD can never have used it)."""
    if not is_object_name(name) and required:
        require_object_name(name, "node name", node)
    return is_object_name(name)


def within_slice(rng: IPRange, lo: int, hi: int) -> IPRange:
    """`rng` with its window narrowed to [lo, hi]: same CIDR (so results carry the whole range's prefix)."""
    first, last = max(rng.first, lo), min(rng.last, hi)
    excluded = tuple((max(a, first), min(b, last)) for a, b in rng.excluded if max(a, first) <= min(b, last))
    return IPRange(rng.version, rng.network, rng.prefix, first, last, excluded, rng.gateway)


def pool_window(key: PoolKey, configs: Sequence[tuple[str, IPAMConfig]]) -> tuple[IPRange, str]:
    """The window a pool's picks run over, as the first of `configs` ((source, config) pairs) of its network
    says (a node pool: its slice of the first range's window), else its bare CIDR's; and that source ("" for
    none). What `kubectl whereabouts pools` and the pool-usage controller count free addresses in."""
    from whereabouts.ranges import parse_range

    net = Network.parse(key.cidr)
    for source, cfg in configs:
        if cfg.network_name != key.network:
            continue
        if key.node and cfg.slice_prefix and cfg.ranges[0].contains(net.version, net.address):
            return within_slice(cfg.ranges[0], net.address, net.last), source
        for rng in cfg.ranges if not key.node else ():
            if rng.cidr == key.cidr:
                return rng, source
    if key.node:  # a slice's first and last addresses are ordinary hosts
        return IPRange(net.version, net.address, net.prefix, net.address, net.last, (), None), ""
    return parse_range(key.cidr, key="range"), ""


def _slice_of(cfg: IPAMConfig, slices: NodeSlices, node: str) -> tuple[str, str]:
    """(this node's slice, "") or ("", why there is none to use)."""
    name, rng, size = slice_pool_name(cfg), cfg.ranges[0], cfg.slice_prefix
    pool = slices.slice_pool(name)
    if pool is None:
        return "", f"no {slices.where(name)} for network {name} (node {node}) yet: the node-slice controller creates it"
    if _parse(pool.range) != (rng.version, rng.network, rng.prefix) or _prefix(pool.slice_size) != size:
        return "", (
            f"{pool.where} slices {pool.range} in {pool.slice_size} slices but the config of network "
            f"{name} says {rng.cidr} in /{size} (node {node}): the node-slice controller has not re-sliced yet"
        )
    for holder, slice_range in pool.listing:
        if holder == node:
            parsed = _parse(slice_range)
            if parsed and parsed[0] == rng.version and parsed[2] == size and rng.contains(rng.version, parsed[1]):
                return f"{format_address(parsed[0], parsed[1])}/{size}", ""
            return "", f"{pool.where} gives node {node} slice {slice_range!r}: re-slicing in progress"
    return "", (
        f"node {node} has no slice of network {name} (range {rng.cidr}) in {pool.where} yet: the node-slice "
        "controller assigns one when it sees the node"
    )


def _outside(sliced: PoolRange, lo: int, hi: int, requested: tuple[tuple[int, int], ...]) -> Refusal | None:
    """A requested address in the sliced range must lie in this node's slice: the rest belong to other nodes."""
    for version, ip in requested:
        if sliced.rng.contains(version, ip) and not lo <= ip <= hi:
            return Refusal(
                OUTSIDE,
                f"requested address {format_ip(version, ip)} is in range {sliced.rng.cidr} but outside slice "
                f"{sliced.key.cidr} of node {sliced.key.node}: with node slices a node allocates from its own only",
            )
    return None


def _prefix(text: object) -> int:
    body = text.strip().removeprefix("/") if isinstance(text, str) else ""
    return int(body) if body.isdecimal() else -1


def _parse(text: object) -> tuple[int, int, int] | None:
    try:
        return parse_network(text, strict=False) if isinstance(text, str) else None
    except ValueError:
        return None
