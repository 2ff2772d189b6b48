"""Bad input and failing ADDs: the right CNI error code, a message naming what is wrong, nothing allocated."""

from __future__ import annotations

import json

import pytest
from cni_helpers import add, failed, held
from datastores import KubernetesDatastore

from support import netconf, run_cni

GOOD = {"range": "10.0.0.0/24"}


def assert_nothing_allocated(tmp_path, expected_held=()):
    """The store holds exactly `expected_held`, and a fresh ADD still gets the lowest free address."""
    assert held(tmp_path) == sorted(expected_held)
    assert add(netconf(tmp_path, **GOOD), "after") == ["10.0.0.1/24"]


RAW = [
    ("{not json", 6, "decode"),
    ('{"cniVersion": "1.0.0",', 6, "decode"),
    (b"\xff\xfe\x00", 6, "decode"),
    ("[1, 2]", 6, "object"),
    ('"a string"', 6, "object"),
    ("42", 6, "object"),
    ("null", 6, "object"),
    ("[" * 5000 + "]" * 5000, 6, "decode"),  # deeper than the JSON decoder goes: not code 100
    ('{"cniVersion": "1.0.0", "ipam": ' + '{"a": ' * 3000 + "1" + "}" * 3001, 6, "decode"),
]


@pytest.mark.parametrize(("stdin", "code", "word"), RAW, ids=[repr(s)[:20] for s, _, _ in RAW])
def test_undecodable_config(tmp_path, stdin, code, word):
    error = failed(run_cni("ADD", stdin), code)
    assert word in error["msg"]
    assert_nothing_allocated(tmp_path)


@pytest.mark.parametrize("version", ["0.5.0", "2.0.0", "1.2.0", "banana", "1.0"], ids=str)
def test_unsupported_cni_version_is_code_1(tmp_path, version):
    error = failed(run_cni("ADD", netconf(tmp_path, version, **GOOD)), 1)
    assert version in error["msg"]
    assert_nothing_allocated(tmp_path)


