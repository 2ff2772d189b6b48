"""Sticky addresses: the config keys (`sticky`, `sticky_retention`, `reservations`, `allowPersistentIPs`) and
the keys an address sticks to. See docs/sticky.md.

A key is text: "pod:<namespace>/<name>/<ifname>", "mac:<mac>" (lower case, colon-separated) or
"claim:<namespace>/<IPAMClaim name>". A fixed reservation's key names a pod without the interface
("pod:<namespace>/<name>") or a MAC.
"""

from __future__ import annotations

from whereabouts.errors import InvalidConfig, shown
from whereabouts.ranges import RangeIndex, format_ip, parse_ip
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from whereabouts.ranges import IPRange

MODES = ("pod", "mac", "claim")
DEFAULT_RETENTION = 24 * 3600  # seconds an address waits for its pod or MAC after the last DEL
_UNITS = {"h": 3600, "m": 60, "s": 1}
MAX_DURATION = 10**12  # seconds (some 31,700 years): longer is absurd, and `expires` (now + it) must fit an int64


@record(frozen=True)
class FixedReservation:
    """`reservations` entry: the address (IP version, value) that only `key` ever gets."""

    version: int
    ip: int
    key: str  # "pod:<namespace>/<name>" or "mac:<mac>"

    @property
    def address(self) -> str:
        return format_ip(self.version, self.ip)


def parse_mode(raw: Mapping[str, Any], datastore: str) -> str:
    """`sticky` ("" when unset); `allowPersistentIPs: true` (KubeVirt's knob, at the top of the network config
    or under ipam) means `claim`."""
    mode = raw.get("sticky")
    persistent = raw.get("allowPersistentIPs")
    if persistent not in (None, True, False):
        raise InvalidConfig(f"invalid allowPersistentIPs {shown(persistent)}: expected true or false")
    if mode is None or mode == "":
        mode = "claim" if persistent else ""
    if not isinstance(mode, str) or (mode and mode not in MODES):  # (false, 0, {} are no way to say "off")
        raise InvalidConfig(f"invalid sticky {shown(mode)}: expected one of {', '.join(MODES)}")
    if persistent and mode != "claim":
        raise InvalidConfig(f"invalid sticky {shown(mode)}: allowPersistentIPs true means sticky claim")
    if mode == "claim" and datastore != "kubernetes":
        raise InvalidConfig(
            f"invalid sticky 'claim': IPAMClaims live in Kubernetes, so they need the kubernetes datastore, not "
            f"{datastore}"
        )
    return str(mode)


def parse_retention(raw: Mapping[str, Any]) -> int:
    """`sticky_retention`, a Go duration ('72h', '1h30m', '90s') or a number of seconds; in seconds."""
    value = raw.get("sticky_retention")
    if value is None or value == "":
        return DEFAULT_RETENTION
    seconds = parse_duration(value)
    if seconds is None or seconds <= 0:
        raise InvalidConfig(
            f"invalid sticky_retention {shown(value)}: expected a positive duration such as '72h', '1h30m' or '90s'"
        )
    return seconds


