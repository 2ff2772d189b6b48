"""Every verb through the executable: ADD, DEL, CHECK, VERSION, GC, STATUS, and the help text."""

from __future__ import annotations

import subprocess

import pytest
from cni_helpers import add, failed, full_env, held, run_plugin

from support import DAEMON, current_plugin, netconf, run_cni

ALL_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
# GC and STATUS get only CNI_COMMAND and CNI_PATH from the runtime.
BARE_ENV = {"CNI_CONTAINERID": "", "CNI_IFNAME": "", "CNI_NETNS": ""}


@pytest.mark.local_only
def test_calls_through_the_daemon_are_handed_over_by_the_compiled_relay(served):
    """As install-cni deploys it: the executable the runtime starts is the compiled relay."""
    with open(current_plugin(), "rb") as executable:
        assert (executable.read(4) == b"\x7fELF") == (served in ("daemon", "standin"))


def test_help_text_and_exit_0_without_cni_command():
    result = run_plugin({}, b"")
    assert result.returncode == 0
    assert "CNI_COMMAND" in result.stdout
    for version in ALL_VERSIONS:
        assert version in result.stdout


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ALL_VERSIONS)
def test_version_lists_supported_versions(version):
    result = run_plugin({"CNI_COMMAND": "VERSION"}, {"cniVersion": version})
    assert result.returncode == 0, result.stdout
    assert result.json == {"cniVersion": version, "supportedVersions": ALL_VERSIONS}


@pytest.mark.parametrize(
    ("stdin", "answered_in"),
    [
        (b'{"cniVersion": "1.2.0"}', "1.1.0"),  # libcni newer than the plugin asks in its own newest version
        (b'{"cniVersion": "9"}', "1.1.0"),
        (b'{"cniVersion": ["1.0.0"]}', "1.1.0"),
        (b"{not json", "1.1.0"),
        (b"[]", "1.1.0"),
        (b"", "0.1.0"),  # no cniVersion: 0.1.0, as for every verb
    ],
    ids=["newer", "not-a-version", "not-a-string", "not-json", "not-an-object", "empty"],
)
def test_version_answers_whatever_stdin_and_cni_args_hold(stdin, answered_in):
    """libcni's skel answers VERSION without reading stdin or CNI_ARGS: a runtime that asks with a newer
    cniVersion than ours must learn what we support, not get code 1."""
    result = run_plugin({"CNI_COMMAND": "VERSION", "CNI_ARGS": "no-equals-sign"}, stdin)
    assert result.returncode == 0, result.stdout
    assert result.json == {"cniVersion": answered_in, "supportedVersions": ALL_VERSIONS}


