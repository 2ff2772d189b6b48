"""Moving allocations without renumbering: `export` / `import` between the local store, etcd and Kubernetes (every
entry with its holder and sticky fields; the plugin then serves the same attachments from the new store), and
`import host-local` of a directory the real host-local plugin wrote."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bed import Bed
from tool import run_tool

from etcd_server import EtcdServer
from kube_server import KubeAPIServer
from support import netconf, run_cni

HOST_LOCAL = "/usr/lib/cni/host-local"


def add(conf: dict[str, Any], pod: str, container: str, ifname: str = "eth0", namespace: str = "ns") -> str:
    done = run_cni("ADD", conf, container_id=container, ifname=ifname,
                   cni_args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.addresses()[0]


def delete(conf: dict[str, Any], pod: str, container: str, ifname: str = "eth0", namespace: str = "ns") -> None:
    done = run_cni("DEL", conf, container_id=container, ifname=ifname,
                   cni_args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def pools_of(document: str) -> list[dict[str, Any]]:
    doc = json.loads(document)
    assert doc["kind"] == "WhereaboutsExport" and doc["version"] == 1
    pools: list[dict[str, Any]] = doc["pools"]
    return pools


@pytest.fixture
def bed(kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path) -> Bed:
    return Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)


def test_local_to_etcd_to_kubernetes_keeps_every_holder(
    etcd: EtcdServer, etcd_prefix: str, bed: Bed, tmp_path: Path
) -> None:
    data, ns = tmp_path / "data", bed.pods_ns
    plain, sticky = netconf(data, range="10.77.0.0/24"), netconf(data, range="10.78.0.0/28", network_name="blue",
                                                                 sticky="pod")  # fmt: skip
    bed.pod("a")
    bed.pod("b")
    assert add(plain, "a", "ctr-a", namespace=ns) == "10.77.0.1/24"
    assert add(plain, "b", "ctr-b", "net1", namespace=ns) == "10.77.0.2/24"
    assert add(sticky, "web-0", "ctr-w", namespace=ns) == "10.78.0.1/28"
    delete(sticky, "web-0", "ctr-w", namespace=ns)  # retained for pod:<ns>/web-0/eth0
    exported = run_tool("--local-data-dir", str(data), "export").ok().stdout
    entries = {e["address"]: e for pool in pools_of(exported) for e in pool["entries"]}
    assert entries["10.77.0.2"] == {"address": "10.77.0.2", "containerID": "ctr-b", "ifname": "net1",
                                    "podref": f"{ns}/b", "netconf": "testnet", "reserved": True}  # fmt: skip
    assert entries["10.78.0.1"]["sticky"] == f"pod:{ns}/web-0/eth0" and entries["10.78.0.1"]["retained"] > 0
    (tmp_path / "pools.json").write_text(exported)
    etcd_args = ("--etcd", etcd.url, "--etcd-prefix", etcd_prefix)
    imported = run_tool(*etcd_args, "import", str(tmp_path / "pools.json")).ok().stdout
    assert imported.splitlines() == ["pool 10.77.0.0-24: 2 address(es) in place",
                                     "pool blue-10.78.0.0-28: 1 address(es) in place"]  # fmt: skip
    from_etcd = run_tool(*etcd_args, "export").ok().stdout
    assert pools_of(from_etcd) == pools_of(exported)
    (tmp_path / "etcd.json").write_text(from_etcd)
    bed.tool("import", str(tmp_path / "etcd.json")).ok()
    assert pools_of(bed.tool("export").ok().stdout) == pools_of(exported)
    assert bed.errors() == []  # every entry with its reservation
    # the plugin, now on Kubernetes, serves the same attachments: same addresses, DEL finds them, sticky holds
    kube_plain = bed.conf("10.77.0.0/24")
    kube_sticky = bed.conf("10.78.0.0/28", network_name="blue", sticky="pod")
    assert add(kube_plain, "a", "ctr-a", namespace=ns) == "10.77.0.1/24"
    delete(kube_plain, "b", "ctr-b", "net1", namespace=ns)
    assert add(kube_plain, "c", "ctr-c", namespace=ns) == "10.77.0.2/24"
    assert add(kube_sticky, "web-0", "ctr-w2", namespace=ns) == "10.78.0.1/28"  # its sticky key gets it back
    assert add(kube_sticky, "web-1", "ctr-x", namespace=ns) == "10.78.0.2/28"


def test_import_is_idempotent_and_refuses_an_address_held_by_another(tmp_path: Path) -> None:
    data = tmp_path / "data"
    conf = netconf(data, range="10.79.0.0/24")
    assert add(conf, "a", "ctr-a") == "10.79.0.1/24"
    document = run_tool("--local-data-dir", str(data), "export").ok().stdout
    (tmp_path / "pools.json").write_text(document)
    again = run_tool("--local-data-dir", str(data), "import", str(tmp_path / "pools.json")).ok()
    assert again.stdout == "pool 10.79.0.0-24: 1 address(es) in place\n"
    (tmp_path / "other.json").write_text(document.replace("ctr-a", "ctr-z"))
    refused = run_tool("--local-data-dir", str(data), "import", str(tmp_path / "other.json"))
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == ["pool 10.79.0.0-24: 0 address(es) in place",
                                           "  refused 10.79.0.1: held by container ctr-a eth0, pod ns/a"]  # fmt: skip
    fresh = tmp_path / "fresh"  # an import may make the local store it is pointed at
    run_tool("--local-data-dir", str(fresh), "import", str(tmp_path / "pools.json")).ok()
    assert add(netconf(fresh, range="10.79.0.0/24"), "a", "ctr-a") == "10.79.0.1/24"


def host_local(command: str, data_dir: Path, container: str, ifname: str) -> dict[str, Any]:
    """The reference host-local plugin, run as a runtime runs an IPAM plugin."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.80.0.0/24"}]], "dataDir": str(data_dir)}
    conf = {"cniVersion": "0.4.0", "name": "hl", "type": "bridge", "ipam": ipam}
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": ifname,
           "CNI_NETNS": "/var/run/netns/none", "CNI_PATH": "/usr/lib/cni"}  # fmt: skip
    done = subprocess.run([HOST_LOCAL], input=json.dumps(conf).encode(), capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def test_import_host_local_keeps_each_address_with_its_container(tmp_path: Path) -> None:
    if not os.access(HOST_LOCAL, os.X_OK):
        raise AssertionError(f"{HOST_LOCAL} missing: install Debian's containernetworking-plugins")
    hl = tmp_path / "host-local"
    given = {c: host_local("ADD", hl, c, i)["ips"][0]["address"] for c, i in (("h1", "eth0"), ("h2", "eth0"),
                                                                           ("h3", "net1"))}  # fmt: skip
    assert given == {"h1": "10.80.0.2/24", "h2": "10.80.0.3/24", "h3": "10.80.0.4/24"}
    assert {p.name for p in (hl / "hl").iterdir()} >= {"10.80.0.2", "10.80.0.3", "10.80.0.4", "last_reserved_ip.0"}
    (hl / "hl" / "10.80.0.9").write_text("h-old")  # written by host-local before 0.7: the container ID alone
    data = tmp_path / "data"
    conf = netconf(data, range="10.80.0.0/24", gateway="10.80.0.1")
    conf["name"] = "moved"
    (tmp_path / "moved.conf").write_text(json.dumps(conf))
    done = run_tool("--config", str(tmp_path / "moved.conf"), "import", "host-local", str(hl / "hl"), "--node", "n1")
    assert done.ok().stdout == "pool 10.80.0.0-24: 4 address(es) in place\n"
    holders = json.loads(run_tool("--local-data-dir", str(data), "show", "-A", "-o", "json").ok().stdout)["items"]
    assert [(h["address"], h["container"], h["ifname"], h["netconf"], h["node"]) for h in holders] == [
        ("10.80.0.2", "h1", "eth0", "moved", "n1"),
        ("10.80.0.3", "h2", "eth0", "moved", "n1"),
        ("10.80.0.4", "h3", "net1", "moved", "n1"),
        ("10.80.0.9", "h-old", "eth0", "moved", "n1"),
    ]
    assert add(conf, "p1", "h1") == "10.80.0.2/24"  # the same container keeps its address
    assert add(conf, "p3", "h3", "net1") == "10.80.0.4/24"
    delete(conf, "p2", "h2")  # its DEL, now through whereabouts, finds it
    assert add(conf, "new", "n-1") == "10.80.0.3/24"
    assert add(conf, "new2", "n-2") == "10.80.0.5/24"  # never one of the imported


@pytest.mark.parametrize(
    ("pool", "says"),
    [
        ({"range": "10.81.0.7/24"}, "10.81.0.7/24 has host bits set"),
        ({"range": "fd00:81:0::/120", "entries": [{"address": "fd00:81::5", "containerID": "c"}]},
         "range 'fd00:81:0::/120' is not written as the plugin writes it (fd00:81::/120)"),
        ({"range": 42}, "range 42 is not a CIDR"),
        ({"entries": [{"address": "10.81.1.9", "containerID": "c"}]},
         "address 10.81.1.9 is outside range 10.81.0.0/24"),
        ({"entries": [{"address": "10.81.0.0", "containerID": "c"}]},
         "address 10.81.0.0 is the network or broadcast address of range 10.81.0.0/24"),
        ({"entries": [{"address": "10.81.0.255", "containerID": "c"}]},
         "address 10.81.0.255 is the network or broadcast address of range 10.81.0.0/24"),
        ({"entries": [{"address": "10.81.0.6", "containerID": "x"}, {"address": "10.81.0.6", "containerID": "y"}]},
         "address 10.81.0.6 is given twice in pool 10.81.0.0-24, with two holders: container x"),
        ({"entries": [{"address": "10.81.0.5", "containerID": "h"}]},
         "address 10.81.0.5 is given twice in pool 10.81.0.0-24, with two holders: container g"),
        ({"entries": [{"address": "10.81.0.6", "containerID": "x", "retained": 10**30}]},
         f"retained {10**30} is no time"),
        ({"entries": [{"address": "10.81.0.6", "containerID": "x", "expires": -5}]}, "expires -5 is no time"),
    ],
    ids=["host-bits", "not-canonical", "not-text", "outside", "network-address", "broadcast-address",
         "address-twice-in-a-pool", "address-twice-in-a-repeated-pool", "retained-past-any-time", "expires-negative"],
)  # fmt: skip
def test_import_refuses_a_document_holding_what_no_allocation_would_read_and_writes_nothing(
    tmp_path: Path, pool: dict[str, Any], says: str
) -> None:
    """An edited export: a pool no ADD reads (its range spelled otherwise than the plugin writes it), or an address
    its range never hands out. The whole document is refused before anything is written (the good pool too)."""
    data = tmp_path / "data"
    conf = netconf(data, range="10.80.0.0/24")
    assert add(conf, "a", "ctr-a") == "10.80.0.1/24"
    before = run_tool("--local-data-dir", str(data), "export").ok().stdout
    good = {"network": "", "range": "10.81.0.0/24", "entries": [{"address": "10.81.0.5", "containerID": "g"}]}
    doc = {"kind": "WhereaboutsExport", "version": 1, "datastore": "local", "pools": [good, {**good, **pool}]}
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    refused = run_tool("--local-data-dir", str(data), "import", str(tmp_path / "edited.json"))
    assert refused.returncode == 2 and says in refused.stderr and "pools[1]" in refused.stderr, refused.stderr
    assert run_tool("--local-data-dir", str(data), "export").ok().stdout == before
    assert add(netconf(data, range="10.81.0.0/24"), "b", "ctr-b") == "10.81.0.1/24"


def test_import_of_a_document_nested_deeper_than_the_decoder_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    refused = run_tool("--local-data-dir", str(tmp_path / "data"), "import", str(tmp_path / "deep.json"))
    assert refused.returncode == 2 and "is not JSON" in refused.stderr, refused.stderr


def test_import_of_600_entries_into_etcd(etcd: EtcdServer, etcd_prefix: str, tmp_path: Path) -> None:
    """`kubectl whereabouts import` wrote 500 entries a commit: over 1000 keys, refused on every run by etcd's
    default limit of 128 operations a transaction (which the test etcd keeps). Its chunks fit the store now."""
    entries = [{"address": f"10.76.{i // 250}.{i % 250 + 1}", "containerID": f"ctr-{i}", "ifname": "eth0",
                "podref": f"ns/pod-{i}", "reserved": True} for i in range(600)]  # fmt: skip
    doc = {"kind": "WhereaboutsExport", "version": 1, "datastore": "local",
           "pools": [{"network": "", "range": "10.76.0.0/22", "node": "", "entries": entries}]}  # fmt: skip
    (tmp_path / "pools.json").write_text(json.dumps(doc))
    args = ("--etcd", etcd.url, "--etcd-prefix", etcd_prefix)
    imported = run_tool(*args, "import", str(tmp_path / "pools.json")).ok().stdout
    assert imported.splitlines() == ["pool 10.76.0.0-22: 600 address(es) in place"]
    stored = etcd.dump(etcd_prefix + "/")
    assert (
        len([k for k in stored if "/pools/" in k]) == 600 and len([k for k in stored if "/reservations/" in k]) == 600
    )
    again = run_tool(*args, "import", str(tmp_path / "pools.json")).ok().stdout  # nothing new: changes nothing
    assert again == imported


def test_import_of_a_repeated_identical_entry_writes_it_once(tmp_path: Path) -> None:
    entry = {"address": "10.83.0.5", "containerID": "c", "podref": "ns/a"}
    pool = {"network": "", "range": "10.83.0.0/24", "entries": [entry, dict(entry)]}
    doc = {"kind": "WhereaboutsExport", "version": 1, "datastore": "local", "pools": [pool, dict(pool)]}
    (tmp_path / "twice.json").write_text(json.dumps(doc))
    done = run_tool("--local-data-dir", str(tmp_path / "data"), "import", str(tmp_path / "twice.json")).ok()
    assert done.stdout == "pool 10.83.0.0-24: 1 address(es) in place\n"


def test_import_refuses_an_address_the_network_reserves_for_another_even_unmarked(tmp_path: Path) -> None:
    """An entry without `reserved` (a network without overlapping ranges in the source, or an edited export) still
    meets the target network's reservations: an address reserved for another attachment is held."""
    data = tmp_path / "data"
    assert add(netconf(data, range="10.82.0.0/24", network_name="blue"), "a", "ctr-a") == "10.82.0.1/24"
    entry = {"address": "10.82.0.1", "containerID": "ctr-b", "podref": "ns/b"}
    doc = {"kind": "WhereaboutsExport", "version": 1, "datastore": "local",
           "pools": [{"network": "blue", "range": "10.82.0.0/25", "entries": [entry]}]}  # fmt: skip
    (tmp_path / "other.json").write_text(json.dumps(doc))
    refused = run_tool("--local-data-dir", str(data), "import", str(tmp_path / "other.json"))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout.splitlines() == ["pool blue-10.82.0.0-25: 0 address(es) in place",
                                           "  refused 10.82.0.1: held by container ctr-a eth0, pod ns/a"]  # fmt: skip
    held = json.loads(run_tool("--local-data-dir", str(data), "show", "-A", "-o", "json").ok().stdout)["items"]
    assert [(h["address"], h["container"]) for h in held] == [("10.82.0.1", "ctr-a")]


def test_import_into_kubernetes_checks_every_name_before_writing_any(bed: Bed, tmp_path: Path) -> None:
    good = {"network": "", "range": "10.84.0.0/24", "entries": [{"address": "10.84.0.5", "containerID": "g"}]}
    bad = {"network": "Not_A_Name", "range": "10.85.0.0/24", "entries": [{"address": "10.85.0.5", "containerID": "b"}]}
    doc = {"kind": "WhereaboutsExport", "version": 1, "datastore": "local", "pools": [good, bad]}
    (tmp_path / "named.json").write_text(json.dumps(doc))
    refused = bed.tool("import", str(tmp_path / "named.json"))
    assert refused.returncode == 2 and "'Not_A_Name-10.85.0.0-24'" in refused.stderr, refused.stderr
    assert "nothing imported" in refused.stderr
    assert bed.held() == set()  # not even the good pool's entry
