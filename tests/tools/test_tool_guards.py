"""The tools' guards against reading the wrong thing into a write: an API that answers 404 to everything (a
proxy, a wrong server path) proves no pod gone, and a namespace holding no pools is no clean bill of health."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from bed import GROUP_PATH, Bed, write_slice_pool
from tool import run_tool

from kube_objects import create_nad
from kube_server import KubeAPIServer
from support import netconf, run_cni
from whereabouts.model import Change, ChangeSet, Owner, PoolKey
from whereabouts.store.local import LocalStore


class _NotFound(BaseHTTPRequestHandler):
    """Every request: 404 in plain text, as a proxy or a web server answers a path it does not know."""

    def _answer(self) -> None:
        body = b"404 page not found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_found_kubeconfig(tmp_path: Path) -> Iterator[Path]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path / "proxy.kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: p\n  cluster:\n    server: http://127.0.0.1:{server.server_address[1]}\n"
        "users:\n- name: u\n  user:\n    token: t\n"
        "contexts:\n- name: c\n  context:\n    cluster: p\n    user: u\n    namespace: default\n"
        "current-context: c\n"
    )
    yield path
    server.shutdown()
    server.server_close()


def _add(conf: dict[str, Any], container: str, pod: str) -> str:
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME={pod}"
    done = run_cni("ADD", conf, container_id=container, ifname="eth0", cni_args=args)
    assert done.returncode == 0, done.stdout
    return done.addresses()[0]


def test_an_api_answering_404_to_everything_frees_nothing(tmp_path: Path, not_found_kubeconfig: Path) -> None:
    data = tmp_path / "data"
    conf = netconf(data, range="10.51.0.0/24")
    assert _add(conf, "ctr-1", "web-0") == "10.51.0.1/24"
    assert _add(conf, "ctr-2", "web-1") == "10.51.0.2/24"
    store = ("--local-data-dir", str(data), "--kubeconfig", str(not_found_kubeconfig))
    for args in (("release", "10.51.0.1"), ("release", "--pod", "ns/web-1"), ("check", "--repair")):
        done = run_tool(*store, *args)
        assert done.returncode != 0, (args, done.stdout, done.stderr)
        assert "NetworkAttachmentDefinitions could not be listed" in done.stderr and "404" in done.stderr
    held = run_tool("--local-data-dir", str(data), "show", "-A", "-o", "json").ok().stdout
    assert "10.51.0.1" in held and "10.51.0.2" in held  # both pods keep their addresses
    # named by --config (no NAD list), the pods are still not proven gone by that 404
    (tmp_path / "net.conf").write_text(json.dumps(conf))
    done = run_tool("--config", str(tmp_path / "net.conf"), "--kubeconfig", str(not_found_kubeconfig),
                    "release", "10.51.0.1")  # fmt: skip
    assert done.returncode != 0 and "404" in done.stderr, done.stderr
    assert _add(conf, "ctr-3", "web-2") == "10.51.0.3/24"  # 10.51.0.1 was not freed


def test_check_in_a_namespace_without_pools_says_so_and_fails(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    bed.add(bed.conf("10.52.0.0/24"), bed.pod("web-0").partition("/")[2], "ctr-1")
    assert bed.errors() == []  # with --pool-namespace: the pools are there, and fine
    # the operator's context is the pods' namespace: the pools are not there
    done = run_tool("--kubeconfig", str(bed.admin), "check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "No problems found" not in done.stdout
    assert f"namespace {bed.pods_ns!r}" in done.stderr and "--pool-namespace" in done.stderr
    assert "the kubeconfig context" in done.stderr
    as_json = run_tool("--kubeconfig", str(bed.admin), "check", "-o", "json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["items"] == []


def test_node_pools_named_alike_are_read_by_their_node_first(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """Network `worker` sliced on nodes `worker-1` and `worker`, and a network without a network_name sliced on the
    same nodes: its pools `worker-1-<cidr>` and `worker-<cidr>` read as network `worker` (node `1`, or its whole
    range) had `mirror on --prune` empty them, and `mirror off` reserve their addresses under the wrong network."""
    bed = Bed(kube, kube_namespace, tmp_path, plugin_kubeconfig)
    plain_name = f"{kube_namespace}-plain"
    worker = {"type": "whereabouts", "range": "10.96.0.0/24", "node_slice_size": "/28", "network_name": "worker"}
    plain = {"type": "whereabouts", "range": "10.97.0.0/24", "node_slice_size": "/28"}
    create_nad(kube, bed.pods_ns, "worker", {"cniVersion": "1.0.0", "name": f"{kube_namespace}-wk", "ipam": worker})
    create_nad(kube, bed.pods_ns, "plain", {"cniVersion": "1.0.0", "name": plain_name, "ipam": plain})
    try:
        write_slice_pool(kube, bed.pools_ns, "worker", "10.96.0.0/24", "/28",
                         [("worker-1", "10.96.0.0/28"), ("worker", "10.96.0.16/28")])  # fmt: skip
        write_slice_pool(kube, bed.pools_ns, plain_name, "10.97.0.0/24", "/28",
                         [("worker-1", "10.97.0.0/28"), ("worker", "10.97.0.16/28")])  # fmt: skip
        conf_worker = bed.conf("10.96.0.0/24", node_slice_size="/28", network_name="worker")
        conf_worker["name"] = f"{kube_namespace}-wk"
        conf_plain = bed.conf("10.97.0.0/24", node_slice_size="/28")
        conf_plain["name"] = plain_name
        for i, node in enumerate(("worker-1", "worker")):
            bed.pod(f"p{i}", node=node)
            bed.add(conf_worker, f"p{i}", f"ctr-w{i}", node=node)
            bed.add(conf_plain, f"p{i}", f"ctr-p{i}", ifname="net2", node=node)
        rows = {
            p["pool"]: (p["network"], p["node"])
            for p in json.loads(bed.tool("pools", "-o", "json").ok().stdout)["items"]
        }
        assert rows == {
            "worker-worker-1-10.96.0.0-28": ("worker", "worker-1"),
            "worker-worker-10.96.0.16-28": ("worker", "worker"),
            "worker-1-10.97.0.0-28": ("", "worker-1"),
            "worker-10.97.0.16-28": ("", "worker"),
        }
        held, reservations = bed.held(), bed.reservations()
        assert len(held) == 4 and len(reservations) == 4
        assert "created 0 reservation(s), labelled 0" in bed.tool("mirror", "off").ok().stdout
        done = bed.tool("mirror", "on", "--prune").ok().stdout
        assert "wrote 0 IPPool entr(ies) from their reservations, removed 0" in done, done
        assert bed.held() == held and bed.reservations() == reservations  # nothing pruned, nothing added
        assert bed.errors() == []
        # the reconciler's plan reads them so too: a node pool's lost reservation is recreated under its network
        kube.request("DELETE", f"{GROUP_PATH}/{bed.pools_ns}/overlappingrangeipreservations/10.97.0.1")
        bed.tool("check", "--repair").ok()
        assert bed.reservations() == reservations
        # a slice no NodeSlicePool lists: network `worker`'s whole range, or node `worker`'s old slice? Not guessed
        bed.go_pool("worker-10.97.0.48-28", "10.97.0.48/28", {"1": ("ctr-old", f"{bed.pods_ns}/p0", "net3")})
        done = bed.tool("mirror", "on", "--prune")
        assert done.returncode == 1 and "left alone: IPPool worker-10.97.0.48-28: its name reads as" in done.stdout
        assert ("worker-10.97.0.48-28", "1", "ctr-old") in bed.held()
        assert "IPPool worker-10.97.0.48-28: its name reads as more than one" in bed.tool("pools").ok().stderr
        refused = bed.tool("export")
        assert refused.returncode == 1 and "export refused: IPPool(s) worker-10.97.0.48-28" in refused.stderr
    finally:  # NADs are read cluster-wide: other tests must not see these
        for name in ("worker", "plain"):
            kube.request(
                "DELETE", f"/apis/k8s.cni.cncf.io/v1/namespaces/{bed.pods_ns}/network-attachment-definitions/{name}"
            )


HOSTILE = Owner("ctr-\x1b]0;owned\x07", "net1\x1b[2J\r", "ns/web\x1b[31m-0\nFAKE LINE", "conf\x1b[1m")


def _plant(data: Path) -> None:
    """An entry whose names hold terminal escapes, written as a store can hold it (the store takes any text)."""
    key = PoolKey("", "10.53.0.0/24")
    store = LocalStore(str(data))
    try:
        with store.transaction([key], overlapping=True) as txn:
            change = Change(key, 4, int(ipaddress.ip_address("10.53.0.5")), HOSTILE)
            assert txn.commit(ChangeSet((change,), ((key, txn.snapshot.pools[key].version),), True))
    finally:
        store.close()


def test_names_holding_terminal_escapes_are_printed_escaped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _add(netconf(data, range="10.53.0.0/24"), "ctr-1", "web-1") == "10.53.0.1/24"
    _plant(data)
    store = ("--local-data-dir", str(data))
    runs = [run_tool(*store, *args) for args in (("show", "-A"), ("show", "-A", "-o", "wide"), ("who-has", "10.53.0.5"),
            ("release", "10.53.0.5"), ("check",), ("pools", "-o", "wide"))]  # fmt: skip
    runs.append(run_tool(*store, "release", "--pod", "ns/web\x1b[31m-0\nFAKE LINE"))
    for done in runs:
        for text in (done.stdout, done.stderr):
            assert not any(char in text for char in "\x1b\r\x07"), repr(text)
            assert "\nFAKE LINE" not in text, repr(text)
    shown = runs[0].stdout + runs[2].stdout + runs[3].stderr + runs[6].stderr
    assert "net1\\x1b[2J\\r" in shown and "ns/web\\x1b[31m-0\\nFAKE LINE" in shown
    as_json = json.loads(run_tool(*store, "who-has", "10.53.0.5", "-o", "json").ok().stdout)["items"][0]
    assert (as_json["ifname"], as_json["pod"]) == (HOSTILE.ifname, HOSTILE.podref)  # JSON: the value as stored
