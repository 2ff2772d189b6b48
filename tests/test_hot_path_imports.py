"""The CNI process on the local store starts on every call: what it imports is its cost. This holds the reason
the hand-written helpers (record, iptext, the HTTP transport) exist: a local-store call through every verb
imports none of the heavy modules below, whatever else changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# What a local-store call must never import (each costs a CNI call milliseconds, or drags in more).
HEAVY = ("dataclasses", "typing", "ipaddress", "http.client", "yaml", "email", "threading", "contextlib", "inspect",
         "prometheus_client")  # fmt: skip

CALL = r"""
import json, os, sys
from whereabouts.cni.call import handle

data, command = sys.argv[1], sys.argv[2]
conf = {"cniVersion": "1.1.0", "name": "net", "type": "bridge",
        "ipam": {"type": "whereabouts", "range": "10.0.0.0/24", "datastore": "local", "local_data_dir": data,
                 "configuration_path": data + "/none", "gateway": "10.0.0.1",
                 "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.53"]}}}
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


def run(data: Path, command: str) -> dict[str, object]:
    # -S: no site (a venv's .pth files import typing); the plugin's launcher runs the same way on nodes
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {src!r})\n{CALL}", str(data), command],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)
