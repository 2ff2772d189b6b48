"""Slicing a range and assigning slices to nodes: pure, so every rule is a table case here."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest

from whereabouts.controller.slicing import LISTED_SLICES, geometry, parse_slice_size, plan_slices, pool_node


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def uses(**by_node: list[str]) -> dict[str, list[int]]:
    return {node: [ip(a) for a in addresses] for node, addresses in by_node.items()}


@pytest.mark.parametrize(
    ("text", "bits", "expected"),
    [("/24", 32, 24), ("24", 32, 24), (" /26 ", 32, 26), ("/80", 128, 80), ("/128", 128, 128), ("/0", 32, 0)],
    ids=["slash", "bare", "spaces", "v6", "v6-host", "zero"],
)
def test_slice_size_forms(text: str, bits: int, expected: int) -> None:
    assert parse_slice_size(text, bits) == expected


@pytest.mark.parametrize("text", ["", "/", "abc", "/33", "-1", "/2x", "²"], ids=str)
def test_slice_size_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_slice_size(text, 32)


def test_slices_wider_than_the_range_are_rejected() -> None:
    with pytest.raises(ValueError, match="wider than the range"):
        geometry("10.0.0.0/24", "/16")


@pytest.mark.parametrize(
    ("cidr", "size", "total", "first", "last"),
    [
        ("10.0.0.0/16", "/24", 256, "10.0.0.0/24", "10.0.255.0/24"),
        ("10.0.0.7/22", "24", 4, "10.0.0.0/24", "10.0.3.0/24"),  # host bits cleared, as parse_range does
        ("10.0.0.0/24", "/24", 1, "10.0.0.0/24", "10.0.0.0/24"),
        ("2001:db8::/64", "/80", 1 << 16, "2001:db8::/80", "2001:db8:0:0:ffff::/80"),
        ("2001:db8::/48", "/128", 1 << 80, "2001:db8::/128", "2001:db8:0:ffff:ffff:ffff:ffff:ffff/128"),
    ],
    ids=["v4", "v4-host-bits", "one-slice", "v6-64-in-80", "v6-48-in-128"],
)
def test_cut(cidr: str, size: str, total: int, first: str, last: str) -> None:
    geo = geometry(cidr, size)
    assert (geo.total, geo.cidr(0), geo.cidr(geo.total - 1)) == (total, first, last)
    assert geo.index_of_slice(last) == total - 1


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        ("10.0.1.0/24", ["10.0.0.0/23"]),  # grown slices: the one containing the old
        ("10.0.0.0/22", ["10.0.0.0/23", "10.0.2.0/23"]),  # shrunk: every one inside the old
        ("10.1.0.0/24", []),  # outside the range
        ("10.0.0.0/8", [f"10.0.{2 * i}.0/23" for i in range(128)]),  # covering the whole range
        ("2001:db8::/64", []),  # another IP version
        ("garbage", []),
    ],
    ids=["grown", "shrunk", "outside", "covering", "other-version", "garbage"],
)
def test_slices_overlapping_an_old_slice(old: str, expected: list[str]) -> None:
    geo = geometry("10.0.0.0/16", "/23")
    assert [geo.cidr(i) for i in geo.overlapping(old)] == expected


# (range, size, current listing, nodes, addresses in use per node, expected node -> slice, expected unplaced)
PLANS = {
    "three nodes get the lowest slices": (
        "10.0.0.0/16", "/24", [], ["n3", "n1", "n2"], {},
        {"n1": "10.0.0.0/24", "n2": "10.0.1.0/24", "n3": "10.0.2.0/24"}, [],
    ),
    "ipv6 nodes": (
        "fd00:10::/64", "/80", [], ["a", "b"], {}, {"a": "fd00:10::/80", "b": "fd00:10:0:0:1::/80"}, [],
    ),
    "existing assignments are kept": (
        "10.0.0.0/16", "/24", [("", "10.0.0.0/24"), ("b", "10.0.5.0/24")], ["a", "b"], {},
        {"a": "10.0.0.0/24", "b": "10.0.5.0/24"}, [],
    ),
    "a joining node gets the lowest free slice": (
        "10.0.0.0/16", "/24", [("a", "10.0.0.0/24"), ("", "10.0.1.0/24"), ("c", "10.0.2.0/24")], ["a", "c", "d"], {},
        {"a": "10.0.0.0/24", "d": "10.0.1.0/24", "c": "10.0.2.0/24"}, [],
    ),
    "a leaving node's slice is freed and given to the next node": (
        "10.0.0.0/24", "/25", [("a", "10.0.0.0/25"), ("b", "10.0.0.128/25")], ["b", "c"], {},
        {"c": "10.0.0.0/25", "b": "10.0.0.128/25"}, [],
    ),
    "a gone node's slice with addresses in use is not handed out": (
        "10.0.0.0/24", "/25", [("", "10.0.0.0/25"), ("b", "10.0.0.128/25")], ["b", "c"], uses(a=["10.0.0.9"]),
        {"b": "10.0.0.128/25"}, ["c"],
    ),
    "a node that comes back gets its old slice by the addresses its pool holds": (
        "10.0.0.0/16", "/24", [], ["a", "z"], uses(z=["10.0.7.3", "10.0.7.4"]),
        {"a": "10.0.0.0/24", "z": "10.0.7.0/24"}, [],
    ),
    "more nodes than slices: the rest are unplaced": (
        "10.0.0.0/24", "/26", [], ["n1", "n2", "n3", "n4", "n5", "n6"], {},
        {"n1": "10.0.0.0/26", "n2": "10.0.0.64/26", "n3": "10.0.0.128/26", "n4": "10.0.0.192/26"}, ["n5", "n6"],
    ),
    "grown slice size: each node gets the slice containing its old one": (
        "10.0.0.0/16", "/23", [("a", "10.0.2.0/24"), ("b", "10.0.5.0/24")], ["a", "b"], {},
        {"a": "10.0.2.0/23", "b": "10.0.4.0/23"}, [],
    ),
    "shrunk slice size: the sub-slice holding most of the node's addresses": (
        "10.0.0.0/16", "/25", [("a", "10.0.0.0/24")], ["a"], uses(a=["10.0.0.1", "10.0.0.200", "10.0.0.201"]),
        {"a": "10.0.0.128/25"}, [],
    ),
    "re-slice: a grown slice holding another node's addresses goes to neither": (
        "10.0.0.0/16", "/23", [("a", "10.0.0.0/24"), ("b", "10.0.1.0/24"), ("c", "10.0.2.0/24")], ["a", "b", "c"],
        uses(a=["10.0.0.5"], b=["10.0.1.5"]),
        {"c": "10.0.2.0/23", "a": "10.0.4.0/23", "b": "10.0.6.0/23"}, [],
    ),
    "re-slice: an emptied neighbour's old slice does not block": (
        "10.0.0.0/16", "/23", [("a", "10.0.0.0/24"), ("b", "10.0.1.0/24")], ["a", "b"], uses(a=["10.0.0.5"]),
        {"a": "10.0.0.0/23", "b": "10.0.2.0/23"}, [],
    ),
    "the range grows around unchanged slices: every assignment kept": (
        "10.0.0.0/15", "/24", [("a", "10.0.3.0/24"), ("b", "10.0.9.0/24")], ["a", "b"], {},
        {"a": "10.0.3.0/24", "b": "10.0.9.0/24"}, [],
    ),
    "the range moves: old slices outside it are replaced": (
        "10.1.0.0/16", "/24", [("a", "10.0.3.0/24")], ["a"], uses(a=["10.0.3.7"]), {"a": "10.1.0.0/24"}, [],
    ),
    "a node listed twice keeps its first slice": (
        "10.0.0.0/16", "/24", [("a", "10.0.4.0/24"), ("a", "10.0.6.0/24")], ["a"], {}, {"a": "10.0.4.0/24"}, [],
    ),
    "entries of another geometry are old slices, unparsable ones are ignored": (
        "10.0.0.0/16", "/24", [("a", "bogus"), ("b", "10.0.0.128/25")], ["a", "b"], {},
        {"b": "10.0.0.0/24", "a": "10.0.1.0/24"}, [],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", PLANS.values(), ids=PLANS.keys())
def test_plan(case: tuple) -> None:
    cidr, size, current, nodes, in_use, expected, unplaced = case
    plan = plan_slices(geometry(cidr, size), current, nodes, in_use)
    assert {node: cidr for node, cidr in plan.listing if node} == expected
    assert list(plan.unplaced) == unplaced
    assert len({cidr for _, cidr in plan.listing}) == len(plan.listing)  # every slice once


def test_plan_reports_changes_and_counts() -> None:
    geo = geometry("10.0.0.0/24", "/26")
    current = [("a", "10.0.0.0/26"), ("gone", "10.0.0.64/26"), ("", "10.0.0.128/26"), ("", "10.0.0.192/26")]
    plan = plan_slices(geo, current, ["a", "new"], uses(gone=["10.0.0.70"]))
    assert plan.assigned == (("new", "10.0.0.128/26"),)
    assert plan.freed == (("gone", "10.0.0.64/26"),)
    assert (plan.total, plan.free) == (4, 1)  # a, new, and gone's slice (still holding an address) are not free
    assert [node for node, _ in plan.listing] == ["a", "", "new", ""]
    assert plan.slice_of("new") == "10.0.0.128/26" and plan.slice_of("gone") == ""


def test_every_slice_is_listed_up_to_the_limit() -> None:
    plan = plan_slices(geometry("10.0.0.0/16", "/26"), [], ["a"], {})
    assert len(plan.listing) == LISTED_SLICES == plan.total  # a /16 in /26 slices: all 1024 listed


def test_huge_ipv6_geometry_is_never_enumerated() -> None:
    """A /64 in /112 slices is 2^48 of them: listed lazily (the lowest LISTED_SLICES plus any assigned
    beyond), picked by index, and fast even when the low slices are all taken or blocked."""
    geo = geometry("fd00::/64", "/112")
    current = [(f"old-{i}", geo.cidr(i)) for i in range(LISTED_SLICES + 5)]
    nodes = [node for node, _ in current] + ["new"]
    started = time.monotonic()
    plan = plan_slices(geo, current, nodes, uses(gone=["fd00::7:0:0:1"]))  # far beyond: blocks one more
    assert time.monotonic() - started < 2
    assert plan.total == 1 << 48
    assert plan.slice_of("new") == geo.cidr(LISTED_SLICES + 5)
    assert len(plan.listing) == LISTED_SLICES + 6 and plan.listing[-1] == ("new", geo.cidr(LISTED_SLICES + 5))
    assert plan.free == plan.total - len(nodes) - 1


@pytest.mark.parametrize("seed", range(20), ids=lambda seed: f"seed-{seed}")
def test_no_slice_ever_holds_another_nodes_address(seed: int) -> None:
    """Random joins, leaves and re-slices with addresses in use: a node's slice never contains an address
    that a pool of another node holds."""
    rng = random.Random(seed)
    network = ipaddress.ip_network("10.50.0.0/20")
    listing: tuple[tuple[str, str], ...] = ()
    pools: dict[str, set[int]] = {}  # node -> addresses its pools hold
    nodes = {f"n{i}" for i in range(4)}
    for _ in range(12):
        size = rng.choice(["/23", "/24", "/25", "/26"])
        nodes ^= {rng.choice([f"n{i}" for i in range(8)])}
        in_use = {node: sorted(held) for node, held in pools.items()}
        plan = plan_slices(geometry(str(network), size), listing, sorted(nodes), in_use)
        for node, cidr in plan.listing:
            if node:
                inside = ipaddress.ip_network(cidr)
                others = [a for other, held in pools.items() if other != node for a in held]
                assert not [a for a in others if ipaddress.ip_address(a) in inside], (node, cidr)
                pools.setdefault(node, set()).update(int(inside[0]) + rng.randrange(inside.num_addresses) for _ in "ab")
        for node in list(pools):  # pods die: some pools empty out
            if rng.random() < 0.3:
                del pools[node]
        listing = plan.listing


@pytest.mark.parametrize(
    ("name", "cidr", "network", "node"),
    [
        ("n1-10.0.0.0-24", "10.0.0.0/24", "", "n1"),
        ("blue-n1-10.0.0.0-24", "10.0.0.0/24", "blue", "n1"),
        ("blue-worker-2-fd00-10--1-0-0-0-80", "fd00:10::1:0:0:0/80", "blue", "worker-2"),
        ("10.0.0.0-24", "10.0.0.0/24", "", ""),  # the whole-range pool
        ("blue-10.0.0.0-24", "10.0.0.0/24", "blue", ""),  # network blue's whole-range pool
        ("red-n1-10.0.0.0-24", "10.0.0.0/24", "blue", ""),  # another network's
        ("n1-10.0.1.0-24", "10.0.0.0/24", "", ""),  # a name that does not match its range
    ],
    ids=["unnamed", "named", "v6-dashes", "whole-range", "named-whole-range", "other-network", "mismatch"],
)
def test_pool_node(name: str, cidr: str, network: str, node: str) -> None:
    assert pool_node(name, cidr, network) == node
