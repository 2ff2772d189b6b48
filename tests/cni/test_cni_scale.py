"""A config with 20,000 ranges through the real executable on the local store: every call in a few seconds.

Such a config once held the node's SQLite write lock for minutes per ADD (so other networks' ADDs on the
node failed), and CHECK and DEL had quadratic steps of their own. Each call here must cost at most
CPU_BUDGET seconds of the plugin's CPU time (measured, not wall time: the machine may be busy); a call still
running after TIMEOUT seconds fails the test.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest
from cni_helpers import held

from support import CNIResult, netconf, run_cni

pytestmark = pytest.mark.local_only

RANGES = 20_000
CPU_BUDGET = 5.0  # a call takes 1.5-3.2 s here, more on a contended machine; a quadratic pass takes minutes
TIMEOUT = 30


def timed(command: str, conf: dict[str, Any], container_id: str) -> CNIResult:
    before = _children_cpu()
    result = run_cni(command, conf, container_id=container_id, timeout=TIMEOUT)
    spent = _children_cpu() - before
    assert result.returncode == 0, result.stdout[:500] + result.stderr[-2000:]
    assert spent < CPU_BUDGET, f"{command} {container_id} took {spent:.2f} s of CPU for {RANGES} ranges"
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _slash24s(first: int) -> list[dict[str, str]]:
    return [{"range": f"10.{first + (i >> 8)}.{i & 255}.0/24"} for i in range(RANGES)]


def test_twenty_thousand_slash24s_add_check_and_del_elsewhere(tmp_path: Path) -> None:
    conf = netconf(tmp_path, ipRanges=_slash24s(0))
    first = timed("ADD", conf, "c1").addresses()
    assert first == [f"10.{i >> 8}.{i & 255}.1/24" for i in range(RANGES)]
    assert timed("ADD", conf, "c2").addresses() == [a.replace(".1/", ".2/") for a in first]
    assert timed("ADD", conf, "c1").addresses() == first
    timed("CHECK", {**conf, "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": a} for a in first]}}, "c1")
    # The config changed since: c1 holds nothing in the configured pools, so DEL finds and releases them elsewhere.
    timed("DEL", netconf(tmp_path, ipRanges=_slash24s(128)), "c1")
    assert {container for _, container, _ in held(tmp_path)} == {"c2"}


def test_twenty_thousand_windows_of_one_network(tmp_path: Path) -> None:
    """Overlapping ranges of one network_name, all one /16 (so one pool) through different windows."""
    starts = [f"10.0.{i % 250}.{1 + i // 250}" for i in range(RANGES)]
    ranges = [{"range": "10.0.0.0/16", "range_start": start} for start in starts]
    conf = netconf(tmp_path, network_name="net", ipRanges=ranges)
    first = timed("ADD", conf, "c1").addresses()
    assert first == [f"{start}/16" for start in starts]
    second = timed("ADD", conf, "c2").addresses()
    assert len(set(second)) == RANGES and not set(second) & set(first)
    assert timed("ADD", conf, "c1").addresses() == first
    timed("CHECK", {**conf, "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": a} for a in first]}}, "c1")
    timed("DEL", conf, "c1")
    assert len(held(tmp_path)) == RANGES
