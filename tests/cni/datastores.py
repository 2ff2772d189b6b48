"""The datastores the CNI-level suite runs against besides the default local one (that one is in support.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etcd_server import EtcdServer
from kube_server import KubeAPIServer
from support import Held


@dataclass(frozen=True)
class EtcdDatastore:
    """The session's real etcd under a key prefix of the test's own.

    `local_data_dir` stays in the config so a test's data dir means the same on every datastore; `held`
    checks that nothing was written there.
    """

    server: EtcdServer
    prefix: str

    def ipam(self, data_dir: Path) -> dict[str, Any]:
        return {"local_data_dir": str(data_dir), "etcd_host": self.server.url, "etcd_prefix": self.prefix}

    def held(self, data_dir: Path) -> list[Held]:
        """The pool entries, after checking that every overlapping reservation belongs to one of them."""
        assert not (data_dir / "whereabouts.db").exists(), "an etcd-configured call wrote to the local store"
        entries: dict[str, list[tuple[str, Held]]] = {"pools": [], "reservations": []}
        for key, value in self.server.dump(self.prefix + "/").items():
            network, kind, *_ = key[len(self.prefix) + 1 :].split("/")
            assert kind in entries, f"unexpected key {key}"
            entries[kind].append((network, (value["address"], value["id"], value["ifname"])))
        orphans = set(entries["reservations"]) - set(entries["pools"])
        assert not orphans, f"reservations without a pool entry: {sorted(orphans)}"
        return sorted(entry for _, entry in entries["pools"])


@dataclass(frozen=True)
class KubernetesDatastore:
    """The session's real kube-apiserver, pools in a namespace of the test's own, reached as the plugin's
    service account (the RBAC from deploy/ bound there)."""

    server: KubeAPIServer
    namespace: str
    kubeconfig: Path

    def ipam(self, data_dir: Path) -> dict[str, Any]:
        return {"local_data_dir": str(data_dir), "kubernetes": {"kubeconfig": str(self.kubeconfig)}}

    def held(self, data_dir: Path) -> list[Held]:
        """The IPPool entries, after checking that each has its overlapping reservation (or the test turned
        overlapping off) and that nothing went to the local store."""
        assert not (data_dir / "whereabouts.db").exists(), "a kubernetes-configured call wrote to the local store"
        held: list[Held] = []
        for pool in self.server.objects(self.namespace, "ippools").values():
            network = ipaddress.ip_network(pool["spec"]["range"])
            for offset, entry in (pool["spec"].get("allocations") or {}).items():
                address = str(network.network_address + int(offset))
                held.append((address, entry["id"], entry.get("ifname", "")))
        reserved = {
            (o["spec"]["containerid"], o["spec"].get("ifname", ""))
            for o in self.server.objects(self.namespace, "overlappingrangeipreservations").values()
        }
        assert reserved <= {(cid, ifname) for _, cid, ifname in held}, "a reservation without its pool entry"
        return sorted(held)
