"""The abbreviated IPAM result, shaped for the request's cniVersion."""

from __future__ import annotations

from whereabouts.cni.protocol import version_tuple
from whereabouts.iptext import format_address, parse_network
from whereabouts.ranges import parse_request

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from typing import Any

    from whereabouts.config import IPAMConfig


def build_result(
    cni_version: str,
    cfg: IPAMConfig,
    addresses: Sequence[tuple[int, str]],
    *,
    gateways: Sequence[tuple[int, int]] = (),
    requested: Collection[tuple[int, int]] = (),
) -> dict[str, Any]:
    """`addresses`: (IP version, 'address/prefix') per range in config order; static addresses follow.
    `gateways` (CNI_ARGS GATEWAY=, as the Go plugin reads it) go on the static addresses and the `requested`
    ones whose subnet holds them; the other entries keep the config's `gateway`."""
    entries = [(version, address, cfg.gateway_for(version)) for version, address in addresses]
    entries += [(s.version, s.address, s.gateway) for s in cfg.addresses]
    if gateways:
        ours = [parse_request(address) in requested for _, address in addresses] + [True] * len(cfg.addresses)
        entries = [_with_gateway(entry, gateways) if mine else entry for entry, mine in zip(entries, ours, strict=True)]
    if version_tuple(cni_version) < (0, 3, 0):
        return _legacy(cni_version, cfg, entries)
    with_version = version_tuple(cni_version) < (1, 0, 0)
    ips = []
    for version, address, gateway in entries:
        ip: dict[str, Any] = {"version": str(version)} if with_version else {}
        ip["address"] = address
        if gateway:
            ip["gateway"] = gateway
        ips.append(ip)
    result: dict[str, Any] = {"cniVersion": cni_version, "ips": ips}
    if cfg.routes:
        result["routes"] = [route.as_result() for route in cfg.routes]
    if cfg.dns:
        result["dns"] = cfg.dns.as_result()
    return result


def _with_gateway(entry: tuple[int, str, str], gateways: Sequence[tuple[int, int]]) -> tuple[int, str, str]:
    version, address, gateway = entry
    ver, network, prefix = parse_network(address, strict=False)
    last = network + (1 << ((32 if ver == 4 else 128) - prefix)) - 1
    for gw_version, gw in gateways:
        if gw_version == ver and network <= gw <= last:
            gateway = format_address(gw_version, gw)
    return version, address, gateway


def _legacy(cni_version: str, cfg: IPAMConfig, entries: list[tuple[int, str, str]]) -> dict[str, Any]:
    """0.1.0/0.2.0: one `ip4` and one `ip6` object, routes filed under the family of their dst."""
    result: dict[str, Any] = {"cniVersion": cni_version}
    for family in (4, 6):
        first = next((e for e in entries if e[0] == family), None)
        if first is None:
            continue
        block: dict[str, Any] = {"ip": first[1]}
        if first[2]:
            block["gateway"] = first[2]
        routes = [route.as_result() for route in cfg.routes if route.version == family]
        if routes:
            block["routes"] = routes
        result[f"ip{family}"] = block
    if cfg.dns:
        result["dns"] = cfg.dns.as_result()
    return result
