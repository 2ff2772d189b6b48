"""Network namespaces as test hosts: create and delete them, run a CNI plugin inside one, read addresses.

Everything here goes through `ip` (iproute2); nothing touches the root namespace's links, addresses or routes.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any

from support import CNIResult

NETNS_DIR = "/var/run/netns"


def unique_name(prefix: str = "wa-t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def path(name: str) -> str:
    """The namespace's bind mount, as a runtime passes it in CNI_NETNS."""
    return os.path.join(NETNS_DIR, name)


def create(name: str) -> str:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
    return name


def delete(name: str) -> None:
    """Remove the namespace and with it every link inside (the bridge, veth ends, eth0). Never raises."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def names() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], check=True, capture_output=True, text=True).stdout
    return [entry["name"] for entry in json.loads(out or "[]")]


def run_plugin(
    host: str,
    plugin: str,
    command: str,
    conf: dict[str, Any],
    *,
    container_id: str,
    pod: str,
    cni_path: str,
    ifname: str = "eth0",
    timeout: float = 60,
) -> CNIResult:
    """Run `plugin` inside namespace `host` the way a runtime on that host would, for the pod namespace `pod`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(
        CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=path(pod), CNI_IFNAME=ifname, CNI_PATH=cni_path
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", host, plugin],
        input=json.dumps(conf),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return CNIResult(proc.returncode, proc.stdout, proc.stderr)


def addresses(name: str, ifname: str = "eth0") -> list[str]:
    """Global-scope addresses on `ifname` inside namespace `name`, as 'address/prefix', IPv4 first."""
    out = subprocess.run(
        ["ip", "-j", "-n", name, "addr", "show", "dev", ifname], check=True, capture_output=True, text=True
    ).stdout
    infos = [info for link in json.loads(out) for info in link.get("addr_info", [])]
    found = [(info["family"], f"{info['local']}/{info['prefixlen']}") for info in infos if info["scope"] == "global"]
    return [address for _, address in sorted(found, key=lambda item: item[0] != "inet")]


def has_link(name: str, ifname: str) -> bool:
    proc = subprocess.run(["ip", "-n", name, "link", "show", "dev", ifname], capture_output=True)
    return proc.returncode == 0


def ping(name: str, address: str, *, attempts: int = 3) -> bool:
    """One echo from inside namespace `name`; retried a few times for a neighbour entry or DAD still settling."""
    for _ in range(attempts):
        proc = subprocess.run(["ip", "netns", "exec", name, "ping", "-c1", "-W2", address], capture_output=True)
        if proc.returncode == 0:
            return True
    return False
