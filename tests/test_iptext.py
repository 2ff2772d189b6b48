"""iptext against the stdlib `ipaddress`: the same strings accepted, the same values, the same text out."""

from __future__ import annotations

import ipaddress
import random
import sys
import time
from collections.abc import Callable

import pytest

from whereabouts.iptext import format_address, parse_address, parse_network

# ipaddress on 3.13+ writes IPv4-mapped IPv6 addresses in mixed notation; this module keeps 3.11's text.
MIXED_MAPPED = sys.version_info >= (3, 13)


def stdlib_address(text: str) -> tuple[int, int] | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return addr.version, int(addr)


def stdlib_network(text: str, strict: bool) -> tuple[int, int, int] | None:
    try:
        net = ipaddress.ip_network(text, strict=strict)
    except ValueError:
        return None
    return net.version, int(net.network_address), net.prefixlen


def ours(parse: Callable[..., tuple[int, ...]], *args: str, **kwargs: bool) -> tuple[int, ...] | None:
    try:
        return parse(*args, **kwargs)
    except ValueError:
        return None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.1", (4, 0x0A000001)),
        ("0.0.0.0", (4, 0)),
        ("255.255.255.255", (4, 0xFFFFFFFF)),
        ("::", (6, 0)),
        ("::1", (6, 1)),
        ("1::", (6, 1 << 112)),
        ("2001:DB8::1", (6, 0x20010DB8 << 96 | 1)),
        ("2001:db8:0:0:0:0:0:1", (6, 0x20010DB8 << 96 | 1)),
        ("1:2:3:4:5:6:7::", (6, 0x00010002000300040005000600070000)),
        ("::2:3:4:5:6:7:8", (6, 0x00000002000300040005000600070008)),
        ("::ffff:1.2.3.4", (6, 0xFFFF01020304)),
        ("::1.2.3.4", (6, 0x01020304)),
        ("1:2:3:4:5:6:1.2.3.4", (6, 0x0001000200030004000500060102_0304)),
        ("fe80::1%eth0", (6, 0xFE80 << 112 | 1)),
        ("fe80::1%eth 0", (6, 0xFE80 << 112 | 1)),
        ("0000:0000::00ff", (6, 0xFF)),
    ],
    ids=lambda v: str(v),
)
def test_valid_addresses(text: str, expected: tuple[int, int]) -> None:
    assert parse_address(text) == expected == stdlib_address(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0",
        "10.0.0.1.2",
        "10.0.0.01",
        "10.0.0.256",
        "10.0.0.1 ",
        " 10.0.0.1",
        "10.0.0.+1",
        "10.0.0.1_0",
        "10.0.0.\u0661",
        "10.0.0.1/32",
        "10..0.1",
        "1.2.3.4%eth0",
        ":",
        "::1::",
        ":::",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8",
        ":1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:",
        "12345::",
        "g::",
        "0x1::",
        " ::1",
        "::1%",
        "::1%a%b",
        "%eth0",
        "::1.2.3",
        "::1.2.3.04",
        "1.2.3.4::",
        "1:2:3:4:5:6:7:1.2.3.4",
    ],
    ids=repr,
)
def test_invalid_addresses(text: str) -> None:
    assert stdlib_address(text) is None
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize(
    "text, strict, expected",
    [
        ("10.0.0.0/24", True, (4, 0x0A000000, 24)),
        ("10.0.0.7/24", False, (4, 0x0A000000, 24)),
        ("10.0.0.7/024", False, (4, 0x0A000000, 24)),
        ("10.0.0.7/255.255.255.0", False, (4, 0x0A000000, 24)),
        ("10.0.0.7/0.0.0.255", False, (4, 0x0A000000, 24)),
        ("10.0.0.7/0.0.0.0", False, (4, 0, 0)),
        ("10.0.0.7/255.255.255.255", True, (4, 0x0A000007, 32)),
        ("10.0.0.7", True, (4, 0x0A000007, 32)),
        ("10.0.0.7/0", False, (4, 0, 0)),
        ("2001:db8::/32", True, (6, 0x20010DB8 << 96, 32)),
        ("2001:db8::5/64", False, (6, 0x20010DB8 << 96, 64)),
        ("::1", True, (6, 1, 128)),
        ("fe80::%eth0/64", True, (6, 0xFE80 << 112, 64)),
        ("::ffff:10.0.0.0/120", True, (6, 0xFFFF0A000000, 120)),
    ],
    ids=lambda v: str(v),
)
def test_valid_networks(text: str, strict: bool, expected: tuple[int, int, int]) -> None:
    assert parse_network(text, strict=strict) == expected == stdlib_network(text, strict)