# (ipam keys replacing GOOD's, texts the message must contain: the key and the offending value)
INVALID = [
    ({"range": "10.0.0.0/33"}, ["range", "10.0.0.0/33"]),
    ({"range": "not-a-cidr"}, ["range", "not-a-cidr"]),
    ({"range": "10.0.0.1"}, ["range", "10.0.0.1"]),
    ({"range": "10.0.0.9-10.0.0.3/24"}, ["range", "10.0.0.9-10.0.0.3/24"]),
    ({"range": "10.0.0.9-10.0.1.3/24"}, ["range", "10.0.0.9-10.0.1.3/24"]),
    ({"range": "10.0.0.9-bad/24"}, ["range", "10.0.0.9-bad/24"]),
    ({"range": "10.0.0.0/24", "exclude": ["zz"]}, ["exclude", "zz"]),
    ({"range": "10.0.0.0/24", "exclude": ["10.0.0.9-10.0.0.1"]}, ["exclude", "10.0.0.9-10.0.0.1"]),
    ({"range": "10.0.0.0/24", "exclude": ["10.0.0.0/40"]}, ["exclude", "10.0.0.0/40"]),
    ({"range": "10.0.0.0/24", "exclude": "10.0.0.5"}, ["exclude", "10.0.0.5"]),
    ({"range": "10.0.0.0/24", "range_start": "bad"}, ["range_start", "bad"]),
    ({"range": "10.0.0.0/24", "range_start": "10.0.1.5"}, ["range_start", "10.0.1.5"]),
    ({"range": "10.0.0.0/24", "range_end": "fd00::5"}, ["range_end", "fd00::5"]),
    ({"ipRanges": [{"range": "10.0.0.0/24", "range_start": "x"}]}, ["ipRanges[0]", "range_start", "x"]),
    ({"ipRanges": [{"range": "10.0.0.0/24"}, {"range": "bogus/8"}]}, ["ipRanges[1]", "bogus/8"]),
    ({"range": "10.0.0.0/24", "gateway": "nope"}, ["gateway", "nope"]),
    ({"range": "10.0.0.0/24", "gateway": "10.0.0.1/24"}, ["gateway", "10.0.0.1/24"]),
    ({"range": "10.0.0.0/24", "routes": {"dst": "0.0.0.0/0"}}, ["routes", "0.0.0.0/0"]),
    ({"range": "10.0.0.0/24", "routes": [{"dst": "x"}]}, ["route", "x"]),
    ({"range": "10.0.0.0/24", "routes": [{"gw": "10.0.0.1"}]}, ["route", "10.0.0.1"]),
    ({"range": "10.0.0.0/24", "routes": [{"dst": "10.9.0.0/16", "gw": "nope"}]}, ["route gw", "nope"]),
    ({"range": "10.0.0.0/24", "routes": [{"dst": "10.9.0.0/16", "gw": "10.0.0.1/24"}]}, ["route gw", "10.0.0.1/24"]),
    (
        {"range": "10.0.0.0/24", "addresses": [{"address": "10.9.9.9/24", "gateway": "10.9.9.1/24"}]},
        ["gateway", "10.9.9.1/24"],
    ),
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": "yes"}, ["enable_overlapping_ranges", "yes"]),
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": 1}, ["enable_overlapping_ranges", "1"]),
    ({"range": "10.0.0.0/24", "datastore": "mongo"}, ["datastore", "mongo"]),
    ({"range": "10.0.0.0/24", "type": "host-local"}, ["type", "host-local"]),
    ({"range": "10.0.0.0/24", "addresses": [{"address": "10.9.9.9"}]}, ["address", "10.9.9.9"]),
    ({"range": None}, ["range"]),
    ({"range": None, "ipRanges": []}, ["range"]),
    ({"range": None, "ipRanges": [{"range_start": "10.0.0.5"}]}, ["ipRanges[0]", "range"]),
    # an IPv6 zone: the Go plugin's net.ParseIP/ParseCIDR refuse it, and a result would carry it or drop it
    ({"range": "fe80::%eth0/64"}, ["range", "fe80::%eth0/64"]),
    ({"range": "fd00::1%eth0-fd00::9/64"}, ["range", "fd00::1%eth0-fd00::9/64"]),
    ({"range": "fd00::/64", "gateway": "fd00::1%eth0"}, ["gateway", "fd00::1%eth0"]),
    ({"range": "fd00::/64", "range_start": "fd00::5%eth0"}, ["range_start", "fd00::5%eth0"]),
    ({"range": "fd00::/64", "exclude": ["fd00::%eth0/120"]}, ["exclude", "fd00::%eth0/120"]),
    ({"range": "fd00::/64", "exclude": ["fd00::5%eth0"]}, ["exclude", "fd00::5%eth0"]),
    ({"range": "10.0.0.0/24", "addresses": [{"address": "fd01::5%eth0/64"}]}, ["address", "fd01::5%eth0/64"]),
    ({"range": "10.0.0.0/24", "routes": [{"dst": "fd05::%eth0/64"}]}, ["route", "fd05::%eth0/64"]),
    # a relative directory means another store to the node daemon than to the executable
    ({"local_data_dir": "whereabouts-data"}, ["local_data_dir", "whereabouts-data", "absolute"]),
    ({"local_data_dir": "/var/lib/x\u0000y"}, ["local_data_dir", "absolute"]),
    ({"log_level": "silly"}, ["log_level", "silly", "debug"]),
    ({"log_file": "calls.log"}, ["log_file", "calls.log"]),
    ({"configuration_path": "etc/whereabouts.conf"}, ["configuration_path", "etc/whereabouts.conf"]),
    ({"kubernetes": {"kubeconfig": "kubeconfig"}}, ["kubernetes.kubeconfig", "kubeconfig"]),
    # more digits than int() takes (4,300): not code 100
    ({"range": "10.0.0.0/24", "datastore": "kubernetes", "node_slice_size": "/" + "9" * 5000}, ["node_slice_size"]),
]


@pytest.mark.parametrize(("ipam", "words"), INVALID, ids=[json.dumps(i)[:60] for i, _ in INVALID])
def test_invalid_config_is_code_7_naming_key_and_value(tmp_path, ipam, words):
    conf = netconf(tmp_path, **{**GOOD, **ipam})
    conf["ipam"] = {k: v for k, v in conf["ipam"].items() if v is not None}
    error = failed(run_cni("ADD", conf), 7)
    for word in words:
        assert word in error["msg"], error
    assert_nothing_allocated(tmp_path)


