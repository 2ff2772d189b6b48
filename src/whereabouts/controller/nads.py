"""Which networks the NetworkAttachmentDefinitions slice (Fast IPAM), read from the NADs as listed. No I/O.

A NAD's `spec.config` is a JSON string: one plugin config with an `ipam` object, or a conflist whose
`plugins[]` holds one. A network is sliced when the whereabouts ipam object sets `node_slice_size`; its
NodeSlicePool is named after `network_name`, else the network config's `name` (as the Go plugin names it).
Several NADs, in any namespaces, may name one network: they must agree on its range, slice size and
`network_name`. When they do not, the oldest NAD's settings are used and the others are reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from whereabouts.controller.slicing import Geometry, geometry
from whereabouts.errors import InvalidConfig
from whereabouts.names import require_object_name
from whereabouts.ranges import parse_range

NAD_GROUP = "k8s.cni.cncf.io"
NAD_VERSION = "v1"
NADS = "network-attachment-definitions"


@dataclass(frozen=True)
class SlicedNetwork:
    name: str  # the NodeSlicePool's
    network_name: str  # the ipam `network_name`, "" allowed: node pools are `[<network_name>-]<node>-<slice>`
    range: str  # the CIDR of the network's first range: the one sliced, as in the Go plugin
    slice_size: str  # as the NAD wrote it ("/24" or "24")
    geometry: Geometry
    nads: tuple[str, ...]  # "<namespace>/<name>" of every NAD that names the network, oldest first


@dataclass(frozen=True)
class NADProblem:
    nad: dict[str, Any]
    reason: str  # the Event's reason
    message: str


@dataclass(frozen=True)
class NADNetworks:
    sliced: dict[str, SlicedNetwork]
    problems: list[NADProblem]
    network_names: set[str]  # every ipam network_name the NADs use, sliced or not


def whereabouts_ipam(config: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(the network config's name, the whereabouts ipam object) of a NAD's config, None if it has none."""
    plugins = config.get("plugins")
    for plugin in plugins if isinstance(plugins, list) else [config]:
        ipam = plugin.get("ipam") if isinstance(plugin, Mapping) else None
        if isinstance(ipam, Mapping) and ipam.get("type") == "whereabouts":
            return str(config.get("name") or plugin.get("name") or ""), ipam
    return None


def nad_config(nad: Mapping[str, Any]) -> Any:
    """A NAD's `spec.config` decoded ({} when it has none). InvalidConfig when it is not JSON, or is nested deeper
    than the decoder goes: any tenant can write one, and a controller reading every namespace's must go on."""
    spec = nad.get("spec")
    text = spec.get("config") if isinstance(spec, Mapping) else None
    try:
        return json.loads(text or "{}")
    except (ValueError, RecursionError) as exc:
        raise InvalidConfig(f"spec.config is not JSON: {exc}") from None


def read_nads(nads: Sequence[dict[str, Any]]) -> NADNetworks:
    result = NADNetworks({}, [], set())
    for nad in sorted(nads, key=_age):
        try:
            parsed = _sliced(nad, result.network_names)
        except InvalidConfig as exc:
            result.problems.append(NADProblem(nad, "InvalidNodeSliceConfig", f"{_ref(nad)}: {exc.msg}"))
            continue
        if parsed is not None:
            _merge(result, nad, parsed)
    return result


def _sliced(nad: dict[str, Any], network_names: set[str]) -> SlicedNetwork | None:
    config = nad_config(nad)
    found = whereabouts_ipam(config) if isinstance(config, Mapping) else None
    if found is None:
        return None
    netconf_name, ipam = found
    network_name = ipam.get("network_name") or ""
    if not isinstance(network_name, str):
        raise InvalidConfig(f"invalid network_name {network_name!r}: expected a string")
    network_names.add(network_name)
    size = ipam.get("node_slice_size")
    if not size:
        return None
    name = network_name or netconf_name
    if not isinstance(size, str) or not name:
        raise InvalidConfig(f"invalid node_slice_size {size!r} (network {name!r}): expected '/N' and a network name")
    require_object_name(name, "network_name" if network_name else "name", name)  # it names the NodeSlicePool
    cidr = _first_range(ipam).cidr
    try:
        geo = geometry(cidr, size)
    except ValueError as exc:
        raise InvalidConfig(f"network {name}: {exc}") from None
    return SlicedNetwork(name, network_name, cidr, size, geo, (_ref(nad),))


def _first_range(ipam: Mapping[str, Any]) -> Any:
    spec = ipam.get("range")
    ip_ranges = ipam.get("ipRanges")
    if not spec and isinstance(ip_ranges, list) and ip_ranges and isinstance(ip_ranges[0], Mapping):
        spec = ip_ranges[0].get("range")
    if not spec:
        raise InvalidConfig("node_slice_size is set but there is no range to slice")
    return parse_range(spec, key="range")


def _merge(result: NADNetworks, nad: dict[str, Any], parsed: SlicedNetwork) -> None:
    known = result.sliced.get(parsed.name)
    if known is None:
        result.sliced[parsed.name] = parsed
    elif (known.geometry, known.network_name) == (parsed.geometry, parsed.network_name):
        result.sliced[parsed.name] = SlicedNetwork(**{**known.__dict__, "nads": (*known.nads, *parsed.nads)})
    else:
        message = (
            f"{_ref(nad)} slices network {parsed.name} as {parsed.range} in {parsed.slice_size} slices "
            f"(network_name {parsed.network_name!r}), but {known.nads[0]}, which is older, says {known.range} in "
            f"{known.slice_size} slices (network_name {known.network_name!r}); the older one's settings are used"
        )
        result.problems.append(NADProblem(nad, "NodeSliceConfigMismatch", message))


def _age(nad: dict[str, Any]) -> tuple[str, str]:
    return nad.get("metadata", {}).get("creationTimestamp", ""), _ref(nad)


def _ref(nad: dict[str, Any]) -> str:
    meta = nad.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
