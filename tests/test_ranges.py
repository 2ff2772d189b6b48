"""Range arithmetic: parsing, windows, excludes, the .0 rule and the O(log n) lowest-free search."""

from __future__ import annotations

import ipaddress
import time

import pytest

from whereabouts.errors import InvalidConfig
from whereabouts.ranges import TakenAddresses, format_ip, lowest_free, parse_range


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def pick(spec: str, taken: list[str] = (), **kw: object) -> str | None:
    rng = parse_range(spec, key="range", **kw)
    found = lowest_free(rng, TakenAddresses(ip(t) for t in taken))
    return None if found is None else format_ip(rng.version, found)


@pytest.mark.parametrize(
    ("spec", "kw", "taken", "expected"),
    [
        ("10.0.0.0/24", {}, [], "10.0.0.1"),
        ("10.0.0.0/24", {}, ["10.0.0.1", "10.0.0.2"], "10.0.0.3"),
        ("10.0.0.0/24", {}, ["10.0.0.1", "10.0.0.3"], "10.0.0.2"),
        ("10.0.0.7/24", {}, [], "10.0.0.1"),  # host bits are cleared
        ("10.0.0.10-10.0.0.20/24", {}, [], "10.0.0.10"),
        ("10.0.0.0/24", {"range_start": "10.0.0.100"}, [], "10.0.0.100"),
        ("10.0.0.0/24", {"range_start": "10.0.0.100", "range_end": "10.0.0.50"}, [], "10.0.0.100"),  # end ignored
        ("10.0.0.0/24", {"exclude": ["10.0.0.0/30"]}, [], "10.0.0.4"),
        ("10.0.0.0/24", {"exclude": ["10.0.0.1"]}, [], "10.0.0.2"),
        ("10.0.0.0/24", {"exclude": ["10.0.0.1-10.0.0.9"]}, [], "10.0.0.10"),
        ("10.0.0.0/24", {"exclude": ["10.0.0.1-10.0.0.3", "10.0.0.4/30"]}, [], "10.0.0.8"),
        ("10.0.0.0/24", {"exclude": ["192.168.0.0/16", "fd00::1"]}, [], "10.0.0.1"),  # outside: no effect
        ("10.0.0.0/24", {"gateway": "10.0.0.1"}, [], "10.0.0.2"),
        ("10.0.0.0/23", {"range_start": "10.0.0.255"}, [], "10.0.0.255"),
        ("10.0.0.0/23", {"range_start": "10.0.0.255"}, ["10.0.0.255"], "10.0.1.1"),  # .0 skipped
        ("10.0.0.0/16", {"range_start": "10.0.1.0"}, [], "10.0.1.1"),
        ("10.0.0.0/30", {}, ["10.0.0.1", "10.0.0.2"], None),  # network/broadcast never picked
        ("10.0.0.0/31", {}, ["10.0.0.0"], "10.0.0.1"),  # a /31 has no network/broadcast
        ("10.0.0.5/32", {}, [], "10.0.0.5"),
        ("10.0.0.0/24", {"range_end": "10.0.0.2"}, ["10.0.0.1", "10.0.0.2"], None),
        ("2001:db8::/64", {}, [], "2001:db8::1"),
        ("2001:db8::/64", {}, ["2001:db8::1", "2001:db8::2"], "2001:db8::3"),
        ("2001:db8::/32", {"range_start": "2001:db8:ffff::"}, [], "2001:db8:ffff::"),
        ("2001:db8::100-2001:db8::200/64", {"exclude": ["2001:db8::100/126"]}, [], "2001:db8::104"),
        (
            "fd00::/8",
            {"range_start": "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fffd"},
            [],
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fffd",
        ),
        ("2001:db8::a00/120", {}, [], "2001:db8::a01"),  # IPv6 has no .0 rule but skips the network address
        ("2001:db8::/120", {}, [f"2001:db8::{i:x}" for i in range(1, 0x100)], None),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, str) else None,
)
def test_lowest_free(spec: str, kw: dict, taken: list[str], expected: str | None) -> None:
    assert pick(spec, taken, **kw) == expected


