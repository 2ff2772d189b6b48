"""Allocation rules 1-7 through the executable: windows, excludes, lowest-first, idempotence, pods, overlap."""

from __future__ import annotations

import pytest
from cni_helpers import POD_ARGS, add, failed, held

from support import netconf, run_cni

# (ipam, the addresses successive ADDs get, whether the next ADD finds the window exhausted)
WINDOWS = [
    ("lowest-first", {"range": "10.0.0.0/24"}, ["10.0.0.1/24", "10.0.0.2/24", "10.0.0.3/24"], False),
    ("slash-30", {"range": "10.0.0.0/30"}, ["10.0.0.1/30", "10.0.0.2/30"], True),
    (
        "start-end",
        {"range": "10.0.0.0/24", "range_start": "10.0.0.10", "range_end": "10.0.0.12"},
        ["10.0.0.10/24", "10.0.0.11/24", "10.0.0.12/24"],
        True,
    ),
    (
        "start-only",
        {"range": "10.0.0.0/24", "range_start": "10.0.0.252"},
        ["10.0.0.252/24", "10.0.0.253/24", "10.0.0.254/24"],
        True,
    ),
    ("end-only", {"range": "10.0.0.0/24", "range_end": "10.0.0.2"}, ["10.0.0.1/24", "10.0.0.2/24"], True),
    (
        "end-below-start-ignored",
        {"range": "10.0.0.0/24", "range_start": "10.0.0.252", "range_end": "10.0.0.5"},
        ["10.0.0.252/24", "10.0.0.253/24", "10.0.0.254/24"],
        True,
    ),
    ("START-END/PREFIX", {"range": "10.0.0.10-10.0.0.12/24"}, ["10.0.0.10/24", "10.0.0.11/24", "10.0.0.12/24"], True),
    ("START-END/PREFIX-to-broadcast", {"range": "10.0.0.253-10.0.0.255/24"}, ["10.0.0.253/24", "10.0.0.254/24"], True),
    (
        "exclude-cidr",
        {"range": "10.0.0.0/29", "exclude": ["10.0.0.0/30"]},
        ["10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"],
        True,
    ),
    (
        "exclude-bare-ip",
        {"range": "10.0.0.0/29", "exclude": ["10.0.0.1", "10.0.0.3"]},
        ["10.0.0.2/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"],
        True,
    ),
    ("exclude-a-b", {"range": "10.0.0.0/29", "exclude": ["10.0.0.2-10.0.0.5"]}, ["10.0.0.1/29", "10.0.0.6/29"], True),
    (
        "exclude-mixed",
        {"range": "10.0.0.0/28", "exclude": ["10.0.0.1", "10.0.0.2-10.0.0.4", "10.0.0.8/30"]},
        ["10.0.0.5/28", "10.0.0.6/28", "10.0.0.7/28", "10.0.0.12/28", "10.0.0.13/28", "10.0.0.14/28"],
        True,
    ),
    (
        "gateway-skipped",
        {"range": "10.0.0.0/29", "gateway": "10.0.0.1"},
        ["10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"],
        True,
    ),
    ("gateway-mid-window", {"range": "10.0.0.0/24", "gateway": "10.0.0.2"}, ["10.0.0.1/24", "10.0.0.3/24"], False),
    (
        "ipv4-dot-0-skipped",
        {"range": "10.0.0.0/23", "range_start": "10.0.0.255"},
        ["10.0.0.255/23", "10.0.1.1/23", "10.0.1.2/23"],
        False,
    ),
    (
        "ipv4-dot-0-skipped-wide",
        {"range": "10.0.0.0/8", "range_start": "10.0.255.254"},
        ["10.0.255.254/8", "10.0.255.255/8", "10.1.0.1/8"],
        False,
    ),
    ("ipv6-/32", {"range": "2001:db8::/32"}, ["2001:db8::1/32", "2001:db8::2/32"], False),
    (
        "ipv6-/64-high-start",
        {"range": "2001:db8::/64", "range_start": "2001:db8::ffff:ffff:ffff:fffd"},
        ["2001:db8::ffff:ffff:ffff:fffd/64", "2001:db8::ffff:ffff:ffff:fffe/64"],
        True,
    ),
    (
        "ipv6-/16-end",
        {"range": "fd00::/16", "range_start": "fd00:ffff:ffff:ffff:ffff:ffff:ffff:fffe"},
        ["fd00:ffff:ffff:ffff:ffff:ffff:ffff:fffe/16"],
        True,
    ),
    (
        "ipv6-zero-suffix-allowed",
        {"range": "fd00::/64", "range_start": "fd00::ff"},
        ["fd00::ff/64", "fd00::100/64"],
        False,
    ),
    ("ipv6-exclude", {"range": "fd00::/120", "exclude": ["fd00::/121", "fd00::80-fd00::fd"]}, ["fd00::fe/120"], True),
    ("ipv6-START-END", {"range": "fd00::10-fd00::11/64"}, ["fd00::10/64", "fd00::11/64"], True),
]


@pytest.mark.parametrize(("ipam", "expected", "exhausted"), [w[1:] for w in WINDOWS], ids=[w[0] for w in WINDOWS])
def test_successive_adds_pick_the_lowest_free_address_in_the_window(tmp_path, ipam, expected, exhausted):
    conf = netconf(tmp_path, **ipam)
    got = [add(conf, f"c{i}")[0] for i in range(len(expected))]
    assert got == expected
    if exhausted:
        failed(run_cni("ADD", conf, container_id="one-too-many"), 101)
        assert len(held(tmp_path)) == len(expected)


