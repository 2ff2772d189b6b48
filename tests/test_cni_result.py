"""The IPAM result's shape per CNI version, from `build_result` directly: 0.1.0/0.2.0 one `ip4` and one `ip6`
block with the routes of their family, 0.3.x/0.4.0 `ips[]` with `version`, 1.x `ips[]` without; one entry
per range in config order, then the static `addresses`; the gateway on each address of its family only.
(tests/cni/test_cni_versions.py checks the same shapes end to end, through the executable.)"""

from __future__ import annotations

from typing import Any

import pytest

from whereabouts.cni.protocol import SUPPORTED_VERSIONS
from whereabouts.cni.result import build_result
from whereabouts.config import parse_ipam

ROUTES = [{"dst": "0.0.0.0/0"}, {"dst": "fd00:1::/64", "gw": "fd00::fe"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.9"}]
DNS = {"nameservers": ["10.1.0.53"], "domain": "example.test", "search": ["example.test"], "options": ["ndots:2"]}
STATIC = [{"address": "192.168.9.9/24", "gateway": "192.168.9.1"}, {"address": "fd09::9/64"}]
ALLOCATED = [(4, "10.1.0.2/24"), (6, "fd00::1/64"), (4, "10.2.0.1/24")]  # per range, in config order
LEGACY = ("0.1.0", "0.2.0")
WITH_VERSION = ("0.3.0", "0.3.1", "0.4.0")
CURRENT = ("1.0.0", "1.1.0")


def config(**ipam: Any):
    return parse_ipam({"type": "whereabouts", "range": "10.1.0.0/24", **ipam}, "net")


def full() -> Any:
    return config(gateway="10.1.0.1", routes=ROUTES, dns=DNS, addresses=STATIC)


def test_the_version_families_cover_every_supported_version() -> None:
    assert sorted(LEGACY + WITH_VERSION + CURRENT) == sorted(SUPPORTED_VERSIONS)


@pytest.mark.parametrize("version", LEGACY, ids=LEGACY)
def test_legacy_result_has_one_block_per_family_with_its_routes(version: str) -> None:
    assert build_result(version, full(), ALLOCATED) == {
        "cniVersion": version,
        "ip4": {"ip": "10.1.0.2/24", "gateway": "10.1.0.1", "routes": [ROUTES[0], ROUTES[2]]},
        "ip6": {"ip": "fd00::1/64", "routes": [ROUTES[1]]},
        "dns": DNS,
    }


@pytest.mark.parametrize("version", LEGACY, ids=LEGACY)
def test_legacy_result_omits_a_family_without_an_address_and_its_routes(version: str) -> None:
    result = build_result(version, config(routes=ROUTES), [(4, "10.1.0.2/24")])
    assert result == {"cniVersion": version, "ip4": {"ip": "10.1.0.2/24", "routes": [ROUTES[0], ROUTES[2]]}}


@pytest.mark.parametrize("version", LEGACY, ids=LEGACY)
def test_legacy_result_with_static_addresses_only_after_the_ranges(version: str) -> None:
    """A legacy block holds one address: the first range's; a static address shows only in a family that
    no range fills."""
    result = build_result(version, config(addresses=STATIC), [(4, "10.1.0.2/24")])
    assert result == {"cniVersion": version, "ip4": {"ip": "10.1.0.2/24"}, "ip6": {"ip": "fd09::9/64"}}


@pytest.mark.parametrize("version", WITH_VERSION + CURRENT, ids=WITH_VERSION + CURRENT)
def test_ips_per_range_in_order_then_static_addresses(version: str) -> None:
    ips = [
        {"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1"},
        {"version": "6", "address": "fd00::1/64"},
        {"version": "4", "address": "10.2.0.1/24", "gateway": "10.1.0.1"},
        {"version": "4", "address": "192.168.9.9/24", "gateway": "192.168.9.1"},  # its own gateway
        {"version": "6", "address": "fd09::9/64"},
    ]
    if version in CURRENT:  # 1.0.0 dropped `version` from each entry
        ips = [{key: value for key, value in ip.items() if key != "version"} for ip in ips]
    assert build_result(version, full(), ALLOCATED) == {"cniVersion": version, "ips": ips, "routes": ROUTES, "dns": DNS}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS, ids=SUPPORTED_VERSIONS)
def test_no_routes_dns_or_gateway_means_no_such_keys(version: str) -> None:
    result = build_result(version, config(), [(4, "10.1.0.2/24")])
    expected_ip: dict[str, Any]
    if version in LEGACY:
        assert result == {"cniVersion": version, "ip4": {"ip": "10.1.0.2/24"}}
        return
    expected_ip = {"version": "4", "address": "10.1.0.2/24"} if version in WITH_VERSION else {"address": "10.1.0.2/24"}
    assert result == {"cniVersion": version, "ips": [expected_ip]}


@pytest.mark.parametrize(
    "gateway, expected",
    [("10.1.0.1", ["10.1.0.1", None, "10.1.0.1"]), ("fd00::fe", [None, "fd00::fe", None])],
    ids=["ipv4-gateway", "ipv6-gateway"],
)
def test_the_gateway_goes_on_each_address_of_its_family_only(gateway: str, expected: list[str | None]) -> None:
    result = build_result("1.0.0", config(gateway=gateway), ALLOCATED)
    assert [ip.get("gateway") for ip in result["ips"]] == expected
