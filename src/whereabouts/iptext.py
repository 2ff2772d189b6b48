"""IP addresses and networks as text <-> (version, int), without the `ipaddress` module.

Every CNI call is a fresh process, and importing `ipaddress` costs it about a millisecond for a few parses.
These functions accept exactly the strings `ipaddress.ip_address`, `ip_network` and `ip_interface` accept
(IPv4 dotted quads without leading zeros; IPv6 with `::`, an IPv4 tail such as `::ffff:1.2.3.4`, a `%scope`;
prefixes as lengths, IPv4 ones also as netmask or hostmask), reject the rest with ValueError, and format
addresses as `str(ipaddress.IPv4Address(value))` / `str(ipaddress.IPv6Address(value))` does on Python 3.11
(RFC 5952: lowercase, longest run of zero hextets as `::`). tests/test_iptext.py holds them to `ipaddress`.
"""

from __future__ import annotations

_DECIMAL = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_V4_ONES = (1 << 32) - 1
_V6_ONES = (1 << 128) - 1


def parse_address(text: str) -> tuple[int, int]:
    """'10.0.0.1' -> (4, int), 'fe80::1%eth0' -> (6, int), as `ipaddress.ip_address(text)` reads it."""
    if "/" not in text:
        value = _v4(text)
        if value is not None:
            return 4, value
        value = _v6(text)
        if value is not None:
            return 6, value
    raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address")


def parse_network(text: str, *, strict: bool = True) -> tuple[int, int, int]:
    """'10.0.0.0/24' -> (4, network address as int, 24), as `ipaddress.ip_network(text, strict)` reads it:
    no prefix means a single address; `strict=False` clears host bits instead of refusing them."""
    address, slash, mask = text.partition("/")
    if "/" not in mask:
        value, prefix = _v4(address), _v4_prefix(mask) if slash else 32
        version, bits = 4, 32
        if value is None or prefix is None:
            value, prefix = _v6(address), _v6_prefix(mask) if slash else 128
            version, bits = 6, 128
        if value is not None and prefix is not None:
            host_bits = (1 << (bits - prefix)) - 1
            if value & host_bits and strict:
                raise ValueError(f"{format_address(version, value)}/{prefix} has host bits set")
            return version, value & ~host_bits, prefix
    raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network")


def format_address(version: int, value: int) -> str:
    """The address's text, as `str(ipaddress.IPv4Address(value))` (or IPv6Address, for any other version)."""
    if version == 4:
        if not 0 <= value <= _V4_ONES:
            raise ValueError(f"{value} is not an IPv4 address")
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
    if not 0 <= value <= _V6_ONES:
        raise ValueError(f"{value} is not an IPv6 address")
    hextets = [f"{value >> shift & 0xFFFF:x}" for shift in range(112, -16, -16)]
    start, length = _longest_zero_run(hextets)
    if length < 2:
        return ":".join(hextets)
    return ":".join(hextets[:start]) + "::" + ":".join(hextets[start + length :])


def _longest_zero_run(hextets: list[str]) -> tuple[int, int]:
    """(start, length) of the first longest run of '0' hextets."""
    best_start, best_length, start = 0, 0, -1
    for i, hextet in enumerate(hextets):
        if hextet != "0":
            start = -1
            continue
        if start < 0:
            start = i
        if i - start + 1 > best_length:
            best_start, best_length = start, i - start + 1
    return best_start, best_length


def _v4(text: str) -> int | None:
    octets = text.split(".")
    if len(octets) != 4:
        return None
    value = 0
    for octet in octets:
        # ASCII digits only (int() would take ' 1', '1_0' and other scripts' digits), at most three, no leading 0
        if not octet or len(octet) > 3 or not _DECIMAL.issuperset(octet) or (octet[0] == "0" and octet != "0"):
            return None
        number = int(octet)
        if number > 255:
            return None
        value = value << 8 | number
    return value


