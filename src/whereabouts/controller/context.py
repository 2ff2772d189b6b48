"""What every controller is given: API clients, the pools' namespace, metrics, health, events and the log."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from whereabouts.controller.health import Health
from whereabouts.controller.metrics import Registry
from whereabouts.errors import TryAgainLater
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import Credentials

COMPONENT = "whereabouts-controller"
LOGGER = logging.getLogger("whereabouts")


def setup_logging() -> None:
    """One format in every long-running process (controllers, install-cni, the node daemon): one line per
    action on stderr (the container log), UTC with milliseconds."""
    if LOGGER.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def log_line(message: str) -> None:
    setup_logging()
    LOGGER.info(message)


@dataclass
class Context:
    credentials: Credentials
    namespace: str  # where the pools, reservations, node-slice pools and Leases live
    registry: Registry = field(default_factory=Registry)
    health: Health = field(default_factory=Health)
    log: Callable[[str], None] = log_line
    dry_run: bool = False
    identity: str = ""  # this replica, for Events and Leases
    may_act: Callable[[], bool] = lambda: True  # long-running: True only while this replica holds its Lease

    def client(self) -> KubeClient:
        """A client of its own (one connection; not shared between threads), in the pools' namespace."""
        client = KubeClient(self.credentials, timeout=30.0)
        client.namespace = self.namespace
        return client

    def event(
        self, client: KubeClient, involved: dict[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        """A Kubernetes Event on `involved` (a Pod or one of our objects): what `kubectl describe` shows."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or self.namespace
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'whereabouts')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "v1"),
                "kind": involved.get("kind", "Pod"),
                "name": meta.get("name", ""),
                "namespace": namespace,
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            client.create(client.resource("events", namespace=namespace), event)
        except TryAgainLater as exc:
            self.log(f"event {reason} on {namespace}/{meta.get('name')} not recorded: {exc}")
