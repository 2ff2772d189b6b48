"""The Kubernetes datastore on a real kube-apiserver: the Go plugin's format both ways, few requests,
clear failures, and the plugin's least-privilege RBAC from deploy/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from etcd_server import free_port
from kube_server import PLUGIN_USER, KubeAPIServer
from support import netconf, run_cni

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"


def kube_conf(tmp_path: Path, kubeconfig: Path, cni_version: str = "1.0.0", **ipam: object) -> dict:
    return netconf(tmp_path, cni_version, kubernetes={"kubeconfig": str(kubeconfig)}, **ipam)


def go_pool(namespace: str, name: str, cidr: str, allocations: dict[str, dict]) -> dict:
    return {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"range": cidr, "allocations": allocations},
    }


def go_reservation(namespace: str, name: str, podref: str, containerid: str) -> dict:
    return {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
        "kind": "OverlappingRangeIPReservation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podref": podref, "containerid": containerid, "ifname": "net1"},
    }


def test_datastore_defaults_to_kubernetes_with_a_kubeconfig(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    conf = kube_conf(tmp_path, plugin_kubeconfig, range="10.80.0.0/24")
    result = run_cni("ADD", conf, container_id="ctr-1", cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p1",
                     env={"NODENAME": "node-1"})  # fmt: skip
    assert result.addresses() == ["10.80.0.1/24"], result.stdout
    assert not (tmp_path / "whereabouts.db").exists()  # nothing went to the local store
    pool = kube.objects(kube_namespace, "ippools")["10.80.0.0-24"]
    assert pool["spec"] == {  # (the node it was taken on: a GC judges only its own node's, the Go plugin ignores it;
        "range": "10.80.0.0/24",  # written after its reservation: reservation, see resources.entry)
        "allocations": {
            "1": {
                "id": "ctr-1", "podref": "ns/p1", "ifname": "eth0", "netconf": "testnet", "node": "node-1",
                "reservation": True,
            }
        },
    }  # fmt: skip
    reservation = kube.objects(kube_namespace, "overlappingrangeipreservations")["10.80.0.1"]
    assert reservation["spec"] == {
        "containerid": "ctr-1", "podref": "ns/p1", "ifname": "eth0", "address": "10.80.0.1", "state": "held",
        "netconf": "testnet", "node": "node-1",
    }  # fmt: skip
    assert reservation["metadata"]["labels"]["subnet_24"] == "10.80.0.0"  # kubectl get ip -l subnet_24=10.80.0.0


def test_pools_written_by_the_go_plugin_are_honoured(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    go = {str(n): {"id": f"go-{n}", "podref": f"ns/go-{n}", "ifname": "net1"} for n in (1, 2, 4)}
    kube.request(
        "POST", f"{GROUP_PATH}/{kube_namespace}/ippools", go_pool(kube_namespace, "10.81.0.0-16", "10.81.0.0/16", go)
    )
    v6 = {"1": {"id": "go-v6", "podref": "ns/v6", "ifname": "net1"}}
    kube.request(
        "POST", f"{GROUP_PATH}/{kube_namespace}/ippools", go_pool(kube_namespace, "caa5---64", "caa5::/64", v6)
    )
    net = {"1": {"id": "go-blue", "podref": "ns/b", "ifname": "net1"}}
    kube.request(
        "POST",
        f"{GROUP_PATH}/{kube_namespace}/ippools",
        go_pool(kube_namespace, "blue-10.82.0.0-24", "10.82.0.0/24", net),
    )
    conf = kube_conf(tmp_path, plugin_kubeconfig, range="10.81.0.0/16", ipRanges=[{"range": "caa5::/64"}])
    assert run_cni("ADD", conf, container_id="py-1").addresses() == ["10.81.0.3/16", "caa5::2/64"]
    assert run_cni("ADD", conf, container_id="py-2").addresses() == ["10.81.0.5/16", "caa5::3/64"]
    blue = kube_conf(tmp_path, plugin_kubeconfig, range="10.82.0.0/24", network_name="blue")
    assert run_cni("ADD", blue, container_id="py-3").addresses() == ["10.82.0.2/24"]
    pools = kube.objects(kube_namespace, "ippools")
    assert set(pools) == {"10.81.0.0-16", "caa5---64", "blue-10.82.0.0-24"}  # no second pool beside Go's
    py = {"id": "py-1", "podref": "/", "ifname": "eth0", "netconf": "testnet", "reservation": True}
    entry = dict(pools["10.81.0.0-16"]["spec"]["allocations"]["3"])
    assert entry.pop("node") and entry == py  # (the node: NODENAME, the nodename file or the hostname)
    assert pools["caa5---64"]["spec"]["allocations"]["2"]["id"] == "py-1"
    # the Go plugin's DEL path reads these: every entry keyed by offset, with id / podref / ifname (and
    # ours with the network config name, the node and the reservation mark, which the Go plugin ignores)
    for pool in pools.values():
        for offset, entry in pool["spec"]["allocations"].items():
            assert offset.isdigit() and set(entry) - {"netconf", "node", "reservation"} == {"id", "podref", "ifname"}


def test_gc_collects_only_its_network_configs_entries_never_the_go_plugins(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    go = {"1": {"id": "go-1", "podref": "ns/go-1", "ifname": "net1"}}
    kube.request("POST", f"{GROUP_PATH}/{kube_namespace}/ippools",
                 go_pool(kube_namespace, "10.86.0.0-24", "10.86.0.0/24", go))  # fmt: skip
    kube.request("POST", f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations",
                 go_reservation(kube_namespace, "10.86.0.1", "ns/go-1", "go-1"))  # fmt: skip
    conf = kube_conf(tmp_path, plugin_kubeconfig, "1.1.0", range="10.86.0.0/24")
    net_a, net_b = {**conf, "name": "netA"}, {**conf, "name": "netB"}
    assert run_cni("ADD", net_a, container_id="py-a").addresses() == ["10.86.0.2/24"]
    assert run_cni("ADD", net_b, container_id="py-b").addresses() == ["10.86.0.3/24"]
    entries = kube.objects(kube_namespace, "ippools")["10.86.0.0-24"]["spec"]["allocations"]
    assert entries["2"]["netconf"] == "netA"  # the CRD from deploy/ keeps the field (the Go plugin's prunes it)
    gc = {**net_a, "cni.dev/valid-attachments": []}
    result = run_cni("GC", gc, env={"CNI_CONTAINERID": "", "CNI_IFNAME": "", "CNI_NETNS": ""})
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    entries = kube.objects(kube_namespace, "ippools")["10.86.0.0-24"]["spec"]["allocations"]
    assert {offset: entry["id"] for offset, entry in entries.items()} == {"1": "go-1", "3": "py-b"}
    assert set(kube.objects(kube_namespace, "overlappingrangeipreservations")) == {"10.86.0.1", "10.86.0.3"}


def test_reservations_written_by_the_go_plugin_block_overlapping_ranges(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    kube.request("POST", f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations",
                 go_reservation(kube_namespace, "10.83.0.1", "ns/go", "go-ctr"))  # fmt: skip
    kube.request("POST", f"{GROUP_PATH}/{kube_namespace}/overlappingrangeipreservations",
                 go_reservation(kube_namespace, "2001--0", "ns/go6", "go-ctr6"))  # fmt: skip
    conf = kube_conf(tmp_path, plugin_kubeconfig, range="10.83.0.0/24")
    assert run_cni("ADD", conf, container_id="py-1").addresses() == ["10.83.0.2/24"]
    v6 = kube_conf(tmp_path, plugin_kubeconfig, range="2001::/126", range_start="2001::")
    assert run_cni("ADD", v6, container_id="py-6").addresses() == ["2001::1/126"]
    names = set(kube.objects(kube_namespace, "overlappingrangeipreservations"))
    assert names == {"10.83.0.1", "10.83.0.2", "2001--0", "2001--1"}


def test_uncontended_add_makes_three_requests(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    conf = kube_conf(tmp_path, plugin_kubeconfig, range="10.84.0.0/24")
    assert run_cni("ADD", conf, container_id="warm").returncode == 0  # the pool exists from here on

    def requests_of(container: str) -> list[str]:
        before = len(kube.audited(namespace=kube_namespace))
        assert run_cni("ADD", conf, container_id=container).returncode == 0
        return [f"{e['verb']} {e['objectRef']['resource']}" for e in kube.audited(namespace=kube_namespace)[before:]]

    assert requests_of("counted") == ["get ippools", "create overlappingrangeipreservations", "patch ippools"]
    # the very first ADD into a range creates its pool, still in three requests
    fresh = kube_conf(tmp_path, plugin_kubeconfig, range="10.85.0.0/24")
    before = len(kube.audited(namespace=kube_namespace))
    assert run_cni("ADD", fresh, container_id="creates-pool").returncode == 0
    verbs = [f"{e['verb']} {e['objectRef']['resource']}" for e in kube.audited(namespace=kube_namespace)[before:]]
    assert verbs == ["get ippools", "create overlappingrangeipreservations", "create ippools"]


def test_unreachable_api_server_is_code_11_within_seconds(tmp_path: Path, kube: KubeAPIServer) -> None:
    dead = tmp_path / "dead.kubeconfig"
    kube.kubeconfig(dead, token="x")
    dead.write_text(dead.read_text().replace(kube.url, f"https://127.0.0.1:{free_port()}"))
    for command in ("ADD", "DEL"):
        started = time.monotonic()
        result = run_cni(command, kube_conf(tmp_path, dead, range="10.86.0.0/24"))
        assert time.monotonic() - started < 10
        assert result.json["code"] == 11 and "unreachable" in result.json["msg"], result.stdout


def test_refused_requests_are_code_11_and_write_nothing(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    stranger = kube.kubeconfig(
        tmp_path / "stranger.kubeconfig", token=kube.admin_token + "-wrong", namespace=kube_namespace
    )
    result = run_cni("ADD", kube_conf(tmp_path, stranger, range="10.87.0.0/24"))
    assert result.json["code"] == 11 and "401" in result.json["msg"], result.stdout
    # the plugin's service account has no rights in a namespace where it is not bound
    kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": kube_namespace + "-x"}})
    unbound = kube.kubeconfig(tmp_path / "unbound.kubeconfig", token=kube.plugin_token, namespace=kube_namespace + "-x")
    result = run_cni("ADD", kube_conf(tmp_path, unbound, range="10.87.0.0/24"))
    assert result.json["code"] == 11 and "403" in result.json["msg"], result.stdout
    assert kube.objects(kube_namespace + "-x", "ippools") == {}
    assert kube.objects(kube_namespace + "-x", "overlappingrangeipreservations") == {}


def test_tls_is_verified_unless_the_kubeconfig_says_otherwise(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(Path(kube.tls.server_cert).read_text())  # a certificate, but not the issuing CA
    config = kube.kubeconfig(tmp_path / "k.kubeconfig", token=kube.plugin_token, namespace=kube_namespace)
    wrong = tmp_path / "wrong-ca.kubeconfig"
    wrong.write_text(config.read_text().replace(str(kube.tls.ca), str(other_ca)))
    result = run_cni("ADD", kube_conf(tmp_path, wrong, range="10.88.0.0/24"))
    assert result.json["code"] == 11 and "CERTIFICATE_VERIFY_FAILED" in result.json["msg"], result.stdout
    insecure = tmp_path / "insecure.kubeconfig"
    insecure.write_text(
        wrong.read_text().replace(f"certificate-authority: {other_ca}", "insecure-skip-tls-verify: true")
    )
    assert run_cni("ADD", kube_conf(tmp_path, insecure, range="10.88.0.0/24")).addresses() == ["10.88.0.1/24"]


def test_rbac_manifest_grants_only_whereabouts_resources(kube: KubeAPIServer, kube_namespace: str) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": PLUGIN_USER, "groups": ["system:serviceaccounts"], "resourceAttributes": {}},
    }

    def allowed(namespace: str, resource: str, verb: str, group: str = "whereabouts.cni.cncf.io") -> bool:
        review["spec"]["resourceAttributes"] = {
            "namespace": namespace,
            "resource": resource,
            "verb": verb,
            "group": group,
        }
        reply = kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(reply["status"].get("allowed"))

    assert allowed(kube_namespace, "ippools", "update")
    assert allowed(kube_namespace, "overlappingrangeipreservations", "delete")
    assert not allowed("default", "ippools", "get")  # not bound there
    assert not allowed(kube_namespace, "secrets", "get", group="")
    assert not allowed(kube_namespace, "nodeslicepools", "update")


@pytest.mark.parametrize("form", ["json", "yaml-with-flow-and-comments"])
def test_kubeconfig_forms(kube: KubeAPIServer, kube_namespace: str, tmp_path: Path, form: str) -> None:
    import json

    path = tmp_path / "k.kubeconfig"
    if form == "json":
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "t", "cluster": {"server": kube.url, "certificate-authority": str(kube.tls.ca)}}],
            "users": [{"name": "u", "user": {"token": kube.plugin_token}}],
            "contexts": [{"name": "c", "context": {"cluster": "t", "user": "u", "namespace": kube_namespace}}],
        }  # fmt: skip
        path.write_text(json.dumps(doc))
    else:
        path.write_text(
            "# written by hand\napiVersion: v1\nclusters:\n-   cluster:\n        server: '" + kube.url + "'\n"
            f'        certificate-authority: "{kube.tls.ca}"\n    name: t\n'
            f"contexts: [{{name: c, context: {{cluster: t, user: u, namespace: {kube_namespace}}}}}]\n"
            "current-context: c\nusers:\n- name: u\n  user:\n"
            f"    token: {kube.plugin_token}  # the plugin's\n"
        )
    assert run_cni("ADD", kube_conf(tmp_path, path, range="10.89.0.0/24")).addresses() == ["10.89.0.1/24"]


def test_sticky_del_keeps_the_reservation_restated_as_retained(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The retained address keeps its one object, saying retained: the DEL rewrites it rather than leaving it
    saying held, and its clean-up of a crashed call's leftovers does not take it for one."""
    conf = kube_conf(tmp_path, plugin_kubeconfig, range="10.87.0.0/24", sticky="mac")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=vm;MAC=02:00:00:00:00:01"
    assert run_cni("ADD", conf, container_id="ctr-1", cni_args=args).addresses() == ["10.87.0.1/24"]
    result = run_cni("DEL", conf, container_id="ctr-1", cni_args=args)
    assert result.returncode == 0, result.stdout + result.stderr
    entry = kube.objects(kube_namespace, "ippools")["10.87.0.0-24"]["spec"]["allocations"]["1"]
    reservation = kube.objects(kube_namespace, "overlappingrangeipreservations")["10.87.0.1"]
    assert reservation["spec"]["state"] == "retained" and reservation["spec"]["retained"] == entry["retained"]
    assert reservation["metadata"]["labels"]["whereabouts.cni.cncf.io/state"] == "retained"
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=vm-renamed;MAC=02:00:00:00:00:01"
    assert run_cni("ADD", conf, container_id="ctr-2", cni_args=args).addresses() == ["10.87.0.1/24"]
    reservation = kube.objects(kube_namespace, "overlappingrangeipreservations")["10.87.0.1"]
    assert (reservation["spec"]["containerid"], reservation["spec"]["state"]) == ("ctr-2", "held")