def test_add_then_del_frees_the_address_for_the_next_add(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    assert add(conf, "a") == ["10.0.0.1/24"]
    assert add(conf, "b") == ["10.0.0.2/24"]
    result = run_cni("DEL", conf, container_id="a")
    assert (result.returncode, result.stdout) == (0, "")
    assert held(tmp_path) == [("10.0.0.2", "b", "eth0")]
    assert add(conf, "c") == ["10.0.0.1/24"]


def test_del_releases_every_range_and_repeats_succeed(tmp_path):
    conf = netconf(tmp_path, ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    add(conf, "a")
    for _ in range(2):
        result = run_cni("DEL", conf, container_id="a")
        assert (result.returncode, result.stdout) == (0, "")
        assert held(tmp_path) == []


def test_del_releases_only_the_named_interface(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    add(conf, "a", ifname="eth0")
    add(conf, "a", ifname="net1")
    assert run_cni("DEL", conf, container_id="a", ifname="eth0").returncode == 0
    assert held(tmp_path) == [("10.0.0.2", "a", "net1")]


@pytest.mark.parametrize("deleted_under", ["new", "old"])
def test_a_range_widened_under_a_running_attachment_keeps_one_holder_per_address(tmp_path, backend, deleted_under):
    """ADD under the old range, ADD of the same attachment under the widened one, DEL under either config:
    another pod's ADD then never gets an address an entry still holds (the widened ADD resumed the old
    entry's reservation into a second entry, and the DEL of one freed the address under the other; on
    kubernetes, the DEL also dropped the reservation of the entry in the pool it did not read)."""
    old = netconf(tmp_path, "1.1.0", range="10.9.0.0/29", network_name="n")
    new = netconf(tmp_path, "1.1.0", range="10.9.0.0/28", network_name="n")
    assert add(old, "a") == ["10.9.0.1/29"]
    assert add(new, "a") == ["10.9.0.2/28"]  # its old address stays its old entry's
    assert run_cni("DEL", new if deleted_under == "new" else old, container_id="a").returncode == 0
    got = [add(new, "b")[0].split("/")[0], add(old, "c")[0].split("/")[0]]
    addresses = [address for address, _, _ in held(tmp_path)]
    assert len(addresses) == len(set(addresses)), held(tmp_path)
    assert all(holder == (address, cid, "eth0") for address, cid in zip(got, "bc", strict=True)
               for holder in held(tmp_path) if holder[0] == address)  # fmt: skip


@pytest.mark.local_only
def test_del_releases_a_range_dropped_from_a_dual_stack_config(tmp_path):
    conf = netconf(tmp_path, "1.1.0", ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    add(conf, "a")
    assert run_cni("DEL", netconf(tmp_path, "1.1.0", range="10.0.0.0/24"), container_id="a").returncode == 0
    assert held(tmp_path) == []


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"], ids=["0.4.0", "1.0.0", "1.1.0"])
def test_check_succeeds_while_held_and_fails_after_release(tmp_path, version):
    conf = netconf(tmp_path, version, ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    added = run_cni("ADD", conf, container_id="a")
    assert added.returncode == 0, added.stdout
    with_prev = {**conf, "prevResult": added.json}
    result = run_cni("CHECK", with_prev, container_id="a")
    assert (result.returncode, result.stdout) == (0, "")
    assert run_cni("DEL", with_prev, container_id="a").returncode == 0
    error = failed(run_cni("CHECK", with_prev, container_id="a"), 104)
    assert error["code"] >= 100
    assert "a" in error["msg"]


def test_check_fails_when_prev_result_names_an_address_not_held(tmp_path):
    conf = netconf(tmp_path, "1.0.0", range="10.0.0.0/24")
    add(conf, "a")
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.7/24"}]}
    error = failed(run_cni("CHECK", {**conf, "prevResult": prev}, container_id="a"), 104)
    assert "10.0.0.7" in error["msg"]


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1"], ids=["0.1.0", "0.2.0", "0.3.0", "0.3.1"])
def test_check_needs_0_4_0(tmp_path, version):
    conf = netconf(tmp_path, version, range="10.0.0.0/24")
    failed(run_cni("CHECK", conf, container_id="a"), 1)


@pytest.mark.parametrize(
    "key", ["cni.dev/valid-attachments", "cni.dev/attachments"], ids=["valid-attachments", "attachments"]
)
def test_gc_releases_attachments_not_listed(tmp_path, key):
    conf = netconf(tmp_path, "1.1.0", ipRanges=[{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}])
    for cid in ("g0", "g1", "g2"):
        add(conf, cid)
    keep = [{"containerID": "g1", "ifname": "eth0"}]
    result = run_cni("GC", {**conf, key: keep}, env=BARE_ENV)
    assert (result.returncode, result.stdout) == (0, "")
    assert held(tmp_path) == [("10.0.0.2", "g1", "eth0"), ("fd00::2", "g1", "eth0")]
    assert add(conf, "new") == ["10.0.0.1/24", "fd00::1/64"]


def test_gc_matches_container_and_ifname(tmp_path):
    conf = netconf(tmp_path, "1.1.0", range="10.0.0.0/24")
    add(conf, "a", ifname="eth0")
    add(conf, "a", ifname="net1")
    keep = [{"containerID": "a", "ifname": "net1"}]
    assert run_cni("GC", {**conf, "cni.dev/valid-attachments": keep}, env=BARE_ENV).returncode == 0
    assert held(tmp_path) == [("10.0.0.2", "a", "net1")]


@pytest.mark.parametrize("verb", ["GC", "STATUS"], ids=["GC", "STATUS"])
@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"], ids=["0.4.0", "1.0.0"])
def test_gc_and_status_need_1_1_0(tmp_path, verb, version):
    conf = netconf(tmp_path, version, range="10.0.0.0/24")
    add(conf, "a")
    failed(run_cni(verb, conf, env=BARE_ENV), 1)
    assert held(tmp_path) == [("10.0.0.1", "a", "eth0")]


def test_status_ok_prints_nothing(tmp_path):
    result = run_cni("STATUS", netconf(tmp_path, "1.1.0", range="10.0.0.0/24"), env=BARE_ENV)
    assert (result.returncode, result.stdout) == (0, "")


def test_status_50_when_a_range_is_exhausted(tmp_path):
    conf = netconf(tmp_path, "1.1.0", ipRanges=[{"range": "10.0.0.0/24"}, {"range": "10.1.0.0/30"}])
    add(conf, "a")
    assert run_cni("STATUS", conf, env=BARE_ENV).returncode == 0
    add(conf, "b")
    error = failed(run_cni("STATUS", conf, env=BARE_ENV), 50)
    assert "10.1.0.0/30" in error["msg"]
    assert held(tmp_path) == [
        ("10.0.0.1", "a", "eth0"),
        ("10.0.0.2", "b", "eth0"),
        ("10.1.0.1", "a", "eth0"),
        ("10.1.0.2", "b", "eth0"),
    ]


@pytest.mark.local_only
@pytest.mark.parametrize("verb", ["CHECK", "STATUS"])
def test_check_and_status_create_no_local_store(tmp_path, verb):
    """They only read: where no store is yet, CHECK finds nothing held and STATUS answers for the empty store
    the first ADD starts, and neither leaves a directory or a database behind."""
    data_dir = tmp_path / "none" / "yet"
    conf = netconf(data_dir, "1.1.0", range="10.0.0.0/30", reservations=[{"address": "10.0.0.2", "pod": "ns/db"}])
    result = run_cni(verb, conf, env=BARE_ENV if verb == "STATUS" else None)
    if verb == "CHECK":
        assert "holds no address" in failed(result, 104)["msg"]
    else:
        assert (result.returncode, result.stdout) == (0, "")
        conf["ipam"]["reservations"].append({"address": "10.0.0.1", "pod": "ns/web"})
        assert "10.0.0.0/30" in failed(run_cni(verb, conf, env=BARE_ENV), 50)["msg"]
    assert not (tmp_path / "none").exists()


@pytest.mark.local_only
@pytest.mark.parametrize("where", ["under-a-regular-file", "is-a-regular-file"], ids=["under-file", "is-file"])
def test_status_50_when_the_data_dir_cannot_be_used(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    data_dir = blocker / "store" if where == "under-a-regular-file" else blocker
    conf = netconf(data_dir, "1.1.0", range="10.0.0.0/24")
    error = failed(run_cni("STATUS", conf, env=BARE_ENV), 50)
    assert str(data_dir) in error["msg"]


@pytest.mark.local_only
@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK"], ids=str)
def test_a_lost_local_store_is_code_11_and_status_fails_until_the_loss_is_accepted(tmp_path, verb):
    """A store that existed and is now empty must not hand out addresses running containers may hold."""
    conf = netconf(tmp_path, "1.1.0", range="10.0.0.0/24")
    add(conf, "a")
    (tmp_path / "whereabouts.db").write_bytes(b"")
    error = failed(run_cni(verb, conf, container_id="b"), 11)
    assert str(tmp_path / "whereabouts.db") in error["msg"] and "--accept-store-loss" in error["msg"]
    status = failed(run_cni("STATUS", conf, env=BARE_ENV), 50)
    assert "lost" in status["msg"]
    accepted = subprocess.run([DAEMON, "--accept-store-loss", str(tmp_path)], capture_output=True, text=True)
    assert accepted.returncode == 0 and "starts empty" in accepted.stdout
    assert run_cni("STATUS", conf, env=BARE_ENV).returncode == 0
    assert add(conf, "b") == ["10.0.0.1/24"]


ENV_CASES = [
    ("ADD", "CNI_CONTAINERID"),
    ("ADD", "CNI_IFNAME"),
    ("ADD", "CNI_NETNS"),
    ("ADD", "CNI_PATH"),
    ("DEL", "CNI_CONTAINERID"),
    ("DEL", "CNI_IFNAME"),
    ("CHECK", "CNI_CONTAINERID"),
    ("CHECK", "CNI_IFNAME"),
]


@pytest.mark.parametrize("how", ["empty", "absent"], ids=["empty", "absent"])
@pytest.mark.parametrize(("verb", "missing"), ENV_CASES, ids=[f"{v}-{m}" for v, m in ENV_CASES])
def test_missing_required_environment_is_code_4(tmp_path, verb, missing, how):
    conf = netconf(tmp_path, "1.1.0", range="10.0.0.0/24")
    env = full_env(verb)
    if how == "empty":
        env[missing] = ""
    else:
        del env[missing]
    error = failed(run_plugin(env, conf), 4)
    assert missing in error["msg"]
    assert held(tmp_path) == []


def test_del_does_not_need_a_netns(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    add(conf, "a")
    env = full_env("DEL", "a")
    del env["CNI_NETNS"]
    result = run_plugin(env, conf)
    assert (result.returncode, result.stdout) == (0, "")
    assert held(tmp_path) == []


@pytest.mark.parametrize("command", ["", "ADDD", "add", "DELETE"], ids=["empty", "typo", "lowercase", "DELETE"])
def test_unknown_cni_command_is_code_4(tmp_path, command):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    env = {**full_env("ADD"), "CNI_COMMAND": command}
    error = failed(run_plugin(env, conf), 4)
    assert repr(command) in error["msg"]
    assert held(tmp_path) == []


CNI_ARGS_CASES = [
    ("FOO=bar", 4),
    ("K8S_POD_NAME=p;FOO=bar", 4),
    ("IgnoreUnknown=false;FOO=bar", 4),
    ("garbage", 4),
    ("IgnoreUnknown=true;FOO=bar", 0),
    ("IgnoreUnknown=1;FOO=bar;K8S_POD_UID=u", 0),
    ("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=u", 0),
]


@pytest.mark.parametrize(("cni_args", "code"), CNI_ARGS_CASES, ids=[a for a, _ in CNI_ARGS_CASES])
def test_cni_args_unknown_keys_need_ignore_unknown(tmp_path, cni_args, code):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    result = run_cni("ADD", conf, cni_args=cni_args)
    if code:
        failed(result, code)
        assert held(tmp_path) == []
    else:
        assert result.returncode == 0, result.stdout
        assert result.addresses() == ["10.0.0.1/24"]


def test_del_of_an_unknown_attachment_succeeds_silently(tmp_path):
    conf = netconf(tmp_path, range="10.0.0.0/24")
    add(conf, "a")
    result = run_cni("DEL", conf, container_id="never-added")
    assert (result.returncode, result.stdout) == (0, "")
    assert held(tmp_path) == [("10.0.0.1", "a", "eth0")]
