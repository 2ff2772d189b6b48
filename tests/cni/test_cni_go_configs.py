"""Network configs and CNI_ARGS the Go plugin serves, served here through the executable, with a warning in the
plugin's log where the Go plugin reads the config its own way (tests/test_go_readings.py has the readings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cni_helpers import add, failed

from support import netconf, run_cni

pytestmark = pytest.mark.local_only  # config readings: the same whatever the store


def logged(conf: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    log = tmp_path / "whereabouts.log"
    return {**conf, "ipam": {**conf["ipam"], "log_file": str(log)}}, log


def test_leading_zero_addresses_are_served_as_the_go_plugin_reads_them(tmp_path: Path) -> None:
    conf, log = logged(netconf(tmp_path, range="0010.00001.1.0/24", range_start="0010.1.001.44",
                               range_end="10.1.1.045", exclude=["010.1.1.44"]), tmp_path)  # fmt: skip
    assert add(conf, "c1") == ["10.1.1.45/24"]
    assert failed(run_cni("ADD", conf, container_id="c2"), 101)["msg"]  # the window 44-45 is full
    lines = log.read_text().splitlines()
    warnings = [line for line in lines if "[warning]" in line and "leading zeros dropped" in line]
    for written in ("'0010.00001.1.0/24'", "'0010.1.001.44'", "'10.1.1.045'", "'010.1.1.44'"):
        assert any(written in w for w in warnings), lines


def test_a_range_end_past_the_range_is_clamped_to_it_not_refused(tmp_path: Path) -> None:
    """A NAD the Go plugin serves: refused with code 7 until now."""
    conf, log = logged(netconf(tmp_path, range="10.0.0.0/30", range_end="10.0.1.9"), tmp_path)
    assert add(conf, "c1") == ["10.0.0.1/30"]
    assert add(conf, "c2") == ["10.0.0.2/30"]
    failed(run_cni("ADD", conf, container_id="c3"), 101)  # 10.0.0.3 is the broadcast address
    assert "range range_end '10.0.1.9' lies past range 10.0.0.0/30: ignored" in log.read_text()


@pytest.mark.parametrize("ignore_unknown", ["IgnoreUnknown=true;", ""], ids=["with-ignore-unknown", "alone"])
def test_cni_args_gateway_is_the_gateway_of_requested_and_static_addresses(tmp_path: Path, ignore_unknown: str) -> None:
    conf = netconf(tmp_path, range="10.0.0.0/24", gateway="10.0.0.1",
                   ipRanges=[{"range": "10.2.0.0/24"}], addresses=[{"address": "10.9.0.5/24"}])  # fmt: skip
    args = f"{ignore_unknown}IP=10.0.0.7/24;GATEWAY=10.0.0.254,10.9.0.1,10.5.0.1"
    result = run_cni("ADD", conf, cni_args=args)
    assert result.returncode == 0, result.stdout
    assert result.json["ips"] == [
        {"address": "10.0.0.7/24", "gateway": "10.0.0.254"},  # requested: GATEWAY= replaces the config's
        {"address": "10.2.0.1/24", "gateway": "10.0.0.1"},  # picked automatically: the config's gateway, as ever
        {"address": "10.9.0.5/24", "gateway": "10.9.0.1"},  # static
    ]


def test_a_bad_cni_args_gateway_is_a_config_error_naming_it(tmp_path: Path) -> None:
    error = failed(run_cni("ADD", netconf(tmp_path, range="10.0.0.0/24"), cni_args="GATEWAY=10.0.0.300"), 7)
    assert "GATEWAY" in error["msg"] and "10.0.0.300" in error["msg"]