def nested(depth: int) -> object:
    value: object = "0.0.0.0/0"
    for _ in range(depth):
        value = [value]
    return value


HUGE_OR_DEEP = [
    {"range": "10.0.0." + "9" * 100_000 + "/24"},
    {"range": "10.0.0.0/24", "routes": [nested(900)]},
    {"range": "10.0.0.0/24", "exclude": [{"k": nested(900)}]},
]


@pytest.mark.parametrize("ipam", HUGE_OR_DEEP, ids=["long-string", "deep-route", "deep-exclude"])
def test_a_huge_or_deep_bad_value_is_quoted_short(tmp_path, ipam):
    """The message quotes the bad value bounded: a 100 KB string or a list 900 deep is not echoed whole."""
    error = failed(run_cni("ADD", netconf(tmp_path, **ipam)), 7)
    assert len(error["msg"]) < 1000, error["msg"][:200]
    assert_nothing_allocated(tmp_path)


@pytest.mark.parametrize("ipam", [None, "whereabouts", ["x"]], ids=["missing", "string", "list"])
def test_missing_or_malformed_ipam_is_code_7(tmp_path, ipam):
    conf = netconf(tmp_path, **GOOD)
    if ipam is None:
        del conf["ipam"]
    else:
        conf["ipam"] = ipam
    error = failed(run_cni("ADD", conf), 7)
    assert "ipam" in error["msg"]
    assert_nothing_allocated(tmp_path)


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "1.0.0"], ids=str)
def test_exhausted_range_is_101_naming_range_and_container(tmp_path, version):
    conf = netconf(tmp_path, version, range="10.0.0.0/30")
    run_cni("ADD", conf, container_id="a")
    run_cni("ADD", conf, container_id="b")
    error = failed(run_cni("ADD", conf, container_id="late-pod"), 101)
    assert error["cniVersion"] == version
    assert "10.0.0.0/30" in error["msg"] and "late-pod" in error["msg"]
    assert held(tmp_path) == [("10.0.0.1", "a", "eth0"), ("10.0.0.2", "b", "eth0")]


def test_exhaustion_in_a_later_range_leaves_earlier_ranges_untouched(tmp_path):
    conf = netconf(tmp_path, ipRanges=[{"range": "10.0.0.0/24"}, {"range": "10.1.0.0/30"}])
    add(conf, "a")
    add(conf, "b")
    error = failed(run_cni("ADD", conf, container_id="c"), 101)
    assert "10.1.0.0/30" in error["msg"] and "c" in error["msg"]
    before = [
        ("10.0.0.1", "a", "eth0"),
        ("10.0.0.2", "b", "eth0"),
        ("10.1.0.1", "a", "eth0"),
        ("10.1.0.2", "b", "eth0"),
    ]
    assert held(tmp_path) == before
    run_cni("DEL", conf, container_id="a")
    assert add(conf, "d") == ["10.0.0.1/24", "10.1.0.1/30"]


def test_requested_address_taken_is_102_naming_address_and_holder(tmp_path):
    conf = netconf(tmp_path, ipRanges=[{"range": "fd00::/64"}, {"range": "10.0.0.0/24"}])
    add({**conf, "runtimeConfig": {"ips": ["10.0.0.7/24"]}}, "holder")
    error = failed(run_cni("ADD", {**conf, "runtimeConfig": {"ips": ["10.0.0.7/24"]}}, container_id="second"), 102)
    assert "10.0.0.7" in error["msg"] and "holder" in error["msg"] and "second" in error["msg"]
    # the IPv6 range was not allocated for the failed call either
    assert held(tmp_path) == [("10.0.0.7", "holder", "eth0"), ("fd00::1", "holder", "eth0")]