def parse_duration(value: object) -> int | None:
    """Whole seconds of a Go-style duration made of h, m and s parts, or of a number; None if malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if value == value and abs(value) < MAX_DURATION else None  # not NaN, not absurd
    if not isinstance(value, str) or not value or len(value) > 32:
        return None
    total, digits = 0.0, ""
    for char in value:
        if char in "0123456789.":
            digits += char
        elif char in _UNITS and digits and digits.count(".") <= 1 and digits != ".":
            total += float(digits) * _UNITS[char]
            digits = ""
        else:
            return None
    return None if digits or total >= MAX_DURATION else int(total)


def parse_reservations(raw: Mapping[str, Any], ranges: tuple[IPRange, ...]) -> tuple[FixedReservation, ...]:
    """`reservations`: [{address, pod | mac}]; each address inside a configured range, each address and each key
    listed once."""
    listed = raw.get("reservations")
    if listed is None:
        return ()
    if not isinstance(listed, list):
        raise InvalidConfig(f"invalid reservations {shown(listed)}: expected a list of {{address, pod | mac}}")
    index = RangeIndex(ranges)
    parsed: list[FixedReservation] = []
    for item in listed:
        if not isinstance(item, dict) or not isinstance(item.get("address"), str) or ("pod" in item) == ("mac" in item):
            raise InvalidConfig(f"invalid reservations entry {shown(item)}: expected an address and one of pod, mac")
        try:
            version, ip = parse_ip(item["address"])
        except ValueError:
            shown_address = shown(item["address"])
            raise InvalidConfig(f"invalid reservations address {shown_address}: expected an IP address") from None
        position = index.first(version, ip)
        if position is None or ranges[position].is_edge(ip):
            raise InvalidConfig(
                f"invalid reservations address {shown(item['address'])}: not a usable address of any configured range"
            )
        key = _pod_key(item["pod"]) if "pod" in item else "mac:" + _mac(item["mac"], "reservations mac")
        for other in parsed:
            if (other.version, other.ip) == (version, ip) or other.key == key:
                raise InvalidConfig(f"invalid reservations entry {shown(item)}: its address or key is listed twice")
        parsed.append(FixedReservation(version, ip, key))
    return tuple(parsed)


def _pod_key(value: object) -> str:
    from whereabouts.names import is_namespace, is_object_name

    namespace, _, name = value.partition("/") if isinstance(value, str) else ("", "", "")
    if not is_namespace(namespace) or not is_object_name(name):
        raise InvalidConfig(f"invalid reservations pod {shown(value)}: expected '<namespace>/<name>'")
    return f"pod:{namespace}/{name}"


def call_mac(netconf: Mapping[str, Any], cni_args: Mapping[str, str]) -> str:
    """The interface's MAC for this call: runtimeConfig.mac (Multus's `mac` capability), else CNI_ARGS MAC;
    normalised, "" when neither says."""
    runtime = netconf.get("runtimeConfig")
    value = runtime.get("mac") if isinstance(runtime, dict) else None
    source = "runtimeConfig.mac"
    if not value:
        value, source = cni_args.get("MAC"), "CNI_ARGS MAC"
    return _mac(value, source) if value else ""


def _mac(value: object, source: str) -> str:
    """Lower case, colon-separated: 'AA-BB-...' and 'aabb.ccdd.eeff' name the same interface as 'aa:bb:...'."""
    text = value.lower().replace("-", "").replace(":", "").replace(".", "") if isinstance(value, str) else ""
    if len(text) not in (12, 16, 40) or text.strip("0123456789abcdef"):
        raise InvalidConfig(f"invalid {source} {shown(value)}: expected a MAC address such as 02:00:00:00:00:01")
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def call_key(mode: str, podref: str, ifname: str, mac: str, claim: str = "") -> str:
    """The key this call's address sticks to under `mode`; InvalidConfig when the call does not carry it."""
    if mode == "pod":
        if not podref:
            raise InvalidConfig("sticky pod: the call names no pod (K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS)")
        return f"pod:{podref}/{ifname}"
    if mode == "mac":
        if not mac:
            raise InvalidConfig(
                "sticky mac: the call carries no MAC (runtimeConfig.mac from the network's `mac` capability, or "
                "CNI_ARGS MAC=)"
            )
        return f"mac:{mac}"
    if mode == "claim":
        return f"claim:{claim}"
    return ""


def fixed_for(reservations: tuple[FixedReservation, ...], podref: str, mac: str) -> tuple[FixedReservation, ...]:
    """The fixed reservations naming this call's pod or MAC."""
    keys = {f"pod:{podref}" if podref else "", f"mac:{mac}" if mac else ""} - {""}
    return tuple(r for r in reservations if r.key in keys)
