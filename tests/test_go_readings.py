"""Configs the Go plugin takes and reads its own way, read the same way here, each with a warning.

- Addresses with leading zeros: the Go plugin parses with k8s.io/utils/net's ParseIPSloppy/ParseCIDRSloppy,
  Go's parser from before 1.17, which reads every IPv4 number as decimal however many zeros lead it (never as
  octal) and takes IPv6 groups of more than four hex digits whose value fits 16 bits. The expectations below
  are that parser's results (its own tests and the Go plugin's config tests hold the same pairs).
- A `range_end` outside the range's usable addresses: the Go plugin's GetIPRange ignores it, so picks run to
  the range's last usable address.
"""

from __future__ import annotations

from typing import Any

import pytest

from whereabouts.config import IPAMConfig, parse_ipam, requested_addresses, requested_gateways
from whereabouts.errors import InvalidConfig
from whereabouts.iptext import unzero
from whereabouts.ranges import format_ip, parse_ip


@pytest.mark.parametrize(
    ("written", "go_reads"),
    [
        ("00192.00168.1.0/24", "192.168.1.0/24"),
        ("00192.00168.01.209", "192.168.1.209"),
        ("00192.00168.1.5-000000192.168.1.25/24", "192.168.1.5-192.168.1.25/24"),
        ("127.001.002.003", "127.1.2.3"),
        ("127.010.020.030", "127.10.20.30"),  # decimal: 010 is ten, not eight
        ("000.000.000.000", "0.0.0.0"),
        ("10.0.0.0/024", "10.0.0.0/24"),
        ("::ffff:127.001.002.003", "::ffff:127.1.2.3"),
        ("0:0:0:0:000000:ffff:127.1.2.3", "0:0:0:0:0:ffff:127.1.2.3"),
        ("00000fd00::/064", "fd00::/64"),
        ("010.0.0.1-010.0.0.9", "10.0.0.1-10.0.0.9"),
        ("10.0.0.1", None),  # nothing to drop
        ("0127.0.0.1x", None),  # not an address at all: left for the strict parser to refuse
    ],
)
def test_unzero_reads_numbers_as_go_does(written: str, go_reads: str | None) -> None:
    assert unzero(written) == go_reads


def parsed(**ipam: Any) -> IPAMConfig:
    return parse_ipam({"type": "whereabouts", "datastore": "local", **ipam})


def window(cfg: IPAMConfig, i: int = 0) -> tuple[str, str, str]:
    rng = cfg.ranges[i]
    return rng.cidr, format_ip(rng.version, rng.first), format_ip(rng.version, rng.last)


def test_the_go_plugins_own_leading_zero_config_reads_as_there() -> None:
    """pkg/config's "allows for leading zeroes in the range when the start and end ranges are provided"."""
    cfg = parsed(range="00192.00168.1.0/24", range_start="00192.00168.1.44", range_end="00192.00168.01.209",
                 gateway="192.168.10.1")  # fmt: skip
    assert window(cfg) == ("192.168.1.0/24", "192.168.1.44", "192.168.1.209")
    assert len(cfg.warnings) == 3
    for key, written in (("range", "00192.00168.1.0/24"), ("range_start", "00192.00168.1.44"),
                         ("range_end", "00192.00168.01.209")):  # fmt: skip
        assert any(key in w and repr(written) in w and "leading zeros" in w for w in cfg.warnings), cfg.warnings


