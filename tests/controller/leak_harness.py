"""What the reconciler and pod-cleanup tests share: a pools namespace, a pods namespace, the plugin run as
a runtime would run it (with the pod named in CNI_ARGS), Go-format objects written directly, and the
controller run either as the installed executable or in process (to read its report and metrics)."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kube_objects import CONTROLLER, controller_kubeconfig, create_node, create_pod, run_controller
from kube_server import KubeAPIServer
from support import netconf, run_cni, stop_process
from whereabouts.controller.context import Context
from whereabouts.kube.credentials import load_credentials

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"


@dataclass
class Running:
    """A long-running controller process, its log in a file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"controller exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in the log within {timeout}s:\n{self.text()}"
            time.sleep(0.05)

    def metrics(self) -> str:
        port = re.search(r"metrics and health on [\d.]+:(\d+)", self.text())
        assert port, self.text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/metrics", timeout=5) as reply:
            return reply.read().decode()


@dataclass
class Harness:
    kube: KubeAPIServer
    pools_ns: str
    tmp_path: Path
    plugin_kubeconfig: Path
    logs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pods_ns = f"{self.pools_ns}-pods"
        self.kubeconfig = controller_kubeconfig(self.kube, self.tmp_path / "c.kubeconfig", self.pools_ns)
        self.node = self.new_node("n1")

    # -- the cluster ----------------------------------------------------------------------------------------

    def new_node(self, name: str, *, ready: bool = True) -> str:
        node = f"{self.pools_ns}-{name}"
        create_node(self.kube, node, ready=ready)
        return node

    def pod(self, name: str, *, node: str = "", **kwargs: Any) -> str:
        create_pod(self.kube, self.pods_ns, name, node=node or self.node, **kwargs)
        return f"{self.pods_ns}/{name}"

    def conf(self, cidr: str, **ipam: Any) -> dict[str, Any]:
        return netconf(self.tmp_path, kubernetes={"kubeconfig": str(self.plugin_kubeconfig)}, range=cidr, **ipam)

    def add(self, conf: dict[str, Any], pod: str, container: str, ifname: str = "net1") -> str:
        """The real plugin's ADD for `pod` (a name in the pods namespace); returns the address."""
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.pods_ns};K8S_POD_NAME={pod}"
        result = run_cni("ADD", conf, container_id=container, ifname=ifname, cni_args=args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.addresses()[0]

    def delete(self, conf: dict[str, Any], pod: str, container: str, ifname: str = "net1") -> None:
        """The real plugin's DEL (on a sticky network it leaves the address retained)."""
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.pods_ns};K8S_POD_NAME={pod}"
        result = run_cni("DEL", conf, container_id=container, ifname=ifname, cni_args=args)
        assert result.returncode == 0, result.stdout + result.stderr

    # -- Go-format objects, written directly (leaks a crashed call leaves) ------------------------------------

    def create_pool(self, name: str, cidr: str, entries: dict[str, tuple[str, str, str]]) -> None:
        """`entries`: offset -> (container ID, podref, ifname)."""
        allocations = {k: {"id": c, "podref": p, "ifname": i} for k, (c, p, i) in entries.items()}
        pool = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                "metadata": {"name": name}, "spec": {"range": cidr, "allocations": allocations}}  # fmt: skip
        self.kube.request("POST", f"{GROUP_PATH}/{self.pools_ns}/ippools", pool)

    def create_entries(self, name: str, cidr: str, allocations: dict[str, dict[str, Any]]) -> None:
        """An IPPool with `allocations` (offset -> entry) as given, sticky fields and all."""
        pool = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                "metadata": {"name": name}, "spec": {"range": cidr, "allocations": allocations}}  # fmt: skip
        self.kube.request("POST", f"{GROUP_PATH}/{self.pools_ns}/ippools", pool)

    def create_reservation(self, name: str, containerid: str, podref: str, ifname: str = "net1", **extra: Any) -> None:
        """`extra`: more spec fields (state, sticky, retained, ...)."""
        spec = {"containerid": containerid, "podref": podref, "ifname": ifname, **extra}
        obj = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
               "metadata": {"name": name}, "spec": spec}  # fmt: skip
        self.kube.request("POST", f"{GROUP_PATH}/{self.pools_ns}/overlappingrangeipreservations", obj)

    # -- what is stored -------------------------------------------------------------------------------------

    def allocations(self) -> dict[str, dict[str, dict]]:
        """IPPool name -> spec.allocations."""
        pools = self.kube.objects(self.pools_ns, "ippools")
        return {name: pool["spec"].get("allocations") or {} for name, pool in pools.items()}

    def held(self) -> set[tuple[str, str, str]]:
        """(pool, offset, container ID) of every allocation."""
        return {
            (pool, offset, e["id"]) for pool, entries in self.allocations().items() for offset, e in entries.items()
        }

    def reservations(self) -> dict[str, dict]:
        """Reservation name -> its object."""
        return self.kube.objects(self.pools_ns, "overlappingrangeipreservations")

    # -- the controller -------------------------------------------------------------------------------------

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = run_controller(self.kubeconfig, command, "--once", f"--namespace={self.pools_ns}", *args)
        assert done.returncode == 0, done.stderr
        return done

    @contextmanager
    def running(self, command: str, *args: str, name: str = "controller") -> Iterator[Running]:
        """`whereabouts-controller COMMAND` long-running (short Lease timings, metrics on a free loopback
        port), stopped by its PID with SIGTERM when the block ends."""
        log = self.tmp_path / f"{name}.log"
        cmd = [CONTROLLER, command, f"--kubeconfig={self.kubeconfig}", f"--namespace={self.pools_ns}",
               "--metrics-address=127.0.0.1", "--metrics-port=0", "--lease-duration=4", "--renew-deadline=3",
               "--retry-period=1", f"--identity={name}", *args]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield Running(proc, log)
        finally:
            stop_process(proc, 15)

    def context(self, **kwargs: Any) -> Context:
        """An in-process Context as cli.py builds it, logging into `self.logs`."""
        credentials = load_credentials(str(self.kubeconfig))
        return Context(credentials, self.pools_ns, log=self.logs.append, identity="test", **kwargs)
