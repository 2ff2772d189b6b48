"""Config sources through the executable: the flat file under the inline config, keys kept for compatibility."""

from __future__ import annotations

import datetime
import json
import os
import re

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


def _no_file(tmp_path, kind):
    """What may stand where a config names a file, besides one: its path (made as needed)."""
    path = tmp_path / kind
    if kind == "dev-zero":
        return "/dev/zero"  # read without end: never opened
    if kind == "fifo":
        os.mkfifo(path)  # opening it waits for a writer: never opened
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text("{}" + " " * (1 << 20))  # valid JSON, over the 1 MiB a config file may hold
    return str(path)


@pytest.mark.local_only
@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "oversized"])
def test_a_flat_file_that_is_no_small_regular_file_is_code_7(tmp_path, kind):
    """Anyone who can write a network config names the path: a device or a FIFO must neither exhaust the memory
    nor hang the call (a timeout, so that a regression fails rather than hangs the suite)."""
    path = _no_file(tmp_path, kind)
    conf = netconf(tmp_path / "store", range="10.3.0.0/24", configuration_path=path)
    if kind == "directory":  # a directory is where `whereabouts.conf` is looked for: it is the directory here
        (tmp_path / kind / "whereabouts.conf").mkdir()
        path += "/whereabouts.conf"
    error = failed(run_cni("ADD", conf, timeout=20), 7)
    assert f"invalid configuration_path {path}: " in error["msg"], error
    assert ("larger than" if kind == "oversized" else "not a regular file") in error["msg"], error
    assert held(tmp_path / "store") == []


@pytest.mark.local_only
def test_a_symlinked_flat_file_is_read(tmp_path):
    """A ConfigMap mount is a chain of symlinks (`whereabouts.conf -> ..data/whereabouts.conf`, `..data ->
    ..2024_01_01...`): followed, as before."""
    mount = tmp_path / "mount"
    (mount / "..2024_01_01").mkdir(parents=True)
    (mount / "..2024_01_01" / "whereabouts.conf").write_text(json.dumps({"range": "10.3.0.0/24"}))
    (mount / "..data").symlink_to("..2024_01_01")
    (mount / "whereabouts.conf").symlink_to("..data/whereabouts.conf")
    assert add(netconf(tmp_path / "store", configuration_path=str(mount)), "a") == ["10.3.0.1/24"]
    assert add(netconf(tmp_path / "store", configuration_path=str(mount / "whereabouts.conf")), "b") == ["10.3.0.2/24"]


@pytest.mark.local_only
@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_a_log_file_that_is_no_regular_file_is_never_opened(tmp_path, kind):
    """The call is served and answered (a FIFO once blocked it after the commit: the address taken, no answer);
    nothing is written there, and a regular log_file gets its lines as before."""
    path = _no_file(tmp_path, kind)
    conf = netconf(tmp_path / "store", range="10.3.0.0/24", log_file=path, log_level="verbose")
    result = run_cni("ADD", conf, container_id="a", timeout=20)
    assert result.returncode == 0 and result.addresses() == ["10.3.0.1/24"], result.stdout
    assert held(tmp_path / "store") == [("10.3.0.1", "a", "eth0")]
    if kind == "directory":
        assert os.listdir(path) == []


@pytest.mark.local_only
@pytest.mark.in_process_only
def test_the_installed_flat_file_is_looked_at_first_even_at_one_of_the_go_plugin_paths():
    """install-cni's flat file (WHEREABOUTS_FLAT_FILE) comes first: an old Go plugin's flat file at an earlier
    default path must not win over it (it did when the installed one was itself a default path)."""
    from whereabouts.config import FLAT_FILE_PATHS, read_flat_file

    go_first, installed, go_last = FLAT_FILE_PATHS
    assert read_flat_file(None, installed=installed)[1] == (installed, go_first, go_last)


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
    """One line per call, stamped in UTC to the millisecond: calls of one second stay in order and apart."""
    log = tmp_path / "whereabouts.log"
    conf = netconf(tmp_path, range="10.3.0.0/24", gateway="10.3.0.1", log_file=str(log), log_level="verbose")
    before = datetime.datetime.now(datetime.UTC)
    add(conf, "ctr-logged")
    failed(run_cni("ADD", {**conf, "runtimeConfig": {"ips": ["10.9.9.9"]}}, container_id="ctr-failed"), 103)
    lines = log.read_text().splitlines()
    assert [line.split("container=")[1].split()[0] for line in lines] == ["ctr-logged", "ctr-failed"], lines
    for line in lines:
        stamp = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \[(verbose|error)\] pid=\d+ ADD ", line)
        assert stamp, line
        when = datetime.datetime.fromisoformat(stamp.group(1)).replace(tzinfo=datetime.UTC)
        assert before - datetime.timedelta(seconds=1) <= when <= datetime.datetime.now(datetime.UTC), line


