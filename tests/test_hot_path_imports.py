"""The CNI process starts on every call: what it imports is its cost. This holds the reason the hand-written
helpers (record, iptext, the HTTP transport) exist: a local-store call through every verb imports none of the
heavy modules below, whatever else changes; a Kubernetes-store call served in process (the daemon down) none
of those that a TLS client to the API server does not need."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# What a local-store call must never import (each costs a CNI call milliseconds, or drags in more).
HEAVY = ("dataclasses", "typing", "ipaddress", "http.client", "yaml", "email", "threading", "contextlib", "inspect",
         "prometheus_client")  # fmt: skip

# What a Kubernetes-store call must not import: the local list but `threading` (ssl imports it), and
# `hashlib` and `ssl` are its own (reservation names, TLS).
KUBE_HEAVY = tuple(name for name in HEAVY if name != "threading")

CALL = r"""
import json, os, sys
from whereabouts.cni.call import handle

data, command, store = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
conf = {"cniVersion": "1.1.0", "name": "net", "type": "bridge",
        "ipam": {"type": "whereabouts", "range": "10.0.0.0/24", "datastore": "local", "local_data_dir": data,
                 "configuration_path": data + "/none", "gateway": "10.0.0.1",
                 "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.53"]}, **store}}
if command == "GC":
    conf["cni.dev/valid-attachments"] = []
env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x", "CNI_PATH": "/x",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"}
status, text = handle(env, json.dumps(conf).encode())
print(json.dumps({"status": status, "text": text, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("command", ["ADD", "CHECK", "STATUS", "GC", "DEL", "VERSION"])
def test_a_local_store_call_imports_nothing_heavy(tmp_path: Path, command: str) -> None:
    data = tmp_path / "data"
    if command in ("CHECK", "DEL", "GC"):  # something to check, release or collect
        run(data, "ADD")
    done = run(data, command)
    assert done["status"] == 0, done["text"]
    heavy = [
        name
        for name in done["modules"]
        if name in HEAVY or name.split(".")[0] in ("yaml", "email", "prometheus_client")
    ]
    assert heavy == [], f"a local {command} imported {heavy}"


@pytest.mark.parametrize("mirror", [True, False], ids=["mirror", "mirror-off"])
@pytest.mark.parametrize("command", ["ADD", "CHECK", "STATUS", "GC", "DEL"])
def test_a_kubernetes_store_call_in_process_imports_nothing_heavy(
    tmp_path: Path, plugin_kubeconfig: Path, command: str, mirror: bool
) -> None:
    store = {"datastore": "kubernetes", "kubernetes": {"kubeconfig": str(plugin_kubeconfig), "ippool_mirror": mirror}}
    data = tmp_path / "data"
    if command in ("CHECK", "DEL", "GC"):
        assert run(data, "ADD", store)["status"] == 0
    done = run(data, command, store)
    assert done["status"] == 0, done["text"]
    heavy = [name for name in done["modules"] if name in KUBE_HEAVY or name.split(".")[0] in ("yaml", "email")]
    assert heavy == [], f"a kubernetes {command} imported {heavy}"
    assert "ssl" in done["modules"]  # (it did talk to the API server)


def run(data: Path, command: str, store: dict[str, object] | None = None) -> dict[str, object]:
    # -S: no site (a venv's .pth files import typing); the plugin's launcher runs the same way on nodes
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {src!r})\n{CALL}",
            str(data),
            command,
            json.dumps(store or {}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)