@pytest.mark.parametrize(
    ("spec", "kw", "message"),
    [
        ("10.0.0.0", {}, "invalid range '10.0.0.0'"),
        ("10.0.0.0/33", {}, "invalid range '10.0.0.0/33'"),
        ("nonsense/24", {}, "invalid range 'nonsense/24'"),
        ("10.0.0.20-10.0.0.10/24", {}, "invalid range '10.0.0.20-10.0.0.10/24': range end before range start"),
        ("10.0.0.10-10.0.1.10/24", {}, "invalid range '10.0.0.10-10.0.1.10/24': range end outside 10.0.0.0/24"),
        ("10.0.0.10-fd00::1/24", {}, "invalid range"),
        ("0.0.0.1-::5/24", {}, "invalid range '0.0.0.1-::5/24': expected a CIDR or START-END/PREFIX"),
        ("10.0.0.0/24", {"range_start": "10.0.1.5"}, "invalid range range_start '10.0.1.5': not inside"),
        ("10.0.0.0/24", {"range_end": "banana"}, "invalid range range_end 'banana': not an IP address"),
        ("10.0.0.0/24", {"exclude": ["10.0.0.300"]}, "invalid range exclude '10.0.0.300'"),
        ("10.0.0.0/24", {"exclude": ["10.0.0.9-10.0.0.1"]}, "invalid range exclude '10.0.0.9-10.0.0.1'"),
        ("10.0.0.0/24", {"exclude": ["10.0.0.1-fd00::1"]}, "invalid range exclude"),
        ("10.0.0.0/24", {"exclude": [5]}, "invalid range exclude 5"),
    ],
    ids=lambda v: str(v)[:30] if isinstance(v, str) else None,
)
def test_invalid_ranges_name_key_and_value(spec: str, kw: dict, message: str) -> None:
    with pytest.raises(InvalidConfig, match="^" + _escape(message)):
        parse_range(spec, key="range", **kw)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_capacity_counts_window_minus_excludes_gateway_and_dot_zero() -> None:
    rng = parse_range("10.0.0.0/23", key="range", exclude=["10.0.0.10-10.0.0.19"], gateway="10.0.0.1")
    # 510 usable (.1 .. 1.254), minus 10.0.1.0, the gateway and 10 excluded
    assert rng.capacity() == 510 - 1 - 1 - 10


def test_taken_addresses_count_in_log_time_and_zero_index() -> None:
    taken = TakenAddresses([ip("10.0.0.0"), ip("10.0.0.5"), ip("10.0.1.0")])
    assert taken.count(ip("10.0.0.0"), ip("10.0.0.255")) == 2
    assert taken.count_zeros(ip("10.0.0.0"), ip("10.0.1.0")) == 2
    taken.add(ip("10.0.2.0"))
    taken.add(ip("10.0.2.0"))
    assert len(taken) == 4 and ip("10.0.2.0") in taken


def test_pick_on_a_slash8_with_a_million_allocations_is_fast() -> None:
    """Rule 3: the pick costs O(log n), never a walk: a /8 holding a million addresses, under 10 ms a pick."""
    rng = parse_range("10.0.0.0/8", key="range", exclude=["10.0.0.0/28"])
    held = [v for v in range(ip("10.0.0.16"), ip("10.0.0.16") + 1_004_000) if v & 0xFF][:1_000_000]
    taken = TakenAddresses(held)
    assert len(taken) == 1_000_000
    picks = []
    started = time.perf_counter()
    for _ in range(100):
        found = lowest_free(rng, taken)
        assert found is not None
        picks.append(found)
        taken.add(found)
    per_pick = (time.perf_counter() - started) / 100
    assert per_pick < 0.010, f"{per_pick * 1000:.2f} ms per pick"
    # the first free addresses lie right after the dense block, skipping every .0
    expected = [v for v in range(held[-1] + 1, held[-1] + 200) if v & 0xFF][:100]
    assert picks == expected


def test_pick_on_full_width_ipv6_is_fast() -> None:
    rng = parse_range("2001:db8::/32", key="range")
    taken = TakenAddresses(range(rng.first, rng.first + 200_000))
    started = time.perf_counter()
    found = lowest_free(rng, taken)
    assert time.perf_counter() - started < 0.010
    assert found == rng.first + 200_000


@pytest.mark.parametrize(
    ("kw", "taken", "skip", "expected"),
    [
        ({}, [], 2, "10.0.0.3"),
        ({}, ["10.0.0.2"], 2, "10.0.0.4"),
        ({"exclude": ["10.0.0.2-10.0.0.5"]}, [], 1, "10.0.0.6"),  # skipping crosses an excluded span
        ({"range_end": "10.0.0.3"}, [], 5, "10.0.0.1"),  # fewer free than skip: the lowest
    ],
    ids=["plain", "over-taken", "across-exclude", "short-window"],
)
def test_skip_passes_over_free_addresses(kw: dict, taken: list[str], skip: int, expected: str) -> None:
    rng = parse_range("10.0.0.0/24", key="range", **kw)
    assert format_ip(4, lowest_free(rng, TakenAddresses(ip(t) for t in taken), skip)) == expected
