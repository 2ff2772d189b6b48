"""Helpers shared by the test suites: run the installed `whereabouts` executable as a CNI runtime would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The console script installed into the test environment (the same one a runtime would exec).
PLUGIN = (
    shutil.which("whereabouts", path=os.path.dirname(sys.executable)) or shutil.which("whereabouts") or "whereabouts"
)


@dataclass
class CNIResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def addresses(self) -> list[str]:
        return [ip["address"] for ip in self.json["ips"]]


def netconf(data_dir: Path, cni_version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    """A network config whose ipam section uses the local store in `data_dir` and no flat file."""
    ipam = {
        "type": "whereabouts",
        "local_data_dir": str(data_dir),
        "configuration_path": str(data_dir / "none"),
        **ipam,
    }
    return {"cniVersion": cni_version, "name": "testnet", "type": "bridge", "ipam": ipam}


def run_cni(
    command: str,
    conf: dict[str, Any] | str | bytes,
    *,
    container_id: str = "c1",
    ifname: str = "eth0",
    netns: str = "/var/run/netns/test",
    cni_args: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> CNIResult:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    environ.update(
        CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_IFNAME=ifname, CNI_NETNS=netns, CNI_PATH="/usr/lib/cni"
    )
    if cni_args:
        environ["CNI_ARGS"] = cni_args
    environ.update(env or {})
    data = conf if isinstance(conf, bytes) else (conf if isinstance(conf, str) else json.dumps(conf)).encode()
    proc = subprocess.run([PLUGIN], input=data, capture_output=True, env=environ, timeout=timeout)
    return CNIResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
