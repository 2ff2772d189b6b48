"""Config sources through the executable: the flat file under the inline config, keys kept for compatibility."""

from __future__ import annotations

import json

import pytest
from cni_helpers import add, failed, held

from support import netconf, run_cni

# (flat file contents, inline ipam keys, expected result addresses with gateway)
MERGES = [
    ("range-from-file", {"range": "10.3.0.0/24"}, {}, [("10.3.0.1/24", None)]),
    ("inline-range-wins", {"range": "10.3.0.0/24"}, {"range": "10.4.0.0/24"}, [("10.4.0.1/24", None)]),
    ("gateway-from-file", {"gateway": "10.4.0.1"}, {"range": "10.4.0.0/24"}, [("10.4.0.2/24", "10.4.0.1")]),
    (
        "inline-gateway-wins",
        {"range": "10.4.0.0/24", "gateway": "10.4.0.1"},
        {"gateway": "10.4.0.2"},
        [("10.4.0.1/24", "10.4.0.2")],
    ),
    (
        "ipRanges-from-file",
        {"ipRanges": [{"range": "10.6.0.0/24"}, {"range": "fd06::/64"}]},
        {},
        [("10.6.0.1/24", None), ("fd06::1/64", None)],
    ),
    ("exclude-from-file", {"range": "10.3.0.0/24", "exclude": ["10.3.0.1-10.3.0.9"]}, {}, [("10.3.0.10/24", None)]),
]


@pytest.mark.parametrize(("flat", "inline", "expected"), [m[1:] for m in MERGES], ids=[m[0] for m in MERGES])
@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "dir"])
def test_flat_file_fills_keys_the_inline_config_leaves_unset(tmp_path, flat, inline, expected, as_dir):
    flat_dir = tmp_path / "whereabouts.d"
    flat_dir.mkdir()
    flat_file = flat_dir / "whereabouts.conf"
    flat_file.write_text(json.dumps(flat))
    conf = netconf(tmp_path, configuration_path=str(flat_dir if as_dir else flat_file), **inline)
    result = run_cni("ADD", conf)
    assert result.returncode == 0, result.stdout
    assert [(ip["address"], ip.get("gateway")) for ip in result.json["ips"]] == expected


def test_datastore_keys_from_the_flat_file(tmp_path, backend):
    store_dir = tmp_path / "from-file"
    flat = tmp_path / "flat.conf"
    flat.write_text(json.dumps({**backend.ipam(store_dir), "range": "10.3.0.0/24"}))
    conf = {
        "cniVersion": "1.0.0",
        "name": "n",
        "type": "bridge",
        "ipam": {"type": "whereabouts", "configuration_path": str(flat)},
    }
    assert add(conf, "a") == ["10.3.0.1/24"]
    assert held(store_dir) == [("10.3.0.1", "a", "eth0")]


@pytest.mark.local_only
def test_inline_local_data_dir_wins_over_the_flat_file(tmp_path):
    flat = tmp_path / "flat.conf"
    flat.write_text(json.dumps({"local_data_dir": str(tmp_path / "from-file")}))
    inline_dir = tmp_path / "inline"
    add(netconf(inline_dir, range="10.3.0.0/24", configuration_path=str(flat)), "a")
    assert held(inline_dir) == [("10.3.0.1", "a", "eth0")]
    assert not (tmp_path / "from-file").exists()


@pytest.mark.parametrize(
    "where", ["absent/whereabouts.conf", "a-file/whereabouts.conf"], ids=["absent", "under-a-file"]
)
def test_missing_flat_file_is_not_an_error(tmp_path, where):
    (tmp_path / "a-file").write_text("a regular file")
    conf = netconf(tmp_path, range="10.3.0.0/24", configuration_path=str(tmp_path / where))
    assert add(conf, "a") == ["10.3.0.1/24"]


@pytest.mark.parametrize("content", ["{broken", "[1]"], ids=["undecodable", "not-an-object"])
def test_unreadable_flat_file_is_code_7(tmp_path, content):
    flat = tmp_path / "flat.conf"
    flat.write_text(content)
    error = failed(run_cni("ADD", netconf(tmp_path, range="10.3.0.0/24", configuration_path=str(flat))), 7)
    assert str(flat) in error["msg"]
    assert held(tmp_path) == []


def test_invalid_value_in_the_flat_file_is_code_7(tmp_path):
    flat = tmp_path / "flat.conf"
    flat.write_text(json.dumps({"range": "10.3.0.0/24", "exclude": ["nope"]}))
    error = failed(run_cni("ADD", netconf(tmp_path, configuration_path=str(flat))), 7)
    assert "nope" in error["msg"]


GO_ONLY = [
    ("leader_lease_duration", {"leader_lease_duration": 1500}),
    ("leader_renew_deadline", {"leader_renew_deadline": 1000}),
    ("leader_retry_period", {"leader_retry_period": 500}),
    ("sleep_for_race", {"sleep_for_race": 1}),
    ("kubernetes.k8s_api_root", {"kubernetes": {"k8s_api_root": "https://10.96.0.1:443"}}),
    ("reconciler_cron_expression", {"reconciler_cron_expression": "30 4 * * *"}),
    ("log_level", {"log_level": "debug"}),
    (
        "all-at-once",
        {
            "leader_lease_duration": 1500,
            "leader_renew_deadline": 1000,
            "leader_retry_period": 500,
            "sleep_for_race": 0,
            "kubernetes": {"k8s_api_root": "https://10.96.0.1:443"},
        },
    ),
]


@pytest.mark.parametrize("extra", [g[1] for g in GO_ONLY], ids=[g[0] for g in GO_ONLY])
def test_keys_only_the_go_plugin_used_are_accepted(tmp_path, extra):
    conf = netconf(tmp_path, range="10.3.0.0/24", **extra)
    assert add(conf, "a") == ["10.3.0.1/24"]
    assert run_cni("DEL", conf, container_id="a").returncode == 0
    assert held(tmp_path) == []


@pytest.mark.local_only
@pytest.mark.parametrize("datastore", [None, "local"], ids=["default", "explicit"])
def test_local_datastore_keeps_a_sqlite_db_in_local_data_dir(tmp_path, datastore):
    extra = {"datastore": datastore} if datastore else {}
    add(netconf(tmp_path / "store", range="10.3.0.0/24", **extra), "a")
    assert held(tmp_path / "store") == [("10.3.0.1", "a", "eth0")]


def test_log_file_receives_a_line_per_call(tmp_path):
    log = tmp_path / "whereabouts.log"
    conf = netconf(tmp_path, range="10.3.0.0/24", log_file=str(log), log_level="verbose")
    add(conf, "ctr-logged")
    failed(run_cni("ADD", {**conf, "runtimeConfig": {"ips": ["10.9.9.9"]}}, container_id="ctr-failed"), 103)
    text = log.read_text()
    assert "ctr-logged" in text and "ctr-failed" in text