def _v6(text: str) -> int | None:
    text, percent, scope = text.partition("%")
    if percent and (not scope or "%" in scope):
        return None
    parts = text.split(":")
    if len(parts) < 3:
        return None
    if "." in parts[-1]:  # an IPv4 tail ('::ffff:1.2.3.4') stands for the last two hextets
        tail = _v4(parts.pop())
        if tail is None:
            return None
        parts += [f"{tail >> 16:x}", f"{tail & 0xFFFF:x}"]
    if len(parts) > 9:
        return None
    counts = _hextet_counts(parts)
    if counts is None:
        return None
    before, skipped, after = counts
    value = 0
    for part in parts[:before] + ["0"] * skipped + parts[len(parts) - after :]:
        if not part or len(part) > 4 or not _HEX.issuperset(part):  # int(part, 16) would take ' f', '0x1'
            return None
        value = value << 16 | int(part, 16)
    return value


def _hextet_counts(parts: list[str]) -> tuple[int, int, int] | None:
    """(hextets before '::', hextets it stands for, hextets after it), or None when `parts` is malformed."""
    empty = [i for i in range(1, len(parts) - 1) if not parts[i]]
    if len(empty) > 1:
        return None  # at most one '::'
    if not empty:
        if len(parts) != 8 or not parts[0] or not parts[-1]:
            return None
        return 8, 0, 0
    before, after = empty[0], len(parts) - empty[0] - 1
    if not parts[0]:
        before -= 1  # a leading ':' only as part of '::'
        if before:
            return None
    if not parts[-1]:
        after -= 1  # a trailing ':' only as part of '::'
        if after:
            return None
    skipped = 8 - before - after
    return (before, skipped, after) if skipped >= 1 else None


def _v4_prefix(mask: str) -> int | None:
    """A prefix length ('24', '024'), else a netmask ('255.255.255.0') or hostmask ('0.0.0.255')."""
    if mask.isascii() and mask.isdigit():
        return int(mask) if int(mask) <= 32 else None
    value = _v4(mask)
    if value is None:
        return None
    prefix = _prefix_of_mask(value)  # all ones and all zeros read as netmasks, as ipaddress reads them
    return prefix if prefix is not None else _prefix_of_mask(value ^ _V4_ONES)


def _prefix_of_mask(value: int) -> int | None:
    """The prefix length of a 32-bit netmask (ones then zeros), or None."""
    zeros = 32 if value == 0 else min(32, (~value & (value - 1)).bit_length())
    return 32 - zeros if value >> zeros == (1 << (32 - zeros)) - 1 else None


def _v6_prefix(mask: str) -> int | None:
    if mask.isascii() and mask.isdigit() and int(mask) <= 128:
        return int(mask)
    return None


def unzero(text: str) -> str | None:
    """The address or CIDR the Go plugin reads in `text` when its numbers carry leading zeros, with those zeros
    dropped ('00192.00168.01.0/024' -> '192.168.1.0/24'), or None when dropping them changes nothing.

    The Go plugin parses with k8s.io/utils/net's ParseIPSloppy/ParseCIDRSloppy (Go's net parser from before 1.17):
    each IPv4 number is decimal, never octal, however many zeros lead it, and an IPv6 group may carry more than
    four hex digits while its value fits 16 bits. The caller parses the result as strictly as ever."""
    addresses, slash, prefix = text.partition("/")
    fixed = "-".join(_unzero_address(address) for address in addresses.split("-"))  # 'A-B' spans too
    if slash and prefix.isascii() and prefix.isdigit():
        prefix = prefix.lstrip("0") or "0"
    fixed += slash + prefix
    return fixed if fixed != text else None


def _unzero_address(address: str) -> str:
    if ":" not in address:
        return _unzero_v4(address) or address
    groups = address.split(":")
    if "." in groups[-1]:
        groups[-1] = _unzero_v4(groups[-1]) or groups[-1]
    return ":".join(_unzero_group(group) for group in groups)


def _unzero_v4(text: str) -> str | None:
    octets = text.split(".")
    if len(octets) != 4 or not all(octet and _DECIMAL.issuperset(octet) for octet in octets):
        return None
    return ".".join(octet.lstrip("0") or "0" for octet in octets)


def _unzero_group(group: str) -> str:
    if len(group) > 4 and _HEX.issuperset(group):
        return group.lstrip("0").rjust(1, "0")
    return group
