"""Helpers for the CNI-level tests: run the installed executable, read what the datastore under test holds."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from support import CNIResult, Held, current_datastore, current_plugin, current_socket, run_cni

ERROR_KEYS = {"cniVersion", "code", "msg", "details"}
POD_ARGS = "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0"


def held(data_dir: Path) -> list[Held]:
    """Every allocation in the datastore under test: (address, container ID, ifname), sorted."""
    return current_datastore().held(data_dir)


def add(conf: dict[str, Any], container_id: str, **kw: Any) -> list[str]:
    """ADD that must succeed; the addresses of the result (1.x/0.3.x shape)."""
    result = run_cni("ADD", conf, container_id=container_id, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.addresses()


def failed(result: CNIResult, code: int) -> dict[str, Any]:
    """Assert a CNI error object with `code` on stdout and a non-zero exit; return the error."""
    assert result.returncode != 0, result.stdout
    error = result.json
    assert isinstance(error, dict) and set(error) <= ERROR_KEYS, result.stdout
    assert error["code"] == code, error
    assert isinstance(error["msg"], str) and error["msg"]
    return error


def run_plugin(env: dict[str, str], stdin: bytes | dict[str, Any] = b"") -> CNIResult:
    """Run the executable with exactly the CNI_* variables in `env` (absent ones are really absent)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    environ["WHEREABOUTS_SOCKET"] = current_socket()
    environ.update(env)
    data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    proc = subprocess.run([current_plugin()], input=data, capture_output=True, env=environ, timeout=60)
    return CNIResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def full_env(command: str, container_id: str = "c1", ifname: str = "eth0") -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_IFNAME": ifname,
        "CNI_NETNS": "/var/run/netns/test",
        "CNI_PATH": "/usr/lib/cni",
    }
