"""The ADD result in every CNI spec version: exact shape, routes/dns passthrough, gateway, order."""

from __future__ import annotations

import pytest
from cni_helpers import add

from support import netconf, run_cni

ROUTES = [{"dst": "0.0.0.0/0"}, {"dst": "fd00:1::/64", "gw": "fd00::fe"}]
DNS = {"nameservers": ["10.1.0.53"], "domain": "example.test", "search": ["example.test"]}
DUAL = {
    "range": "10.1.0.0/24",
    "ipRanges": [{"range": "fd00::/64"}],
    "gateway": "10.1.0.1",
    "routes": ROUTES,
    "dns": DNS,
    "addresses": [{"address": "192.168.9.9/24", "gateway": "192.168.9.1"}],
}


def _legacy(version: str) -> dict:
    return {
        "cniVersion": version,
        "ip4": {"ip": "10.1.0.2/24", "gateway": "10.1.0.1", "routes": [ROUTES[0]]},
        "ip6": {"ip": "fd00::1/64", "routes": [ROUTES[1]]},
        "dns": DNS,
    }


def _ips(version: str, with_version: bool) -> dict:
    ips = [
        {"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1"},
        {"version": "6", "address": "fd00::1/64"},
        {"version": "4", "address": "192.168.9.9/24", "gateway": "192.168.9.1"},
    ]
    if not with_version:
        ips = [{k: v for k, v in ip.items() if k != "version"} for ip in ips]
    return {"cniVersion": version, "ips": ips, "routes": ROUTES, "dns": DNS}


EXPECTED = {
    "0.1.0": _legacy("0.1.0"),
    "0.2.0": _legacy("0.2.0"),
    "0.3.0": _ips("0.3.0", True),
    "0.3.1": _ips("0.3.1", True),
    "0.4.0": _ips("0.4.0", True),
    "1.0.0": _ips("1.0.0", False),
    "1.1.0": _ips("1.1.0", False),
}


@pytest.mark.parametrize("version", list(EXPECTED), ids=list(EXPECTED))
def test_dual_stack_result_has_the_exact_shape_of_the_version(tmp_path, version):
    result = run_cni("ADD", netconf(tmp_path, version, **DUAL))
    assert result.returncode == 0, result.stdout
    assert result.json == EXPECTED[version]


MINIMAL = [
    ("0.1.0", {"range": "10.1.0.0/24"}, {"cniVersion": "0.1.0", "ip4": {"ip": "10.1.0.1/24"}}),
    ("0.2.0", {"range": "fd00::/64"}, {"cniVersion": "0.2.0", "ip6": {"ip": "fd00::1/64"}}),
    ("0.3.1", {"range": "10.1.0.0/24"}, {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.1/24"}]}),
    ("0.4.0", {"range": "fd00::/64"}, {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "fd00::1/64"}]}),
    ("1.0.0", {"range": "10.1.0.0/24"}, {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.1/24"}]}),
]


@pytest.mark.parametrize(("version", "ipam", "expected"), MINIMAL, ids=[f"{v}-{i['range']}" for v, i, _ in MINIMAL])
def test_no_routes_dns_or_gateway_means_no_such_keys(tmp_path, version, ipam, expected):
    result = run_cni("ADD", netconf(tmp_path, version, **ipam))
    assert result.returncode == 0, result.stdout
    assert result.json == expected


GATEWAYS = [
    (
        "10.1.0.1",
        [("10.1.0.2/24", "10.1.0.1"), ("10.2.0.1/24", "10.1.0.1"), ("fd00::1/64", None)],
    ),
    (
        "fd00::1",
        [("10.1.0.1/24", None), ("10.2.0.1/24", None), ("fd00::2/64", "fd00::1")],
    ),
]


@pytest.mark.parametrize(("gateway", "expected"), GATEWAYS, ids=["ipv4-gateway", "ipv6-gateway"])
def test_gateway_goes_on_each_address_of_its_family_and_is_never_handed_out(tmp_path, gateway, expected):
    ranges = [{"range": "10.1.0.0/24"}, {"range": "10.2.0.0/24"}, {"range": "fd00::/64"}]
    result = run_cni("ADD", netconf(tmp_path, "1.0.0", ipRanges=ranges, gateway=gateway))
    assert result.returncode == 0, result.stdout
    assert [(ip["address"], ip.get("gateway")) for ip in result.json["ips"]] == expected


def test_one_entry_per_range_in_config_order_then_static_addresses(tmp_path):
    conf = netconf(
        tmp_path,
        "1.0.0",
        range="fd00:9::/64",  # the top-level range comes first
        ipRanges=[{"range": "10.9.0.0/24"}, {"range": "10.2.0.0/24"}, {"range": "fd00:1::/64"}],
        addresses=[{"address": "172.16.0.5/16"}, {"address": "fd00:ff::5/64"}],
    )
    assert add(conf, "c1") == [
        "fd00:9::1/64",
        "10.9.0.1/24",
        "10.2.0.1/24",
        "fd00:1::1/64",
        "172.16.0.5/16",
        "fd00:ff::5/64",
    ]


@pytest.mark.parametrize("version", ["0.3.1", "1.0.0"], ids=["0.3.1", "1.0.0"])
def test_dual_stack_allocates_one_address_of_each_family_per_call(tmp_path, version):
    conf = netconf(tmp_path, version, ipRanges=[{"range": "10.3.0.0/24"}, {"range": "fd03::/64"}])
    assert add(conf, "a") == ["10.3.0.1/24", "fd03::1/64"]
    assert add(conf, "b") == ["10.3.0.2/24", "fd03::2/64"]