@pytest.mark.parametrize("ip", ["10.9.0.5", "10.9.0.5/24", "fd00:1::5", "10.0.0.0", "10.0.0.255"], ids=str)
def test_requested_address_outside_every_range_is_103(tmp_path, ip):
    conf = netconf(tmp_path, ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    error = failed(run_cni("ADD", {**conf, "runtimeConfig": {"ips": [ip]}}, container_id="x"), 103)
    assert ip.split("/")[0] in error["msg"]
    assert_nothing_allocated(tmp_path)


@pytest.mark.parametrize("how", ["runtimeConfig", "CNI_ARGS"])
def test_requested_gateway_is_103_and_the_range_still_serves(tmp_path, how):
    """A request bypasses exclude and the window, not the gateway: a pod holding its router's address breaks
    the network's routing (and the bridge's isGateway takes that address itself)."""
    conf = netconf(tmp_path, ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}], gateway="10.0.0.1")
    if how == "runtimeConfig":
        error = failed(run_cni("ADD", {**conf, "runtimeConfig": {"ips": ["10.0.0.1/24"]}}, container_id="x"), 103)
    else:
        error = failed(run_cni("ADD", conf, container_id="x", cni_args="IP=10.0.0.1"), 103)
    assert "10.0.0.1" in error["msg"] and "gateway" in error["msg"] and "10.0.0.0/24" in error["msg"]
    assert held(tmp_path) == []
    assert add(conf, "next") == ["10.0.0.2/24", "fd00::1/64"]  # (the gateway is never picked either)


@pytest.mark.parametrize(
    "ips",
    [["not-an-ip"], "10.0.0.5", [5], ["10.0.0.5", "10.0.0.300"], ["fd00::5%eth0/64"]],
    ids=["word", "string", "int", "one-bad", "zone"],
)
def test_malformed_requested_address_is_code_7(tmp_path, ips):
    conf = {**netconf(tmp_path, **GOOD), "runtimeConfig": {"ips": ips}}
    failed(run_cni("ADD", conf, container_id="x"), 7)
    assert_nothing_allocated(tmp_path)


def test_bad_input_after_allocations_leaves_them_intact(tmp_path):
    conf = netconf(tmp_path, **GOOD)
    add(conf, "a")
    failed(run_cni("ADD", netconf(tmp_path, range="10.0.0.0/33"), container_id="b"), 7)
    failed(run_cni("ADD", "{oops", container_id="b"), 6)
    failed(run_cni("DEL", netconf(tmp_path, range="bad"), container_id="a"), 7)
    assert held(tmp_path) == [("10.0.0.1", "a", "eth0")]
    assert add(conf, "b") == ["10.0.0.2/24"]


# (top-level keys replacing the network config's, texts the message must name)
INVALID_NETCONF = [
    ({"runtimeConfig": "x"}, ["runtimeConfig", "x"]),
    ({"runtimeConfig": [1]}, ["runtimeConfig", "[1]"]),
    ({"args": "x"}, ["args", "x"]),
    ({"args": {"cni": "x"}}, ["args.cni", "x"]),
    ({"args": {"cni": [1]}}, ["args.cni", "[1]"]),
    ({"cniVersion": 1}, ["cniVersion", "1"]),
    ({"cniVersion": ["1.0.0"]}, ["cniVersion", "1.0.0"]),
    ({"cniVersion": 1.1}, ["cniVersion", "1.1"]),
]


@pytest.mark.parametrize(("top", "words"), INVALID_NETCONF, ids=[json.dumps(t)[:40] for t, _ in INVALID_NETCONF])
def test_invalid_netconf_keys_are_code_7_not_100(tmp_path, top, words):
    error = failed(run_cni("ADD", {**netconf(tmp_path, **GOOD), **top}), 7)
    for word in words:
        assert word in error["msg"], error
    assert_nothing_allocated(tmp_path)