def test_sticky_adds_at_most_one_request_even_taking_its_address_back(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """`sticky: pod` reads the pod (its controller, for the reconciler) and nothing else more; taking a retained
    address back rewrites its reservation in one guarded patch, never a create that finds it taken first."""
    conf = kube_conf(tmp_path, plugin_kubeconfig, range="10.88.0.0/24", sticky="pod")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0"
    assert run_cni("ADD", conf, container_id="warm", cni_args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=w")

    def requests_of(command: str, container: str) -> list[str]:
        before = len(kube.audited(namespace=kube_namespace))
        result = run_cni(command, conf, container_id=container, cni_args=args)
        assert result.returncode == 0, result.stdout + result.stderr
        return [f"{e['verb']} {e['objectRef']['resource']}" for e in kube.audited(namespace=kube_namespace)[before:]]

    first = ["get pods", "get ippools", "create overlappingrangeipreservations", "patch ippools"]
    assert requests_of("ADD", "web-0-a") == first
    assert "delete overlappingrangeipreservations" not in requests_of("DEL", "web-0-a")  # retained, not freed
    again = ["get pods", "get ippools", "patch overlappingrangeipreservations", "patch ippools"]
    assert requests_of("ADD", "web-0-b") == again
    reservation = kube.objects(kube_namespace, "overlappingrangeipreservations")["10.88.0.2"]
    assert (reservation["spec"]["containerid"], reservation["spec"]["state"]) == ("web-0-b", "held")


def test_the_node_local_lock_files_are_where_configuration_md_says(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """The Kubernetes datastore takes no cluster-wide lock, but does leave a lock file per pool on the node:
    the page says where, so that an operator (and the uninstall) knows what they are."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert "`<local_data_dir>/locks/<namespace>.<pool>.lock`" in doc
    data = tmp_path / "data"
    conf = kube_conf(tmp_path, plugin_kubeconfig, range="10.80.9.0/24", local_data_dir=str(data))
    assert run_cni("ADD", conf, container_id="ctr-1").returncode == 0
    assert [p.name for p in (data / "locks").iterdir()] == [f"{kube_namespace}.10.80.9.0-24.lock"]
