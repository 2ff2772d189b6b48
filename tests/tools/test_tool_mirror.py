"""`kubectl whereabouts mirror off|on` on a real kube-apiserver: a namespace the Go plugin wrote (entries with
reservations it left unlabelled, entries of a network without overlapping ranges that have none) moved to
kubernetes.ippool_mirror false and back, with the plugin running in between: no address handed out twice, and
the pools written back equal to the reservations."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bed import GROUP_PATH, Bed

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


def go_reservation(bed: Bed, name: str, spec: dict[str, str]) -> None:
    """A reservation as a Go plugin of another version writes it: v0.7 and later {podref, ifname} (no container
    ID), 0.5 and earlier {containerid, podref} (no interface)."""
    obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
           "metadata": {"name": name}, "spec": spec}  # fmt: skip
    bed.kube.request("POST", f"{GROUP_PATH}/{bed.pools_ns}/overlappingrangeipreservations", obj)


def test_mirror_on_prune_keeps_entries_any_reservation_or_a_live_pod_stands_behind(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """`--prune` removed every entry without a reservation labelled with its range: the live entries of a Go
    plugin running beside us (its reservations carry no label), and of a live pod. Only an entry that no
    reservation and no live pod stands behind goes, in a pool with our reservations as in one without."""
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    live, gone = bed.pod("live"), bed.pod("gone")
    entries = {"1": ("ctr-a1", live, "net1"), "2": ("ctr-a2", live, "net2"), "3": ("ctr-a3", live, "net3"),
               "4": ("ctr-a4", gone, "net1")}  # fmt: skip
    bed.go_pool("10.64.0.0-29", "10.64.0.0/29", entries)
    bed.go_reservation("10.64.0.1", "ctr-a1", live)  # v0.6
    go_reservation(bed, "10.64.0.2", {"podref": live, "ifname": "net2"})  # v0.7: no container ID
    bed.go_pool("10.64.1.0-29", "10.64.1.0/29", {"1": ("ctr-b1", live, "net1"), "2": ("ctr-b2", gone, "net2")})
    go_reservation(bed, "10.64.1.1", {"podref": live, "ifname": "net1"})
    bed.delete_pod("gone")
    on = netconf(tmp_path, kubernetes={"kubeconfig": str(plugin_kubeconfig)}, range="10.64.0.0/29")
    assert add(on, "ctr-ours") == "10.64.0.5/29"  # (a reservation of ours, labelled: the pool is written from it)

    assert "would remove 2" in bed.tool("mirror", "on", "--prune", "--dry-run").ok().stdout
    done = bed.tool("mirror", "on", "--prune").ok().stdout
    assert f"entry 10.64.0.3 of container ctr-a3 net3, pod {live}: pod {live} exists" in done
    pools = kube.objects(kube_namespace, "ippools")
    assert set(pools["10.64.0.0-29"]["spec"]["allocations"]) == {"1", "2", "3", "5"}
    assert set(pools["10.64.1.0-29"]["spec"]["allocations"]) == {"1"}


def test_mirror_off_completes_the_reservations_go_plugins_wrote_without_a_container_id_or_interface(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """A Go plugin v0.7 or later writes no container ID in its reservations (0.5 and earlier no interface):
    `mirror off` left them alone as another holder's (exit 1, for good). They are completed from their entries
    and labelled, so that with the mirror off a DEL finds its attachment there, and --finish can end."""
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    pod = bed.pod("go-0")
    bed.go_pool("10.65.0.0-29", "10.65.0.0/29", {"1": ("ctr-go1", pod, "net1"), "2": ("ctr-go2", pod, "net2"),
                                                 "3": ("ctr-go3", pod, "net3")})  # fmt: skip
    go_reservation(bed, "10.65.0.1", {"podref": pod, "ifname": "net1"})
    go_reservation(bed, "10.65.0.2", {"containerid": "ctr-go2", "podref": pod})
    go_reservation(bed, "10.65.0.3", {"containerid": "ctr-other", "podref": pod, "ifname": "net3"})
    first = bed.tool("mirror", "off")
    assert first.returncode == 1  # the one naming another container: left alone, as before
    assert "created 0 reservation(s), labelled 2" in first.stdout
    assert "left alone: IPPool 10.65.0.0-29 entry 10.65.0.3" in first.stdout
    assert "labelled 0" in bed.tool("mirror", "off").stdout
    reserved = kube.objects(kube_namespace, "overlappingrangeipreservations")
    assert {n: (o["spec"]["containerid"], o["spec"]["ifname"]) for n, o in reserved.items() if n != "10.65.0.3"} == {
        "10.65.0.1": ("ctr-go1", "net1"), "10.65.0.2": ("ctr-go2", "net2")}  # fmt: skip
    assert reserved["10.65.0.1"]["metadata"]["labels"]["subnet_29"] == "10.65.0.0"

    off = netconf(tmp_path, kubernetes={"kubeconfig": str(plugin_kubeconfig), "ippool_mirror": False},
                  range="10.65.0.0/29")  # fmt: skip
    assert run_cni("DEL", off, container_id="ctr-go1", ifname="net1").returncode == 0
    assert set(kube.objects(kube_namespace, "overlappingrangeipreservations")) == {"10.65.0.2", "10.65.0.3"}
    assert "removed 1 frozen entr(ies) backed by their reservation; kept 2" in bed.tool(
        "mirror", "off", "--finish").ok().stdout  # fmt: skip


def test_mirror_off_is_refused_while_the_go_plugins_lease_says_it_runs(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """Every Go ADD and DEL takes its Lease `whereabouts` in the pools' namespace: renewed lately, a Go plugin
    still runs, and with the mirror off it would read frozen IPPools. `mirror off` says so and writes nothing,
    unless --force (a dry run only reads); a Lease not renewed for longer is no objection."""
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    bed.go_pool("10.66.0.0-29", "10.66.0.0/29", {"1": ("ctr-go1", "ns/p", "net1")})
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases"

    def renewed(seconds_ago: float) -> dict[str, Any]:
        when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
        return {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}

    kube.request("POST", leases, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                  "metadata": {"name": "whereabouts"}, "spec": renewed(30)})  # fmt: skip
    refused = bed.tool("mirror", "off")
    assert refused.returncode == 1
    assert "the Go plugin's Lease" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert bed.reservations() == set()
    assert "would create 1 reservation(s)" in bed.tool("mirror", "off", "--dry-run").ok().stdout
    assert "created 1 reservation(s)" in bed.tool("mirror", "off", "--force").ok().stdout

    lease = kube.request("GET", f"{leases}/whereabouts")
    assert isinstance(lease, dict)
    kube.request("PUT", f"{leases}/whereabouts", {**lease, "spec": renewed(3600)})
    assert "created 0 reservation(s)" in bed.tool("mirror", "off").ok().stdout
    assert "--force goes with mirror off" in bed.tool("mirror", "on", "--force").stderr