@pytest.mark.parametrize(
    "text, strict",
    [
        ("10.0.0.7/24", True),
        ("10.0.0.0/33", False),
        ("10.0.0.0/", False),
        ("/24", False),
        ("10.0.0.0/24/24", False),
        ("10.0.0.0/ 24", False),
        ("10.0.0.0/+24", False),
        ("10.0.0.0/255.0.255.0", False),
        ("10.0.0.0/255.255.255.01", False),
        ("2001:db8::/129", False),
        ("2001:db8::/ffff::", False),
        ("2001:db8::/255.255.255.0", False),
        ("2001:db8::5/64", True),
        ("fe80::/64%eth0", False),
        ("10.0.0.0-10.0.0.5/24", False),
    ],
    ids=lambda v: str(v),
)
def test_invalid_networks(text: str, strict: bool) -> None:
    assert stdlib_network(text, strict) is None
    with pytest.raises(ValueError):
        parse_network(text, strict=strict)


@pytest.mark.parametrize(
    "version, value, text",
    [
        (4, 0, "0.0.0.0"),
        (4, 0x0A0000FF, "10.0.0.255"),
        (6, 0, "::"),
        (6, 1, "::1"),
        (6, 1 << 112, "1::"),
        (6, 0x20010DB8 << 96 | 1, "2001:db8::1"),
        (6, 0x20010DB8000000010000000000000001, "2001:db8:0:1::1"),  # the longer run wins
        (6, 0x20010DB8000000000001000000000001, "2001:db8::1:0:0:1"),  # the first of equal runs wins
        (6, 0x20010DB8000100010001000100010001, "2001:db8:1:1:1:1:1:1"),
        (6, 0x20010000000100010001000100010001, "2001:0:1:1:1:1:1:1"),  # a single zero hextet stays
        (6, 0xFFFF01020304, "::ffff:102:304"),
        (6, (1 << 128) - 1, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ],
    ids=lambda v: str(v),
)
def test_format(version: int, value: int, text: str) -> None:
    assert format_address(version, value) == text
    if not (MIXED_MAPPED and value >> 32 == 0xFFFF):
        assert format_address(version, value) == str(ipaddress.ip_address(text))


@pytest.mark.parametrize("version, value", [(4, -1), (4, 1 << 32), (6, -1), (6, 1 << 128)], ids=str)
def test_format_refuses_out_of_range(version: int, value: int) -> None:
    with pytest.raises(ValueError):
        format_address(version, value)


# Random strings built from the pieces addresses are made of, so that many are valid and the rest fail
# in every way a piece can be wrong.
V4_OCTETS = ["0", "1", "9", "10", "99", "100", "199", "254", "255", "256", "300", "999", "01", "00", "1000", ""]
HEXTETS = ["0", "1", "a", "F", "ff", "0ff", "ffff", "FFFF", "00000", "12345", "g", "", "0000", "db8", "fe80"]
JUNK = [" ", "+", "-", "_", "x", "0x", "\u0661", "%", "/", ".", ":", "::"]


def random_v4(rnd: random.Random) -> str:
    count = rnd.choice([4, 4, 4, 4, 3, 5])
    return ".".join(rnd.choice(V4_OCTETS[:9] if rnd.random() < 0.7 else V4_OCTETS) for _ in range(count))


def random_v6(rnd: random.Random) -> str:
    count = rnd.randint(1, 9)
    pool = HEXTETS[:10] if rnd.random() < 0.7 else HEXTETS
    parts = [rnd.choice(pool) for _ in range(count)]
    if rnd.random() < 0.6:
        at = rnd.randint(0, len(parts))
        parts[at:at] = ["", ""] if at in (0, len(parts)) else [""]
    if rnd.random() < 0.15:
        parts[-1] = random_v4(rnd)
    text = ":".join(parts)
    if rnd.random() < 0.1:
        text += "%" + rnd.choice(["eth0", "", "a%b", "1"])
    return text


def mutate(rnd: random.Random, text: str) -> str:
    if rnd.random() < 0.85 or not text:
        return text
    at = rnd.randint(0, len(text))
    return text[:at] + rnd.choice(JUNK) + text[at + rnd.choice([0, 0, 1]) :]


def random_address(rnd: random.Random) -> str:
    return mutate(rnd, random_v4(rnd) if rnd.random() < 0.4 else random_v6(rnd))


def random_mask(rnd: random.Random, address: str) -> str:
    roll = rnd.random()
    if roll < 0.1:
        return ""
    bits = 32 if "." in address and ":" not in address else 128
    if roll < 0.7:
        prefix = str(rnd.randint(0, bits + 2))
        return "/" + ("0" + prefix if rnd.random() < 0.05 else prefix)
    if roll < 0.9:
        mask = (1 << 32) - (1 << rnd.randint(0, 32))
        mask = mask ^ ((1 << 32) - 1) if rnd.random() < 0.4 else mask
        return "/" + str(ipaddress.IPv4Address(mask))
    return "/" + mutate(rnd, random_v4(rnd))


@pytest.mark.parametrize("seed", range(4))
def test_random_addresses_parse_as_ipaddress_parses_them(seed: int) -> None:
    rnd, valid = random.Random(seed), 0
    for _ in range(5000):
        text = random_address(rnd)
        assert ours(parse_address, text) == stdlib_address(text), text
        valid += stdlib_address(text) is not None
    assert valid > 1000  # the generator reaches the valid side often enough to mean something


@pytest.mark.parametrize("seed", range(4))
def test_random_networks_parse_as_ipaddress_parses_them(seed: int) -> None:
    rnd, valid = random.Random(seed), 0
    for _ in range(5000):
        address = random_address(rnd)
        text = mutate(rnd, address + random_mask(rnd, address))
        for strict in (True, False):
            assert ours(parse_network, text, strict=strict) == stdlib_network(text, strict), (text, strict)
        # config checks static addresses with ip_interface: it accepts what ip_network(strict=False) does
        try:
            interface = ipaddress.ip_interface(text).version
        except ValueError:
            interface = None
        assert interface == (ours(parse_network, text, strict=False) or (None,))[0], text
        valid += stdlib_network(text, False) is not None
    assert valid > 500


@pytest.mark.parametrize("seed", range(4))
def test_random_values_format_as_ipaddress_formats_them(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(5000):
        # hextets drawn zero half of the time, so runs of every length and position come up
        value = 0
        for _ in range(8):
            value = value << 16 | (0 if rnd.random() < 0.5 else rnd.choice([1, 0xFFFF, rnd.getrandbits(16)]))
        if not (MIXED_MAPPED and value >> 32 == 0xFFFF):
            assert format_address(6, value) == str(ipaddress.IPv6Address(value))
        v4 = value & 0xFFFFFFFF
        assert format_address(4, v4) == str(ipaddress.IPv4Address(v4))
        assert parse_address(format_address(6, value)) == (6, value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0001::", (6, 1 << 112)),  # leading zeros inside a hextet: up to four digits
        ("00001::", None),
        ("10.0.0.001", None),  # IPv4 octets never have them (ambiguous: octal to some parsers)
        ("010.0.0.1", None),
        ("0.0.0.00", None),
        ("::ffff:01.2.3.4", None),  # nor the IPv4 tail of an IPv6 address
        ("::ffff:1.2.3.4", (6, 0xFFFF01020304)),  # IPv4-mapped
        ("::FFFF:1.2.3.4", (6, 0xFFFF01020304)),
        ("::ffff:0:1.2.3.4", (6, 0xFFFF000000000000 | 0x01020304)),  # IPv4-translated (RFC 2765)
        ("::ffff:256.1.1.1", None),
        ("::ffff:1.2.3.4.5", None),
        ("::1.2.3.4:5", None),  # the IPv4 tail only last
        ("1.2.3.4:5::", None),
        ("::ffff:1.2.3.4%eth0", (6, 0xFFFF01020304)),  # a zone id on any IPv6 address; it is not kept
        ("1:2:3:4:5:6:7:8%z", (6, 0x00010002000300040005000600070008)),
        ("fe80::1% ", (6, 0xFE80 << 112 | 1)),  # a zone id may be anything but empty or with '%' or '/'
        ("fe80::1%\u0661", (6, 0xFE80 << 112 | 1)),
        ("fe80::1%eth0\n", (6, 0xFE80 << 112 | 1)),
        ("fe80::1%eth0%", None),
        ("fe80::1%%", None),
        ("fe80::1%/", None),
        ("fe80::1%eth0/64", None),  # an address, not a network
        ("10.0.0.1\n", None),  # whitespace is not trimmed: callers strip what they read
        ("\t10.0.0.1", None),
        ("::1\n", None),
        ("::1 ", None),
        ("10.0.0.1\x00", None),
        ("::\x00", None),
        ("\uff11\uff10.0.0.1", None),  # fullwidth digits, which int() would read
    ],
    ids=repr,
)
def test_address_edge_cases(text: str, expected: tuple[int, int] | None) -> None:
    assert ours(parse_address, text) == expected == stdlib_address(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.0/0024", (4, 0x0A000000, 24)),  # a prefix length may have leading zeros, as ipaddress reads it
        ("::/00000000000000000000128", (6, 0, 128)),
        ("10.0.0.0/" + "0" * 5000 + "24", None),  # too many digits for int(): refused, not a crash
        ("10.0.0.0/" + "9" * 5000, None),
        ("10.0.0.0/\u0662\u0664", None),  # Arabic-Indic digits
        ("10.0.0.0/24\n", None),
        ("10.0.0.0/24 ", None),
        ("::ffff:1.2.3.4/128", (6, 0xFFFF01020304, 128)),
        ("fe80::%eth0/64", (6, 0xFE80 << 112, 64)),  # the zone id before the prefix
        ("fe80::%eth/0/64", None),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_network_edge_cases(text: str, expected: tuple[int, int, int] | None) -> None:
    for strict in (True, False):
        assert ours(parse_network, text, strict=strict) == expected == stdlib_network(text, strict)


@pytest.mark.parametrize(
    "text",
    ["1" * 200_000, "1." * 100_000, ":" * 200_000, "1:" * 100_000, "::" + "f" * 200_000, "::1%" + "%" * 200_000],
    ids=["digits", "dots", "colons", "hextets", "long-hextet", "long-zone"],
)
def test_very_long_input_is_refused_quickly(text: str) -> None:
    """Refused in linear time: a quadratic parse of 200 kB would take minutes, the bound is far above a
    linear one's few milliseconds even on a busy machine."""
    started = time.perf_counter()
    for parse in (parse_address, parse_network):
        with pytest.raises(ValueError):
            parse(text)
    assert time.perf_counter() - started < 2.0
