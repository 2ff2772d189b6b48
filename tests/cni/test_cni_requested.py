"""Requested addresses (rule 4) through every channel: runtimeConfig.ips, args.cni.ips, CNI_ARGS IP=."""

from __future__ import annotations

from typing import Any

import pytest
from cni_helpers import add, failed, held

from support import netconf, run_cni


def request(conf: dict[str, Any], source: str, ips: list[str]) -> tuple[dict[str, Any], str]:
    """The config and CNI_ARGS that ask for `ips` through `source`."""
    if source == "runtimeConfig":
        return {**conf, "runtimeConfig": {"ips": ips}}, ""
    if source == "args":
        return {**conf, "args": {"cni": {"ips": ips}}}, ""
    return conf, "IgnoreUnknown=true;IP=" + ",".join(ips)


SOURCES = ["runtimeConfig", "args", "CNI_ARGS"]

# (ipam, requested, the next automatic pick after it)
PLACES = [
    ({"range": "10.0.0.0/24"}, "10.0.0.1", "10.0.0.2"),
    ({"range": "10.0.0.0/24"}, "10.0.0.77/24", "10.0.0.1"),
    ({"range": "10.0.0.0/24", "exclude": ["10.0.0.0/28"]}, "10.0.0.5", "10.0.0.16"),
    ({"range": "10.0.0.0/24", "exclude": ["10.0.0.5"]}, "10.0.0.5", "10.0.0.1"),
    ({"range": "10.0.0.0/24", "range_start": "10.0.0.100"}, "10.0.0.3", "10.0.0.100"),
    ({"range": "10.0.0.0/24", "range_start": "10.0.0.10", "range_end": "10.0.0.20"}, "10.0.0.200", "10.0.0.10"),
    ({"range": "10.0.0.10-10.0.0.20/24"}, "10.0.0.2", "10.0.0.10"),
    ({"range": "10.0.0.0/24", "gateway": "10.0.0.1"}, "10.0.0.2", "10.0.0.3"),
    ({"range": "10.0.1.0/24"}, "10.0.1.0", None),  # the network address of the range: never, not even on request
    ({"range": "10.0.0.0/23"}, "10.0.1.0", "10.0.0.1"),  # .0 never auto-assigned, but may be requested
    ({"range": "fd00::/64", "exclude": ["fd00::/120"]}, "fd00::7", "fd00::100"),
]
PLACE_IDS = [
    "lowest",
    "with-prefix",
    "in-exclude-cidr",
    "in-exclude-ip",
    "below-range_start",
    "above-range_end",
    "outside-START-END",
    "beside-gateway",
    "network-address",
    "dot-zero-in-/23",
    "ipv6-in-exclude",
]


@pytest.mark.parametrize("source", SOURCES, ids=SOURCES)
@pytest.mark.parametrize(("ipam", "ip", "next_auto"), PLACES, ids=PLACE_IDS)
def test_requested_address_is_reserved(tmp_path, source, ipam, ip, next_auto):
    conf = netconf(tmp_path, **ipam)
    with_request, cni_args = request(conf, source, [ip])
    result = run_cni("ADD", with_request, container_id="req", cni_args=cni_args)
    address = ip.split("/")[0]
    if next_auto is None:  # the network address is never handed out, even on request
        failed(result, 103)
        assert held(tmp_path) == []
        return
    assert result.returncode == 0, result.stdout
    prefix = ipam["range"].rsplit("/", 1)[1]
    assert result.addresses() == [f"{address}/{prefix}"]
    assert held(tmp_path) == [(address, "req", "eth0")]
    # idempotent: asking again returns the same address, nothing more is held
    assert add(with_request, "req", cni_args=cni_args) == [f"{address}/{prefix}"]
    assert add(conf, "auto") == [f"{next_auto}/{prefix}"]
    # another attachment cannot take it
    failed(run_cni("ADD", with_request, container_id="other", cni_args=cni_args), 102)


@pytest.mark.parametrize("source", SOURCES, ids=SOURCES)
def test_other_ranges_still_allocate_automatically(tmp_path, source):
    conf = netconf(tmp_path, ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}, {"range": "10.1.0.0/24"}])
    with_request, cni_args = request(conf, source, ["fd00::99"])
    assert add(with_request, "a", cni_args=cni_args) == ["10.0.0.1/24", "fd00::99/64", "10.1.0.1/24"]
    with_request, cni_args = request(conf, source, ["10.1.0.50", "10.0.0.60"])
    assert add(with_request, "b", cni_args=cni_args) == ["10.0.0.60/24", "fd00::1/64", "10.1.0.50/24"]


@pytest.mark.parametrize("source", ["runtimeConfig", "args"], ids=["runtimeConfig", "args"])
def test_runtime_config_and_args_win_over_cni_args(tmp_path, source):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    with_request, _ = request(conf, source, ["10.0.0.7"])
    assert add(with_request, "a", cni_args="IgnoreUnknown=true;IP=10.0.0.8") == ["10.0.0.7/24"]
    assert held(tmp_path) == [("10.0.0.7", "a", "eth0")]


def test_cni_args_ip_needs_no_ignore_unknown(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    assert add(conf, "a", cni_args="IP=10.0.0.9") == ["10.0.0.9/24"]


def test_requested_address_held_through_an_overlapping_range_is_taken(tmp_path):
    wide = netconf(tmp_path, range="10.5.0.0/24")
    narrow = netconf(tmp_path, range="10.5.0.0/25")
    assert add({**wide, "runtimeConfig": {"ips": ["10.5.0.9"]}}, "a") == ["10.5.0.9/24"]
    error = failed(run_cni("ADD", {**narrow, "runtimeConfig": {"ips": ["10.5.0.9"]}}, container_id="b"), 102)
    assert "10.5.0.9" in error["msg"] and "a" in error["msg"]
    assert held(tmp_path) == [("10.5.0.9", "a", "eth0")]


def test_released_requested_address_can_be_requested_again(tmp_path):
    conf = {**netconf(tmp_path, range="10.0.0.0/24"), "runtimeConfig": {"ips": ["10.0.0.42"]}}
    add(conf, "a")
    assert run_cni("DEL", conf, container_id="a").returncode == 0
    assert add(conf, "b") == ["10.0.0.42/24"]