def test_freed_lowest_address_is_picked_again(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    for cid in ("a", "b", "c"):
        add(conf, cid)
    run_cni("DEL", conf, container_id="b")
    assert add(conf, "d") == ["10.0.0.2/24"]
    assert add(conf, "e") == ["10.0.0.4/24"]


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "1.0.0"], ids=str)
def test_add_is_idempotent_per_attachment(tmp_path, version):
    conf = netconf(tmp_path, version, ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    first = run_cni("ADD", conf, container_id="a")
    again = run_cni("ADD", conf, container_id="a")
    assert first.returncode == again.returncode == 0
    assert again.json == first.json
    assert held(tmp_path) == [("10.0.0.1", "a", "eth0"), ("fd00::1", "a", "eth0")]
    # another interface of the same container is another attachment
    assert add(netconf(tmp_path, ipRanges=[{"range": "10.0.0.0/24"}]), "a", ifname="net1") == ["10.0.0.2/24"]


def test_recreated_pod_keeps_its_address_and_a_late_del_does_not_free_it(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    assert add(conf, "old-ctr", cni_args=POD_ARGS) == ["10.0.0.1/24"]
    assert add(conf, "other", cni_args="IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-1") == ["10.0.0.2/24"]
    assert add(conf, "new-ctr", cni_args=POD_ARGS) == ["10.0.0.1/24"]
    assert held(tmp_path) == [("10.0.0.1", "new-ctr", "eth0"), ("10.0.0.2", "other", "eth0")]
    late = run_cni("DEL", conf, container_id="old-ctr", cni_args=POD_ARGS)
    assert (late.returncode, late.stdout) == (0, "")
    assert held(tmp_path) == [("10.0.0.1", "new-ctr", "eth0"), ("10.0.0.2", "other", "eth0")]
    assert add(conf, "someone-else") == ["10.0.0.3/24"]


@pytest.mark.parametrize(
    "cni_args",
    [
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=other-ns;K8S_POD_NAME=web-0",
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-00",
        "",
    ],
    ids=["other-namespace", "other-name", "no-pod"],
)
def test_another_pod_does_not_take_over_the_address(tmp_path, cni_args):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    add(conf, "old-ctr", cni_args=POD_ARGS)
    assert add(conf, "new-ctr", cni_args=cni_args) == ["10.0.0.2/24"]


def test_same_pod_other_interface_gets_its_own_address(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    add(conf, "old-ctr", cni_args=POD_ARGS, ifname="net1")
    assert add(conf, "new-ctr", cni_args=POD_ARGS, ifname="net2") == ["10.0.0.2/24"]


# (ipam of config A, ipam of config B, addresses of A, B, A, B on alternating ADDs)
DOMAINS = [
    (
        "overlap-same-network",
        {"range": "10.5.0.0/24"},
        {"range": "10.5.0.0/25"},
        ["10.5.0.1/24", "10.5.0.2/25", "10.5.0.3/24", "10.5.0.4/25"],
    ),
    (
        "overlap-named-network",
        {"range": "10.5.0.0/24", "network_name": "blue"},
        {"range": "10.5.0.0/25", "network_name": "blue"},
        ["10.5.0.1/24", "10.5.0.2/25", "10.5.0.3/24", "10.5.0.4/25"],
    ),
    (
        "overlap-ipv6",
        {"range": "fd00::/64"},
        {"range": "fd00::/120"},
        ["fd00::1/64", "fd00::2/120", "fd00::3/64", "fd00::4/120"],
    ),
    (
        "network_name-independent",
        {"range": "10.5.0.0/24", "network_name": "blue"},
        {"range": "10.5.0.0/24", "network_name": "red"},
        ["10.5.0.1/24", "10.5.0.1/24", "10.5.0.2/24", "10.5.0.2/24"],
    ),
    (
        "overlap-disabled",
        {"range": "10.5.0.0/24", "enable_overlapping_ranges": False},
        {"range": "10.5.0.0/25", "enable_overlapping_ranges": False},
        ["10.5.0.1/24", "10.5.0.1/25", "10.5.0.2/24", "10.5.0.2/25"],
    ),
]


@pytest.mark.parametrize(("ipam_a", "ipam_b", "expected"), [d[1:] for d in DOMAINS], ids=[d[0] for d in DOMAINS])
def test_allocation_domains(tmp_path, ipam_a, ipam_b, expected):
    confs = [netconf(tmp_path, **ipam_a), netconf(tmp_path, **ipam_b)]
    got = [add(confs[i % 2], f"c{i}")[0] for i in range(len(expected))]
    assert got == expected


def test_del_through_one_overlapping_range_frees_the_address_for_the_other(tmp_path):
    wide, narrow = netconf(tmp_path, range="10.5.0.0/24"), netconf(tmp_path, range="10.5.0.0/25")
    assert add(wide, "a") == ["10.5.0.1/24"]
    assert add(narrow, "b") == ["10.5.0.2/25"]
    assert run_cni("DEL", wide, container_id="a").returncode == 0
    assert add(narrow, "c") == ["10.5.0.1/25"]


def test_an_overlapping_range_is_exhausted_by_the_other_ranges_allocations(tmp_path):
    wide, narrow = netconf(tmp_path, range="10.5.0.0/29"), netconf(tmp_path, range="10.5.0.0/30")
    assert add(narrow, "n0") == ["10.5.0.1/30"]
    assert add(wide, "w0") == ["10.5.0.2/29"]
    error = failed(run_cni("ADD", narrow, container_id="n1"), 101)
    assert "10.5.0.0/30" in error["msg"] and "n1" in error["msg"]
    assert add(wide, "w1") == ["10.5.0.3/29"]
    addresses = [a for a, _, _ in held(tmp_path)]
    assert sorted(addresses) == ["10.5.0.1", "10.5.0.2", "10.5.0.3"]
