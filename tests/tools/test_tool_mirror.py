"""`kubectl whereabouts mirror off|on` on a real kube-apiserver: a namespace the Go plugin wrote (entries with
reservations it left unlabelled, entries of a network without overlapping ranges that have none) moved to
kubernetes.ippool_mirror false and back, with the plugin running in between: no address handed out twice, and
the pools written back equal to the reservations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bed import Bed

from kube_server import KubeAPIServer
from support import netconf, run_cni


def test_mirror_off_then_on_keeps_every_holder(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    go = bed.pod("go-0")
    bed.go_pool("10.62.0.0-29", "10.62.0.0/29", {"1": ("ctr-go1", go, "net1"), "2": ("ctr-go2", go, "net2")})
    bed.go_reservation("10.62.0.1", "ctr-go1", go)  # the Go plugin's: no labels; 10.62.0.2 has none at all
    dry = bed.tool("mirror", "off", "--dry-run").ok().stdout
    assert "would create 1 reservation(s), would label 1" in dry
    assert bed.reservations() == {"10.62.0.1"}  # a dry run changes nothing
    assert "created 1 reservation(s), labelled 1" in bed.tool("mirror", "off").ok().stdout
    assert "created 0 reservation(s), labelled 0" in bed.tool("mirror", "off").ok().stdout  # done: nothing left
    labels = kube.objects(kube_namespace, "overlappingrangeipreservations")["10.62.0.2"]["metadata"]["labels"]
    assert labels["subnet_29"] == "10.62.0.0"

    off = conf(tmp_path, plugin_kubeconfig, mirror=False)
    assert [add(off, f"ctr-new{i}") for i in range(3)] == ["10.62.0.3/29", "10.62.0.4/29", "10.62.0.5/29"]
    assert run_cni("DEL", off, container_id="ctr-new0", ifname="net1").returncode == 0
    entries = {k: e["id"] for k, e in kube.objects(kube_namespace, "ippools")["10.62.0.0-29"]["spec"]["allocations"]
               .items()}  # fmt: skip
    assert entries == {"1": "ctr-go1", "2": "ctr-go2"}  # frozen while the mirror is off
    (tmp_path / "off.conf").write_text(json.dumps(off))  # the tools read what the config says: the reservations
    pools = json.loads(bed.tool("--config", str(tmp_path / "off.conf"), "pools", "-o", "json").ok().stdout)
    assert [(p["range"], p["held"]) for p in pools["items"]] == [("10.62.0.0/29", 4)]
    assert bed.tool("--config", str(tmp_path / "off.conf"), "check").returncode == 0  # lone reservations: normal
    finished = bed.tool("mirror", "off", "--finish").ok().stdout
    assert "removed 2 frozen entr(ies) backed by their reservation; kept 0" in finished
    assert kube.objects(kube_namespace, "ippools")["10.62.0.0-29"]["spec"].get("allocations") in ({}, None)

    bed.delete_pod("go-0")  # (a pod gone: `on` writes what the reservations say, the reconciler judges pods)
    done = bed.tool("mirror", "on", "--prune").ok().stdout
    assert "IPPool 10.62.0.0-29: write 4, remove 0" in done
    pool = kube.objects(kube_namespace, "ippools")["10.62.0.0-29"]["spec"]["allocations"]
    assert {k: e["id"] for k, e in pool.items()} == {"1": "ctr-go1", "2": "ctr-go2", "4": "ctr-new1",
                                                    "5": "ctr-new2"}  # fmt: skip
    on = conf(tmp_path, plugin_kubeconfig, mirror=True)
    assert add(on, "ctr-after") == "10.62.0.3/29"  # the address freed while the mirror was off


def test_mirror_on_prunes_entries_released_while_it_was_off(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    on = conf(tmp_path, plugin_kubeconfig, mirror=True)
    assert [add(on, f"ctr-{i}") for i in range(2)] == ["10.62.0.1/29", "10.62.0.2/29"]
    kube.mirrored_pools(kube_namespace)
    off = conf(tmp_path, plugin_kubeconfig, mirror=False)
    assert run_cni("DEL", off, container_id="ctr-0", ifname="net1").returncode == 0  # its entry stays, frozen
    assert "would remove 1" in bed.tool("mirror", "on", "--prune", "--dry-run").ok().stdout
    bed.tool("mirror", "on").ok()  # without --prune: written, nothing removed
    assert set(kube.objects(kube_namespace, "ippools")["10.62.0.0-29"]["spec"]["allocations"]) == {"1", "2"}
    bed.tool("mirror", "on", "--prune").ok()
    assert set(kube.objects(kube_namespace, "ippools")["10.62.0.0-29"]["spec"]["allocations"]) == {"2"}
    assert "--prune goes with mirror on" in bed.tool("mirror", "off", "--prune").stderr
    assert "--finish goes with mirror off" in bed.tool("mirror", "on", "--finish").stderr


def conf(tmp_path: Path, kubeconfig: Path, *, mirror: bool) -> dict[str, Any]:
    kube = {"kubeconfig": str(kubeconfig), "ippool_mirror": mirror}
    return netconf(tmp_path, kubernetes=kube, range="10.62.0.0/29")


def add(config: dict[str, Any], container: str) -> str:
    done = run_cni("ADD", config, container_id=container, ifname="net1")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.addresses()[0]


def test_mirror_on_split_in_patches_keeps_each_entrys_guards_with_its_write(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: Any
) -> None:
    """More operations than one patch may carry go as several patches; each is atomic, the sequence is not, so
    an entry's guard must travel in the patch that writes it (before: cut every MAX_PATCH_OPS operations)."""
    from whereabouts.kube import resources
    from whereabouts.kube.client import KubeClient
    from whereabouts.kube.credentials import load_credentials
    from whereabouts.model import Owner, PoolKey
    from whereabouts.tools.mirror import mirror_on

    key = PoolKey("", "10.63.0.0/24")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    client.create(client.path(resources.IPPOOLS), resources.new_pool(key, kube_namespace))
    for n in range(1, 6):
        client.create(client.path(resources.RESERVATIONS), resources.reservation(
            f"10.63.0.{n}", Owner(f"ctr-{n}", "eth0", f"ns/p-{n}"), kube_namespace, network="", cidr=key.cidr,
            address=(4, 0x0A3F0000 + n)))  # fmt: skip
    monkeypatch.setattr(resources, "MAX_PATCH_OPS", 3)  # entries of 2 operations each
    patches: list[list[dict[str, Any]]] = []
    real_patch = client.patch
    monkeypatch.setattr(client, "patch", lambda path, ops: patches.append(ops) or real_patch(path, ops))
    mirror_on(client, {""}, dry_run=False, prune=False)
    pool = kube.objects(kube_namespace, "ippools")[key.name]["spec"]["allocations"]
    assert {k: e["id"] for k, e in pool.items()} == {str(n): f"ctr-{n}" for n in range(1, 6)}
    assert len(patches) == 5
    for ops in patches:
        guarded = {op["path"] for op in ops if op["op"] == "test"}
        assert all(op["path"] in guarded for op in ops if op["op"] != "test"), ops


def test_a_pool_key_that_is_no_offset_is_left_alone_by_mirror_off_and_on(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """A key no plugin writes (a hand edit) stopped both directions with a ValueError; the Go plugin skips it,
    and so do the tools: no reservation made for it, and it is neither written nor pruned."""
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    go = bed.pod("go-0")
    bed.go_pool("10.62.0.0-29", "10.62.0.0/29", {"1": ("ctr-go1", go, "net1"), "x1": ("junk", go, "net1")})
    assert "created 1 reservation(s)" in bed.tool("mirror", "off").ok().stdout
    assert bed.reservations() == {"10.62.0.1"}
    bed.tool("mirror", "on", "--prune").ok()
    assert set(kube.objects(kube_namespace, "ippools")["10.62.0.0-29"]["spec"]["allocations"]) == {"1", "x1"}