# where a lone surrogate goes: (top-level keys, ipam keys, the key path the message names)
SURROGATE_PLACES = [
    ({"name": "@"}, {}, "name"),
    ({}, {"network_name": "@"}, "ipam.network_name"),
    ({}, {"exclude": ["10.0.0.9", "@"]}, "ipam.exclude.1"),
    ({"args": {"cni": {"ips": ["@"]}}}, {}, "args.cni.ips.0"),
    ({}, {"local_data_dir": "/tmp/x@"}, "ipam.local_data_dir"),  # a high surrogate names no byte of a path
]


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDBFF", "\\uDFFF"])
@pytest.mark.parametrize(("top", "ipam", "where"), SURROGATE_PLACES, ids=[p for _, _, p in SURROGATE_PLACES])
def test_a_lone_surrogate_is_code_6_naming_where(tmp_path, top, ipam, where, escape):
    """JSON escapes it, no UTF-8 text holds it: a name with one failed every write (code 100), and would
    have been written nowhere anyway."""
    conf = {**netconf(tmp_path, **GOOD, **ipam), **top}
    error = failed(run_cni("ADD", json.dumps(conf).replace("@", escape)), 6)
    assert where in error["msg"] and "surrogate" in error["msg"], error
    assert_nothing_allocated(tmp_path)


def test_a_surrogate_pair_is_text(tmp_path):
    conf = json.dumps({**netconf(tmp_path, **GOOD), "name": "@"}).replace('"@"', '"\\ud83d\\ude00"')
    assert add(json.loads(conf), "a") == ["10.0.0.1/24"]


@pytest.mark.parametrize("name", [5, ["testnet"], {"a": 1}, True], ids=repr)
def test_a_name_that_is_no_string_is_code_7(tmp_path, name):
    """Read as "" it made GC's name check vacuous and named nothing in the store."""
    error = failed(run_cni("ADD", {**netconf(tmp_path, **GOOD), "name": name}), 7)
    assert error["msg"].startswith("invalid name"), error
    assert_nothing_allocated(tmp_path)


def test_json_nested_too_deeply_is_code_6(tmp_path):
    conf = json.dumps(netconf(tmp_path, **GOOD))
    deep = conf[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    error = failed(run_cni("ADD", deep), 6)
    assert "nested" in error["msg"]
    assert_nothing_allocated(tmp_path)


@pytest.mark.local_only
@pytest.mark.parametrize("below", ["", "store"], ids=["a file", "below a file"])
def test_local_data_dir_naming_a_file_is_code_7_not_retried_forever(tmp_path, below):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    data = blocker / below if below else blocker
    error = failed(run_cni("ADD", netconf(tmp_path, **GOOD, local_data_dir=str(data))), 7)
    assert "local_data_dir" in error["msg"] and str(data) in error["msg"]
    assert blocker.read_text() == "not a directory"


# network_name values no Kubernetes object may be named after (`<network_name>-<cidr>` and so on)
HOSTILE_NETWORK_NAMES = {
    "crlf-smuggled-delete": "x HTTP/1.1\r\nHost: h\r\n\r\nDELETE /apis/whereabouts.cni.cncf.io/v1alpha1/x HTTP/1.1",
    "dot-dot-slash": "../../../../api/v1/namespaces/kube-system/secrets",
    "uppercase": "Blue",
    "underscore": "blue_net",
    "ends-with-dot": "blue.",
    "nul": "blue\x00",
    "too-long-for-reservations": "n" * 240,  # `<network_name>-<address>` passes 253 characters
    "too-long-for-pools": "n" * 250,
}


@pytest.mark.parametrize("name", HOSTILE_NETWORK_NAMES.values(), ids=HOSTILE_NETWORK_NAMES.keys())
def test_a_network_name_that_makes_no_kubernetes_name(tmp_path, backend, name):
    """Refused (code 7, before any request) by the kubernetes datastore; elsewhere a name is plain data
    (an SQL parameter, an escaped etcd key segment) and works."""
    conf = netconf(tmp_path, **GOOD, network_name=name)
    if isinstance(backend, KubernetesDatastore):

        def requests() -> int:  # in the test's namespace: a node daemon's watches of other tests' go on meanwhile
            return sum(e.get("objectRef", {}).get("namespace") == backend.namespace for e in backend.server.audited())

        before = requests()
        error = failed(run_cni("ADD", conf), 7)
        assert error["msg"].startswith("invalid network_name"), error
        assert requests() == before  # not one request made
        assert_nothing_allocated(tmp_path)
    else:
        assert add(conf, "a") == ["10.0.0.1/24"]
        assert held(tmp_path) == [("10.0.0.1", "a", "eth0")]
        assert run_cni("DEL", conf, container_id="a").returncode == 0
        assert_nothing_allocated(tmp_path)