def test_handing_out_the_address_a_bridge_takes_with_no_gateway_is_warned_about_once(tmp_path):
    """Without `gateway` the reference bridge plugin (isGateway) takes the subnet's first address for itself:
    the pod given that address has no connectivity. Warned when that address is handed out, not at every call."""
    log = tmp_path / "whereabouts.log"
    conf = netconf(tmp_path, range="10.3.0.0/29", log_file=str(log))
    assert add(conf, "first") == ["10.3.0.1/29"]
    add(conf, "second")
    warnings = [line for line in log.read_text().splitlines() if "[warning]" in line]
    assert len(warnings) == 1, warnings
    assert "10.3.0.1/29" in warnings[0] and "no gateway" in warnings[0] and "`gateway`" in warnings[0]
    quiet = tmp_path / "quiet.log"
    with_gateway = netconf(tmp_path / "gw", range="10.3.1.0/29", gateway="10.3.1.1", log_file=str(quiet))
    assert add(with_gateway, "third") == ["10.3.1.2/29"]
    assert not quiet.exists() or "[warning]" not in quiet.read_text()


@pytest.mark.in_process_only
def test_the_bridge_address_warning_reaches_the_runtime_log(tmp_path):
    """The plugin's stderr is the runtime's log (containerd's), where a log_file is rarely configured."""
    done = run_cni("ADD", netconf(tmp_path, range="10.3.2.0/29"))
    assert done.returncode == 0 and "whereabouts: warning: network" in done.stderr, done.stderr


ON_KUBERNETES = "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0"


def bare_conf(tmp_path, **ipam):
    """No datastore key at all, and a flat file only where a test writes one."""
    ipam = {"type": "whereabouts", "range": "10.7.0.0/24", "configuration_path": str(tmp_path / "none"), **ipam}
    return {"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": ipam}


@pytest.mark.local_only
def test_a_pod_without_a_configured_datastore_is_refused_not_served_from_the_node(tmp_path):
    """On Kubernetes a node-local store would give the same address to pods on two nodes: fail closed (the
    Go plugin does too), naming the flat-file paths looked at, and write nothing anywhere."""
    data = tmp_path / "data"
    error = failed(run_cni("ADD", bare_conf(tmp_path, local_data_dir=str(data)), cni_args=ON_KUBERNETES), 7)
    assert "datastore" in error["msg"] and str(tmp_path / "none") in error["msg"], error
    assert not data.exists()


@pytest.mark.local_only
def test_the_default_flat_file_paths_are_named_when_none_is_configured(tmp_path):
    conf = bare_conf(tmp_path, local_data_dir=str(tmp_path / "data"))
    del conf["ipam"]["configuration_path"]
    error = failed(run_cni("ADD", conf, cni_args=ON_KUBERNETES), 7)
    assert "/etc/cni/net.d/whereabouts.d/whereabouts.conf" in error["msg"], error


@pytest.mark.local_only
@pytest.mark.parametrize(
    ("ipam", "cni_args"),
    [({"datastore": "local"}, ON_KUBERNETES), ({}, ""), ({}, "IgnoreUnknown=true")],
    ids=["explicit-local-on-kubernetes", "outside-kubernetes", "no-pod-namespace"],
)
def test_the_local_store_serves_when_chosen_or_outside_kubernetes(tmp_path, ipam, cni_args):
    data = tmp_path / "data"
    conf = bare_conf(tmp_path, local_data_dir=str(data), **ipam)
    assert add(conf, "a", cni_args=cni_args) == ["10.7.0.1/24"]
    assert held(data) == [("10.7.0.1", "a", "eth0")]


@pytest.mark.local_only
def test_a_flat_file_naming_the_local_store_serves_a_pod(tmp_path):
    flat = tmp_path / "flat.conf"
    flat.write_text(json.dumps({"datastore": "local", "local_data_dir": str(tmp_path / "data")}))
    conf = bare_conf(tmp_path, configuration_path=str(flat))
    assert add(conf, "a", cni_args=ON_KUBERNETES) == ["10.7.0.1/24"]
