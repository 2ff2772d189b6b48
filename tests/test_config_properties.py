"""Property: every ipam object, valid or hostile, parses into an IPAMConfig or is refused with code 6 or 7.

Generated objects hold every key the parser reads, each either a plausible value or a hostile one: a wrong
type, a huge or negative number, an odd string (NUL bytes, lone surrogates, non-ASCII digits, thousands of
digits), or a value nested thousands deep. Nothing else may escape: any other exception would reach the
runtime as code 100, a traceback in its log.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from whereabouts.config import IPAMConfig, load_ipam
from whereabouts.errors import InvalidConfig, UndecodableConfig

MISSING_FLAT_FILE = "/nonexistent/whereabouts-py-test/whereabouts.conf"
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "10.0.0.0/24\x00",
    "10.0.0.1\x00",
    "\ud800",
    "10.0.0.0/\ud800",
    "\u0661\u0660.\u0660.\u0660.\u0660/\u0662\u0664",  # Arabic-Indic digits: str.isdigit() says yes
    "10.0.0.0/\u0662\u0664",
    "/\u0662\u0664",
    "0x0a.0.0.1",
    "010.0.0.1",
    "10.0.0.0/24 ",
    "10.0.0.0/33",
    "10.0.0.0/-1",
    "0.0.0.0/0",
    "::/0",
    "::ffff:10.0.0.1/120",
    "fe80::1%eth0/64",
    "10.0.0.9-10.0.0.1/24",
    "10.0.0.1-fd00::1/24",
    "10.0.0.1-10.0.0.1-10.0.0.2/24",
    "10.0.0.0/255.255.255.0",
    "10.0.0.0/0.0.0.255",
    "9" * 5000,
    "/" + "9" * 5000,
    "10.0.0.0/" + "9" * 5000,
    "1" * 100_000,
    "true",
    "FALSE",
    "kubernetes",
    "local",
]
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**64, -(2**64), 10**4000, -(10**4200)]),  # JSON allows up to 4,300 digits
    st.floats(allow_nan=True, allow_infinity=True),
)
TEXT = st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=40))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)


class Deep:
    """Stands for a value nested `depth` deep until the test builds it (`built`): Hypothesis prints the
    examples it reports, and printing the value itself would overflow the stack."""

    def __init__(self, depth: int, kind: str) -> None:
        self.depth, self.kind = depth, kind

    def __repr__(self) -> str:
        return f"Deep({self.depth}, {self.kind!r})"

    def build(self) -> Any:
        value: Any = "10.0.0.0/24"
        for _ in range(self.depth):
            value = [value] if self.kind == "list" else {"range": value, "dst": value}
        return value


def built(value: Any) -> Any:
    if isinstance(value, Deep):
        return value.build()
    if isinstance(value, list):
        return [built(item) for item in value]
    if isinstance(value, dict):
        return {k: built(v) for k, v in value.items()}
    return value


DEEP = st.builds(Deep, st.integers(1, 5000), st.sampled_from(["list", "dict"]))
HOSTILE = st.one_of(JSON, DEEP)


def sometimes_hostile(plausible: st.SearchStrategy[Any], odds: int = 8) -> st.SearchStrategy[Any]:
    """`plausible`, or one time in `odds` a hostile value instead (nested items get theirs this way)."""
    return st.integers(1, odds).flatmap(lambda n: HOSTILE if n == 1 else plausible)


# Addresses and ranges from one small region, so that windows, excludes and gateways often fall inside.


def v4_text(offset: int) -> str:
    return f"10.0.{offset >> 8}.{offset & 255}"


def v6_text(offset: int) -> str:
    return f"fd00::{offset:x}"


V4_ADDRESS = st.integers(0, 1023).map(v4_text)
V6_ADDRESS = st.integers(0, 1023).map(v6_text)
ADDRESS = st.one_of(V4_ADDRESS, V6_ADDRESS, st.sampled_from(["0.0.0.0", "255.255.255.255", "::", "::1"]))
CIDR = st.one_of(
    st.builds(lambda a, p: f"{a}/{p}", V4_ADDRESS, st.integers(20, 32)),
    st.builds(lambda a, p: f"{a}/{p}", V6_ADDRESS, st.integers(108, 128)),
    st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.0/255.255.252.0", "10.0.0.0/0.0.3.255"]),
)


def region_range(version: int, base: int, prefix: int, x: int, y: int, dashed: bool) -> str:
    """A CIDR in 10.0.0.0/22 or fd00::/118 (host bits kept, as configs have them), or a START-END/PREFIX
    whose START and END lie in its CIDR in order."""
    bits, text = (32, v4_text) if version == 4 else (128, v6_text)
    prefix = min(prefix + (96 if version == 6 else 0), bits)
    size = 1 << (bits - prefix)
    network = base - base % size
    if not dashed:
        return f"{text(base)}/{prefix}"
    lo, hi = sorted((x % size, y % size))
    return f"{text(network + lo)}-{text(network + hi)}/{prefix}"


RANGE = st.builds(
    region_range,
    st.sampled_from([4, 6]),
    st.integers(0, 1023),
    st.integers(22, 32),
    st.integers(0, 1023),
    st.integers(0, 1023),
    st.booleans(),
)
EXCLUDE = st.lists(sometimes_hostile(st.one_of(CIDR, ADDRESS, st.builds("{}-{}".format, ADDRESS, ADDRESS))), max_size=4)
RANGE_KEYS = {
    "range_start": sometimes_hostile(ADDRESS),
    "range_end": sometimes_hostile(ADDRESS),
    "exclude": sometimes_hostile(EXCLUDE),
}
IP_RANGE = st.fixed_dictionaries({"range": sometimes_hostile(RANGE)}, optional=RANGE_KEYS)
ROUTE = st.fixed_dictionaries(
    {"dst": sometimes_hostile(CIDR)}, optional={"gw": sometimes_hostile(ADDRESS), "extra": JSON}
)
STATIC = st.one_of(
    CIDR, st.fixed_dictionaries({"address": sometimes_hostile(CIDR)}, optional={"gateway": sometimes_hostile(ADDRESS)})
)
PLAUSIBLE = {
    **RANGE_KEYS,
    "range": sometimes_hostile(RANGE),
    "ipRanges": st.lists(sometimes_hostile(IP_RANGE), max_size=4),
    "type": st.just("whereabouts"),
    "gateway": ADDRESS,
    "routes": st.lists(sometimes_hostile(ROUTE), max_size=3),
    "dns": st.dictionaries(st.sampled_from(["nameservers", "domain", "search"]), JSON, max_size=3),
    "addresses": st.lists(sometimes_hostile(STATIC), max_size=3),
    "network_name": st.text(max_size=10),
    "enable_overlapping_ranges": st.sampled_from([True, False, "true", "False"]),
    "node_slice_size": st.sampled_from(["/26", "26", "/0", "/129", "/", " /28 "]),
    "datastore": st.sampled_from(["local", "etcd", "kubernetes", "sqlite"]),
    "kubernetes": st.fixed_dictionaries({}, optional={"kubeconfig": st.just("/etc/kubeconfig")}),
    "etcd_host": st.sampled_from(["127.0.0.1:2379", "http://a:1,https://b:2", " , "]),
    "etcd_username": st.just("user"),
    "etcd_password": st.just("secret"),
    "etcd_ca_cert_file": st.just("/ca.pem"),
    "local_data_dir": st.just("/var/lib/cni/whereabouts"),
    "log_level": st.sampled_from(["debug", "verbose", "error"]),
    "reconciler_cron_expression": st.just("30 4 * * *"),
    "sleep_for_race": st.integers(),
}
KEYS = sorted({*PLAUSIBLE, "configuration_path", "etcd_key_file", "etcd_cert_file", "etcd_prefix", "log_file"})
# Where the ranges come from: `range`, `ipRanges`, both, or (rarely) neither.
RANGES = st.integers(1, 3).flatmap(
    lambda n: [
        st.fixed_dictionaries({"range": sometimes_hostile(RANGE)}),
        st.fixed_dictionaries({"ipRanges": st.lists(sometimes_hostile(IP_RANGE), min_size=1, max_size=4)}),
        st.fixed_dictionaries({"range": sometimes_hostile(RANGE), "ipRanges": st.lists(IP_RANGE, max_size=3)}),
    ][n - 1]
)


def assembled(ranges: dict[str, Any], rest: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    return {**rest, **ranges, **dict(overrides)}


# A plausible config (each key often valid, nested items sometimes hostile), then a few keys made hostile.
# (A hostile configuration_path string is a path that does not exist, or at worst a file that is no JSON.)
IPAM = st.builds(
    assembled,
    RANGES,
    st.fixed_dictionaries({}, optional={k: v for k, v in PLAUSIBLE.items() if k != "range"}),
    st.lists(st.tuples(st.sampled_from(KEYS), HOSTILE), max_size=2),
)


@settings(max_examples=600)
@given(ipam=IPAM, netconf_name=HOSTILE)
@example(ipam={"range": "10.0.0.0/24", "node_slice_size": "/" + "9" * 5000, "datastore": "kubernetes"}, netconf_name="")
@example(ipam={"range": "10.0.0.0/24", "routes": [Deep(5000, "list")]}, netconf_name="")
@example(ipam={"range": Deep(5000, "list")}, netconf_name="")
@example(ipam={"range": "10.0.0.0/24", "gateway": 10**4200}, netconf_name="")
@example(ipam={"ipRanges": [Deep(3000, "dict")]}, netconf_name="")
def test_every_config_parses_or_is_refused_with_code_6_or_7(ipam: dict[str, Any], netconf_name: object) -> None:
    ipam = built({"configuration_path": MISSING_FLAT_FILE, **ipam})
    try:
        cfg = load_ipam(ipam, built(netconf_name))
    except (InvalidConfig, UndecodableConfig) as refused:
        assert refused.code in (6, 7)
        assert refused.msg.startswith(("invalid ", "cannot decode ")), refused.msg
        assert len(refused.msg) < 2000, "the message quotes the bad value bounded, not whole"
        return
    assert isinstance(cfg, IPAMConfig)
    assert cfg.ranges and all(rng.version in (4, 6) for rng in cfg.ranges)