def test_leading_zeros_everywhere_an_address_is_written() -> None:
    cfg = parsed(range="00192.00168.1.5-000000192.168.1.25/24", gateway="010.0.0.01",
                 ipRanges=[{"range": "0010.1.0.0/16", "exclude": ["010.1.0.0/24", "010.1.1.1", "010.1.2.1-010.1.2.9"]}],
                 addresses=[{"address": "010.9.0.5/24", "gateway": "010.9.0.1"}])  # fmt: skip
    assert window(cfg) == ("192.168.1.0/24", "192.168.1.5", "192.168.1.25")
    assert cfg.gateway_for(4) == "10.0.0.1"
    assert cfg.ranges[1].excluded == ((0x0A010000 + 1, 0x0A0100FF), (0x0A010101, 0x0A010101), (0x0A010201, 0x0A010209))
    (static,) = cfg.addresses
    assert (static.address, static.gateway) == ("10.9.0.5/24", "10.9.0.1")  # as the result will show them
    assert len(cfg.warnings) == 8, cfg.warnings


def test_addresses_without_leading_zeros_read_as_written_and_warn_of_nothing() -> None:
    cfg = parsed(range="10.0.0.0/24", range_start="10.0.0.10", gateway="10.0.0.1", addresses=["fd00::0005/64"])
    assert cfg.warnings == () and cfg.addresses[0].address == "fd00::0005/64"


@pytest.mark.parametrize("written", ["0256.0.0.1/24", "10.0.0.0256/24", "1.2.3/24", "010.0.0.1.5/24", "0x0a.0.0.0/8"])
def test_what_go_refuses_too_is_still_refused(written: str) -> None:
    with pytest.raises(InvalidConfig, match="invalid range"):
        parsed(range=written)


# (range, range_end, the window's last address, where the warning says it lies)
RANGE_ENDS = [
    ("10.0.0.0/24", "10.0.1.50", "10.0.0.254", "past range 10.0.0.0/24"),
    ("10.0.0.0/30", "10.255.255.255", "10.0.0.2", "past range 10.0.0.0/30"),
    ("10.0.0.0/24", "9.255.255.1", "10.0.0.254", "below the window's start"),
    ("10.0.0.0/24", "10.0.0.0", "10.0.0.254", "below the window's start"),  # was an empty window
    ("fd00::/120", "fd00::1:0", "fd00::fe", "past range fd00::/120"),
]


@pytest.mark.parametrize(("cidr", "range_end", "last", "where"), RANGE_ENDS)
def test_a_range_end_outside_the_range_is_ignored_as_the_go_plugin_ignores_it(
    cidr: str, range_end: str, last: str, where: str
) -> None:
    for cfg, key in ((parsed(range=cidr, range_end=range_end), "range"),
                     (parsed(ipRanges=[{"range": cidr, "range_end": range_end}]), "ipRanges[0].range")):  # fmt: skip
        assert window(cfg)[2] == last
        (warning,) = cfg.warnings
        assert warning.startswith(f"{key} range_end {range_end!r} lies {where}: ignored"), warning


def test_a_range_end_of_the_other_ip_version_is_still_refused() -> None:
    with pytest.raises(InvalidConfig, match="range_end 'fd00::5'"):
        parsed(range="10.0.0.0/24", range_end="fd00::5")


def test_requested_addresses_and_gateways_from_cni_args_read_leading_zeros_as_go_does() -> None:
    warnings: list[str] = []
    args = {"IP": "010.0.0.7/24", "GATEWAY": " 010.0.0.254 ,fd00::1"}
    assert requested_addresses({}, args, warnings) == (parse_ip("10.0.0.7"),)
    assert requested_gateways(args, warnings) == (parse_ip("10.0.0.254"), parse_ip("fd00::1"))
    assert [w.split(" read as")[0] for w in warnings] == ["CNI_ARGS IP entry '010.0.0.7/24'",
                                                          "CNI_ARGS GATEWAY entry ' 010.0.0.254 '"]  # fmt: skip


@pytest.mark.parametrize("gateway", ["nonsense", "10.0.0.1,", "10.0.0.256"])
def test_a_bad_cni_args_gateway_is_refused_naming_it(gateway: str) -> None:
    with pytest.raises(InvalidConfig, match="invalid CNI_ARGS GATEWAY entry"):
        requested_gateways({"GATEWAY": gateway})
