"""GC speaks for one network config: it releases only allocations recorded under that config's `name`.

Three attachments share one range: `a1` of network config netA, `b1` and `b2` of netB. The runtime's list
for netA names netA's attachments only, so a GC of netA must not take b1 and b2 for stale.
"""

from __future__ import annotations

import pytest
from cni_helpers import add, failed, held

from support import LocalDatastore, netconf, run_cni

# GC gets only CNI_COMMAND and CNI_PATH from the runtime.
BARE_ENV = {"CNI_CONTAINERID": "", "CNI_IFNAME": "", "CNI_NETNS": ""}
POD_ARGS = "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0"
SHARED = [("10.0.0.1", "a1", "eth0"), ("10.0.0.2", "b1", "eth0"), ("10.0.0.3", "b2", "eth0")]


def configs(tmp_path, **ipam):
    """netA, netB and a config without a name, all on one range of the datastore under test.

    The config without a name writes entries with no name, byte for byte what the Go plugin (IPPool entries
    `{id, podref, ifname}`) and this plugin before it recorded names wrote."""
    conf = netconf(tmp_path, "1.1.0", range="10.0.0.0/24", **ipam)
    unnamed = {k: v for k, v in conf.items() if k != "name"}
    return {**conf, "name": "netA"}, {**conf, "name": "netB"}, unnamed


def gc(conf, valid):
    result = run_cni("GC", {**conf, "cni.dev/valid-attachments": valid}, env=BARE_ENV)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def attachments(*ids):
    return [{"containerID": cid, "ifname": "eth0"} for cid in ids]


def test_gc_leaves_other_network_configs_allocations_alone(tmp_path):
    net_a, net_b, _ = configs(tmp_path)
    add(net_a, "a1")
    add(net_b, "b1")
    add(net_b, "b2")
    add(net_a, "a2")
    gc(net_a, attachments("a1"))
    assert held(tmp_path) == SHARED  # a2 released; b1 and b2 are netB's, not netA's to judge
    gc(net_b, attachments("b2"))
    assert held(tmp_path) == [SHARED[0], SHARED[2]]


def test_gc_with_an_empty_list_releases_its_network_configs_allocations_but_never_an_unnamed_one(tmp_path):
    net_a, net_b, unnamed = configs(tmp_path)
    add(unnamed, "old")
    add(net_a, "a1")
    add(net_b, "b1")
    gc(net_a, [])
    assert held(tmp_path) == [("10.0.0.1", "old", "eth0"), ("10.0.0.3", "b1", "eth0")]
    gc(unnamed, [])  # a config without a name can prove nothing its own
    assert held(tmp_path) == [("10.0.0.1", "old", "eth0"), ("10.0.0.3", "b1", "eth0")]
    assert add(net_a, "new") == ["10.0.0.2/24"]


@pytest.mark.parametrize("request_keys", [{}, {"cni.dev/valid-attachments": None}], ids=["absent", "null"])
def test_gc_without_the_attachment_list_changes_nothing_and_logs_why(tmp_path, request_keys):
    log = tmp_path / "whereabouts.log"
    net_a, net_b, _ = configs(tmp_path, log_file=str(log))
    add(net_a, "a1")
    add(net_b, "b1")
    add(net_b, "b2")
    result = run_cni("GC", {**net_a, **request_keys}, env=BARE_ENV)
    assert (result.returncode, result.stdout) == (0, "")
    assert held(tmp_path) == SHARED
    assert "GC of network 'netA' changed nothing" in log.read_text()
    assert "cni.dev/valid-attachments" in log.read_text()


def test_entries_an_add_under_a_name_takes_over_become_that_configs(tmp_path):
    net_a, net_b, unnamed = configs(tmp_path)
    add(unnamed, "old")  # then ADD again (the runtime retrying) under netA
    add(unnamed, "web-old", cni_args=POD_ARGS)  # then the pod is recreated under netA
    add(net_b, "b1")
    assert add(net_a, "old") == ["10.0.0.1/24"]
    assert add(net_a, "web-new", cni_args=POD_ARGS) == ["10.0.0.2/24"]
    gc(net_b, attachments("b1"))
    assert held(tmp_path) == [("10.0.0.1", "old", "eth0"), ("10.0.0.2", "web-new", "eth0"), ("10.0.0.3", "b1", "eth0")]
    gc(net_a, attachments("web-new"))
    assert held(tmp_path) == [("10.0.0.2", "web-new", "eth0"), ("10.0.0.3", "b1", "eth0")]


def test_gc_on_a_store_every_node_shares_judges_only_its_own_nodes_allocations(tmp_path, backend):
    """The runtime's list names the attachments of its own host: on etcd or Kubernetes another node's
    allocations are missing from it and live. GC of node-a must leave node-b's alone (the next ADD anywhere
    would be given their addresses). The local store is the node's own: everything in it is that node's."""
    net_a, _, _ = configs(tmp_path)
    add(net_a, "a1", env={"NODENAME": "node-a"})
    add(net_a, "b1", env={"NODENAME": "node-b"})
    add(net_a, "a2", env={"NODENAME": "node-a"})
    result = run_cni("GC", {**net_a, "cni.dev/valid-attachments": attachments("a1")},
                     env={**BARE_ENV, "NODENAME": "node-a"})  # fmt: skip
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr
    if isinstance(backend, LocalDatastore):
        assert held(tmp_path) == [("10.0.0.1", "a1", "eth0")]
    else:
        assert held(tmp_path) == [("10.0.0.1", "a1", "eth0"), ("10.0.0.2", "b1", "eth0")]


UNMATCHABLE = [{"containerID": "a2"}, {"containerID": "a2", "ifname": None}, {"containerID": "a2", "ifname": ""},
               {"containerID": "", "ifname": "eth0"}]  # fmt: skip


@pytest.mark.parametrize("entry", UNMATCHABLE)
def test_gc_refuses_a_list_entry_without_its_interface_and_releases_nothing(tmp_path, entry):
    """An entry without its ifname matches no attachment: read as given, the address of an attachment the
    runtime lists as valid would be released."""
    net_a, _, _ = configs(tmp_path)
    add(net_a, "a1")
    add(net_a, "a2")
    result = run_cni("GC", {**net_a, "cni.dev/valid-attachments": [*attachments("a1"), entry]}, env=BARE_ENV)
    assert failed(result, 7)["msg"].startswith("invalid cni.dev/valid-attachments entry")
    assert held(tmp_path) == [("10.0.0.1", "a1", "eth0"), ("10.0.0.2", "a2", "eth0")]
