"""The plugin's side of Fast IPAM without a server: config checks, the node's name, the window in a slice."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from whereabouts.config import parse_ipam
from whereabouts.errors import InvalidConfig
from whereabouts.iptext import format_address, parse_address
from whereabouts.nodeslice import node_name, slice_pool_name, within_slice
from whereabouts.ranges import parse_range

KUBE = {"type": "whereabouts", "kubernetes": {"kubeconfig": "/etc/k.kubeconfig"}}


@pytest.mark.parametrize(
    ("ipam", "message"),
    [
        ({"range": "10.0.0.0/24", "node_slice_size": "/26"}, "need the kubernetes datastore, not local"),
        ({"range": "10.0.0.0/24", "node_slice_size": "/26", "etcd_host": "h:1"}, "not etcd"),
        ({**KUBE, "range": "10.0.0.0/24", "node_slice_size": "/16"}, "from /24 to /32"),
        ({**KUBE, "range": "fd00::/64", "node_slice_size": "/129"}, "from /64 to /128"),
        ({**KUBE, "range": "10.0.0.0/24", "node_slice_size": "26x"}, "expected a prefix length"),
        ({**KUBE, "range": "10.0.0.0/24", "node_slice_size": 26}, "expected a string"),
    ],
    ids=["local", "etcd", "wider-than-range", "v6-too-long", "not-a-number", "not-a-string"],
)
def test_invalid_node_slice_size(ipam: dict, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        parse_ipam(ipam)


@pytest.mark.parametrize("size", ["/26", "26", " /26"], ids=["slash", "bare", "space"])
def test_node_slice_size_becomes_a_prefix_length(size: str) -> None:
    cfg = parse_ipam({**KUBE, "range": "10.0.0.0/24", "node_slice_size": size}, "net")
    assert (cfg.slice_prefix, cfg.node_slice_size) == (26, "/26")


@pytest.mark.parametrize("mirror", [True, False], ids=["mirror-on", "mirror-off"])
def test_node_slices_take_overlapping_ranges_as_on_and_say_so(mirror: bool) -> None:
    """A re-slice leaves addresses in a node's old slice that its new slice overlaps: the reservations guard
    them, so they are always written (and the mirror-off refusal, which is about their absence, does not apply)."""
    kube = {"kubernetes": {**KUBE["kubernetes"], "ippool_mirror": mirror}}
    off = {**KUBE, **kube, "range": "10.0.0.0/24", "enable_overlapping_ranges": False}
    cfg = parse_ipam({**off, "node_slice_size": "/26"}, "net")
    assert cfg.overlapping
    (warning,) = cfg.warnings
    assert warning.startswith("enable_overlapping_ranges false read as true with node_slice_size")
    if mirror:  # without node slices it stays off, silently
        plain = parse_ipam(off, "net")
        assert not plain.overlapping and plain.warnings == ()


@pytest.mark.parametrize(
    ("ipam", "netconf_name", "expected"),
    [({"network_name": "blue"}, "testnet", "blue"), ({}, "testnet", "testnet")],
    ids=["network-name", "netconf-name"],
)
def test_node_slice_pool_name(ipam: dict, netconf_name: str, expected: str) -> None:
    cfg = parse_ipam({**KUBE, "range": "10.0.0.0/24", "node_slice_size": "/26", **ipam}, netconf_name)
    assert slice_pool_name(cfg) == expected


def test_node_name_sources(tmp_path: Path) -> None:
    config = tmp_path / "whereabouts.d"
    config.mkdir()
    base = {**KUBE, "range": "10.0.0.0/24", "node_slice_size": "/26"}
    in_dir = parse_ipam({**base, "configuration_path": str(config)}, "net")
    assert node_name(in_dir, "from-env") == "from-env"
    assert node_name(in_dir) == os.uname().nodename  # no nodename file: the hostname
    (config / "nodename").write_text("  worker-7\n")
    assert node_name(in_dir) == "worker-7"
    at_file = parse_ipam({**base, "configuration_path": str(config / "whereabouts.conf")}, "net")
    assert node_name(at_file) == "worker-7"  # the flat file's path: its directory


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "oversized"])
def test_a_nodename_file_that_is_no_small_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """Read when NODENAME is not set, from where `configuration_path` (any network config's author) points: a
    device must not be read without end, a FIFO must not block the call (the read runs on a thread, so that
    a regression fails the test rather than hangs it)."""
    config = tmp_path / "whereabouts.d"
    config.mkdir()
    nodename = config / "nodename"
    if kind == "dev-zero":
        nodename.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(nodename)
    elif kind == "directory":
        nodename.mkdir()
    else:
        nodename.write_text("worker-7" + " " * (1 << 20))
    cfg = parse_ipam(
        {**KUBE, "range": "10.0.0.0/24", "node_slice_size": "/26", "configuration_path": str(config)}, "net"
    )
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(node_name(cfg))
        except Exception as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    blocked = reader.is_alive()
    if blocked:  # in open(), waiting for a writer: one lets it go
        os.close(os.open(nodename, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    assert not blocked, "blocked on the FIFO"
    assert len(outcome) == 1 and isinstance(outcome[0], InvalidConfig), outcome
    assert f"invalid nodename file {nodename}: " in outcome[0].msg
    assert ("larger than" if kind == "oversized" else "not a regular file") in outcome[0].msg


def addresses(text: str) -> int:
    return parse_address(text)[1]


@pytest.mark.parametrize(
    ("options", "slice_cidr", "window", "excluded"),
    [
        ({}, "10.0.0.64/26", ("10.0.0.64", "10.0.0.127"), []),
        ({}, "10.0.0.0/26", ("10.0.0.1", "10.0.0.63"), []),  # the range's network address stays out
        ({}, "10.0.0.192/26", ("10.0.0.192", "10.0.0.254"), []),  # and its broadcast address
        ({"range_start": "10.0.0.70", "range_end": "10.0.0.90"}, "10.0.0.64/26", ("10.0.0.70", "10.0.0.90"), []),
        ({"exclude": ["10.0.0.60-10.0.0.66", "10.0.0.100/30", "10.0.0.200"]}, "10.0.0.64/26",
         ("10.0.0.64", "10.0.0.127"), [("10.0.0.64", "10.0.0.66"), ("10.0.0.100", "10.0.0.103")]),
        ({"gateway": "10.0.0.65"}, "10.0.0.64/26", ("10.0.0.64", "10.0.0.127"), [("10.0.0.65", "10.0.0.65")]),
    ],
    ids=["inner", "first-slice", "last-slice", "start-end", "excludes-clipped", "gateway"],
)  # fmt: skip
def test_window_within_a_slice(options: dict, slice_cidr: str, window: tuple, excluded: list) -> None:
    rng = parse_range("10.0.0.0/24", key="range", gateway=options.pop("gateway", None), **options)
    network, prefix = slice_cidr.split("/")
    lo = addresses(network)
    narrowed = within_slice(rng, lo, lo + (1 << (32 - int(prefix))) - 1)
    assert (narrowed.cidr, narrowed.prefix) == ("10.0.0.0/24", 24)  # results carry the whole range's prefix
    assert (format_address(4, narrowed.first), format_address(4, narrowed.last)) == window
    assert [(format_address(4, a), format_address(4, b)) for a, b in narrowed.excluded] == excluded
