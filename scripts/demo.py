"""A guided tour of whereabouts on the local datastore (one SQLite file), for a first look. Stdlib only.

As root: a "node" network namespace holds a bridge; each "pod" namespace is connected to it by the reference
`bridge` plugin, which asks `whereabouts` for the pod's address, exactly as a container runtime would do it.
The pods ping each other, the store is shown, every pod is deleted and the pool is empty again.
Without root (network namespaces need it): the `whereabouts` executable is called directly, IPAM only.
Nothing is ever configured in the machine's own (root) namespace; the namespaces are always deleted.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BRIDGE = "/usr/lib/cni/bridge"
PLUGIN = shutil.which("whereabouts", path=os.path.dirname(sys.executable)) or shutil.which("whereabouts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=3, help="how many pods (default 3)")
    parser.add_argument("--range", default="10.88.0.0/24", help="the IPv4 range (default 10.88.0.0/24)")
    args = parser.parse_args(argv)
    if not PLUGIN:
        sys.exit("demo: the whereabouts executable is not installed; run scripts/setup.sh")
    with tempfile.TemporaryDirectory(prefix="wa-demo-") as workdir:
        demo = Demo(Path(workdir), ipaddress.ip_network(args.range), args.pods)
        if os.geteuid() == 0:
            return demo.with_namespaces()
        return demo.ipam_only()


def heading(text: str) -> None:
    print(f"\n== {text}")


class Demo:
    def __init__(self, workdir: Path, network: ipaddress.IPv4Network | ipaddress.IPv6Network, pods: int) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        gateway = str(next(network.hosts()))
        self.conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "demo",
            "type": "bridge",
            "bridge": "wa-demo0",
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "whereabouts",
                "range": str(network),
                "gateway": gateway,
                "local_data_dir": str(self.data_dir),
                "configuration_path": str(workdir / "no-flat-file"),
            },
        }
        self.prefix = f"wa-demo-{secrets.token_hex(2)}"
        self.pods = [f"{self.prefix}-pod{i}" for i in range(1, pods + 1)]
        self.failures = 0

    # -- with network namespaces (root) ----------------------------------------------------------------------

    def with_namespaces(self) -> int:
        for tool in ("ip", "ping"):
            if not shutil.which(tool):
                sys.exit(f"demo: `{tool}` is missing; run scripts/setup.sh (iproute2, iputils-ping)")
        if not os.access(BRIDGE, os.X_OK):
            sys.exit(f"demo: {BRIDGE} is missing; run scripts/setup.sh (containernetworking-plugins)")
        node = f"{self.prefix}-node"
        created: list[str] = []
        try:
            self.intro_namespaces(node)
            for name in [node, *self.pods]:
                ip("netns", "add", name)
                created.append(name)
                ip("-n", name, "link", "set", "lo", "up")
            addresses = self.add_pods(node)
            self.ping_all(addresses)
            self.show_store()
            self.delete_pods(node)
            self.show_store()
        finally:
            for name in created:
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            heading("Clean up: namespaces deleted (the bridge and the veths go with them)")
            print(f"  {', '.join(created) or '(none were created)'}")
        return 1 if self.failures else 0

    def intro_namespaces(self, node: str) -> None:
        ipam = self.conf["ipam"]
        print("whereabouts demo: pods in network namespaces, bridge plugin + whereabouts IPAM, local datastore")
        print(f"  range {ipam['range']}, gateway {ipam['gateway']} (on the bridge {self.conf['bridge']})")
        print(f"  store {self.data_dir / 'whereabouts.db'}")
        print(f"  node namespace {node}; pod namespaces {', '.join(self.pods)}")
        print("  the runtime's part: `ip netns exec <node> bridge` with CNI_COMMAND=ADD, CNI_NETNS=<pod netns>, ...")

    def cni_path(self) -> str:
        """A CNI_PATH with just the two plugins, so bridge finds this whereabouts and nothing else."""
        bin_dir = self.workdir / "bin"
        if not bin_dir.exists():
            bin_dir.mkdir()
            (bin_dir / "bridge").symlink_to(BRIDGE)
            (bin_dir / "whereabouts").symlink_to(os.path.abspath(str(PLUGIN)))
        return str(bin_dir)

    def bridge(self, node: str, pod: str, command: str) -> subprocess.CompletedProcess[str]:
        env = cni_env(command, container_id=container_id(pod), netns=f"/var/run/netns/{pod}", cni_path=self.cni_path())
        return subprocess.run(
            ["ip", "netns", "exec", node, BRIDGE],
            input=json.dumps(self.conf),
            capture_output=True,
            text=True,
            env=env,
        )

    def add_pods(self, node: str) -> dict[str, str]:
        heading("ADD: connect each pod (bridge creates the veth, whereabouts picks the address)")
        addresses = {}
        for pod in self.pods:
            proc = self.bridge(node, pod, "ADD")
            if proc.returncode != 0:
                self.fail(f"{pod}: ADD failed: {error_text(proc)}")
                continue
            result = json.loads(proc.stdout)
            allocated = ", ".join(entry["address"] for entry in result["ips"])
            on_eth0 = ", ".join(eth0_addresses(pod)) or "(none!)"
            print(f"  {short(pod)}: container {container_id(pod)}, whereabouts gave {allocated}, eth0 has {on_eth0}")
            addresses[pod] = result["ips"][0]["address"].split("/")[0]
        return addresses

    def ping_all(self, addresses: dict[str, str]) -> None:
        heading("Ping between the pods (from inside each pod namespace)")
        for source in addresses:
            for target, address in addresses.items():
                if target == source:
                    continue
                proc = subprocess.run(
                    ["ip", "netns", "exec", source, "ping", "-c1", "-W2", address], capture_output=True, text=True
                )
                rtt = re.search(r"time=([\d.]+ ms)", proc.stdout)
                if proc.returncode == 0:
                    print(f"  {short(source)} -> {short(target)} ({address}): reply in {rtt.group(1) if rtt else '?'}")
                else:
                    self.fail(f"{short(source)} -> {short(target)} ({address}): no reply")

    def delete_pods(self, node: str) -> None:
        heading("DEL: disconnect each pod (bridge removes the veth, whereabouts releases the address)")
        for pod in self.pods:
            proc = self.bridge(node, pod, "DEL")
            if proc.returncode == 0:
                print(f"  {short(pod)}: deleted")
            else:
                self.fail(f"{short(pod)}: DEL failed: {error_text(proc)}")

    # -- IPAM only (no root) ---------------------------------------------------------------------------------

    def ipam_only(self) -> int:
        ipam = self.conf["ipam"]
        print("whereabouts demo, IPAM only: not running as root, and network namespaces (`ip netns add`) need root.")
        print("Run `sudo bash scripts/demo.sh` to see pods in namespaces ping each other.")
        print("Here the whereabouts executable is called directly, as the bridge plugin would call it.")
        print(f"  range {ipam['range']}, gateway {ipam['gateway']}; store {self.data_dir / 'whereabouts.db'}")
        heading("ADD: one address per container (CNI_COMMAND=ADD, network config on stdin)")
        for pod in self.pods:
            proc = self.whereabouts(pod, "ADD")
            if proc.returncode == 0:
                result = json.loads(proc.stdout)
                print(f"  container {container_id(pod):10} -> {json.dumps(result['ips'])}")
            else:
                self.fail(f"container {container_id(pod)}: ADD failed: {error_text(proc)}")
        self.show_store()
        heading("DEL: release every container's address (CNI_COMMAND=DEL)")
        for pod in self.pods:
            proc = self.whereabouts(pod, "DEL")
            if proc.returncode == 0:
                print(f"  container {container_id(pod)}: released")
            else:
                self.fail(f"container {container_id(pod)}: DEL failed: {error_text(proc)}")
        self.show_store()
        return 1 if self.failures else 0

    def whereabouts(self, pod: str, command: str) -> subprocess.CompletedProcess[str]:
        # IPAM plugins never enter the netns, so a name that does not exist is fine here.
        env = cni_env(command, container_id=container_id(pod), netns=f"/var/run/netns/{pod}", cni_path="/usr/lib/cni")
        return subprocess.run([str(PLUGIN)], input=json.dumps(self.conf), capture_output=True, text=True, env=env)

    # -- shared ----------------------------------------------------------------------------------------------

    def show_store(self) -> None:
        db = self.data_dir / "whereabouts.db"
        heading(f"The store: SELECT address, container_id, ifname FROM allocations  ({db.name})")
        if not db.exists():
            print("  (no store yet)")
            return
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT address, container_id, ifname FROM allocations ORDER BY ipkey").fetchall()
        finally:
            conn.close()
        if not rows:
            print("  (no rows: the pool is empty)")
        for address, owner, ifname in rows:
            print(f"  {address:15} {owner:12} {ifname}")

    def fail(self, message: str) -> None:
        self.failures += 1
        print(f"  FAILED {message}")


def cni_env(command: str, *, container_id: str, netns: str, cni_path: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CNI_")}
    env.update(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns, CNI_IFNAME="eth0")
    env["CNI_PATH"] = cni_path
    return env


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def eth0_addresses(pod: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "-n", pod, "addr", "show", "dev", "eth0"], capture_output=True, text=True)
    links = json.loads(out.stdout or "[]")
    infos = [info for link in links for info in link.get("addr_info", [])]
    return [f"{info['local']}/{info['prefixlen']}" for info in infos if info.get("scope") == "global"]


def container_id(pod: str) -> str:
    return f"demo-{short(pod)}"


def short(pod: str) -> str:
    return pod.rsplit("-", 1)[-1]


def error_text(proc: subprocess.CompletedProcess[str]) -> str:
    try:
        error = json.loads(proc.stdout)
    except ValueError:
        error = None
    if isinstance(error, dict) and "msg" in error:
        return f"{error['msg']} (code {error.get('code')})"
    return (proc.stdout + proc.stderr).strip() or f"exit status {proc.returncode}"


if __name__ == "__main__":
    sys.exit(main())
