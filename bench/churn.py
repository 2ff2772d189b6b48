"""The soak's workload (bench/soak.py): pods coming and going on two nodes, each ADD and DEL exec'd as a runtime
execs the plugin and handed to its node's whereabouts-node, with a ledger of what every live pod holds.

A cycle: create a pod bound to the node, ADD (retried as a kubelet retries a failed sandbox: the API server may
be restarting), hold the address a moment, then DEL and delete the pod; one pod in ten is deleted without a DEL
(a node that died), for pod cleanup to release. Every call and API request is retried until it succeeds or the
churn is told to stop, so what a pod took is always given back.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common import WHEREABOUTS, cni_env, python_env
from kube_objects import create_pod, delete_pod
from kube_server import KubeAPIServer

T = TypeVar("T")
NO_DEL_EVERY = 10  # one pod in ten is deleted without a DEL
RETRY_WAIT = 1.0  # seconds between tries of a failed call (a kubelet waits longer; the soak wants churn)


@dataclass
class Ledger:
    """Who holds what right now, by the plugin's answers; and what went wrong."""

    holders: dict[str, str] = field(default_factory=dict)  # address -> container ID
    duplicates: list[str] = field(default_factory=list)  # an address handed to a second live pod
    counts: Counter[str] = field(default_factory=Counter)  # cycles, ADDs, DELs, retries, pods left without DEL
    errors: Counter[str] = field(default_factory=Counter)  # first words of each failure
    lock: threading.Lock = field(default_factory=threading.Lock)

    def took(self, address: str, container: str) -> None:
        with self.lock:
            if self.holders.get(address, container) != container:
                self.duplicates.append(f"{address}: {self.holders[address]} and {container}")
            self.holders[address] = container
            self.counts["ADD"] += 1

    def gave_back(self, address: str, container: str, how: str) -> None:
        with self.lock:
            if self.holders.get(address) == container:
                del self.holders[address]
            self.counts[how] += 1

    def failed(self, what: str, error: str) -> None:
        with self.lock:
            self.counts["retries"] += 1
            self.errors[f"{what}: {error[:90]}"] += 1


@dataclass
class Node:
    name: str
    socket: Path
    conf: bytes


@dataclass
class Churn:
    kube: KubeAPIServer
    namespace: str
    nodes: list[Node]
    pycache: Path
    stop: threading.Event
    max_cycles: int
    pause: float = 0.3
    hold: float = 1.0
    ledger: Ledger = field(default_factory=Ledger)
    _cycles: int = 0

    def run(self, workers_per_node: int) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._worker, args=(node, n), name=f"churn-{node.name}-{n}", daemon=True)
            for node in self.nodes
            for n in range(workers_per_node)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _take_cycle(self) -> int | None:
        with self.ledger.lock:
            if self.stop.is_set() or self._cycles >= self.max_cycles:
                return None
            self._cycles += 1
            return self._cycles

    def _worker(self, node: Node, n: int) -> None:
        rng = random.Random(f"{node.name}-{n}")
        while (cycle := self._take_cycle()) is not None:
            self._cycle(node, f"{node.name}-{n}-{cycle}", without_del=cycle % NO_DEL_EVERY == 0, rng=rng)
            self.ledger.counts["cycles"] += 1
            time.sleep(self.pause)

    def _cycle(self, node: Node, name: str, *, without_del: bool, rng: random.Random) -> None:
        pod, container = f"p-{name}", f"c-{name}"
        self._until_done("pod create", lambda: create_pod(self.kube, self.namespace, pod, node=node.name))
        address = self._add(node, pod, container)
        time.sleep(rng.uniform(0, self.hold))
        # The ledger lets go of the address before the release can happen: once the store releases it, another
        # pod may get it at once, before this thread runs again.
        if without_del or not address:
            if address:
                self.ledger.gave_back(address, container, "pods deleted without DEL")
            self._until_done("pod delete", lambda: delete_pod(self.kube, self.namespace, pod), forever=True)
            return
        self.ledger.gave_back(address, container, "DEL")
        self._until_done("DEL", lambda: self._cni(node, "DEL", pod, container), forever=True)
        self._until_done("pod delete", lambda: delete_pod(self.kube, self.namespace, pod), forever=True)

    def _add(self, node: Node, pod: str, container: str) -> str:
        """The address, or "" when the churn was stopped before an ADD succeeded (its DEL then ran)."""
        result = self._until_done("ADD", lambda: self._cni(node, "ADD", pod, container))
        if result is None:
            self._until_done("DEL", lambda: self._cni(node, "DEL", pod, container), forever=True)
            return ""
        address = str(json.loads(result)["ips"][0]["address"]).split("/")[0]
        self.ledger.took(address, container)
        return address

    def _cni(self, node: Node, command: str, pod: str, container: str) -> str:
        env = cni_env(python_env(self.pycache), command, container)
        env["CNI_ARGS"] = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={pod}"
        env["WHEREABOUTS_SOCKET"] = str(node.socket)
        env["NODENAME"] = node.name
        proc = subprocess.run([str(WHEREABOUTS)], input=node.conf, capture_output=True, env=env, timeout=120)
        if proc.returncode:
            raise RuntimeError((proc.stdout or proc.stderr).decode(errors="replace").strip())
        return proc.stdout.decode()

    def _until_done(self, what: str, action: Callable[[], T], *, forever: bool = False) -> T | None:
        """`action`, retried until it succeeds; None if the churn is stopped first (unless `forever`: what
        gives back an address is finished, stopped or not, within 10 minutes)."""
        deadline = time.monotonic() + 600
        while forever or not self.stop.is_set():
            try:
                return action()
            except (RuntimeError, OSError, urllib.error.URLError) as exc:
                if _gone(exc):
                    return None  # a pod deletion that already happened
                self.ledger.failed(what, _first_words(exc))
                if time.monotonic() > deadline:
                    raise
                time.sleep(RETRY_WAIT)
        return None


def _gone(exc: BaseException) -> bool:
    return isinstance(exc, urllib.error.HTTPError) and exc.code == 404


def _first_words(exc: BaseException) -> str:
    text = str(exc)
    with contextlib.suppress(ValueError, AttributeError):  # a CNI error: its message
        text = json.loads(text).get("msg", text)
    return " ".join(text.split()[:12])


def node_conf(namespace: str, kubeconfig: Path, lock_dir: Path, cidr: str) -> bytes:
    ipam: dict[str, Any] = {"type": "whereabouts", "range": cidr, "configuration_path": str(lock_dir / "none"),
                            "kubernetes": {"kubeconfig": str(kubeconfig)}, "local_data_dir": str(lock_dir)}  # fmt: skip
    return json.dumps({"cniVersion": "1.0.0", "name": f"soak-{namespace}", "type": "bridge", "ipam": ipam}).encode()
