"""The datastores the CNI-level suite runs against besides the default local one (that one is in support.py)."""

from __future__ import annotations

import ipaddress
import time
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
        attachments = []
        for key, value in self.server.dump(self.prefix + "/").items():
            network, kind, *_ = key[len(self.prefix) + 1 :].split("/")
            if kind == "attachments":
                attachments.append((network, value["id"], value["ifname"]))
                continue
            assert kind in entries, f"unexpected key {key}"
            entries[kind].append((network, (value["address"], value["id"], value["ifname"])))
        orphans = set(entries["reservations"]) - set(entries["pools"])
        assert not orphans, f"reservations without a pool entry: {sorted(orphans)}"
        holding = {(network, held[1], held[2]) for network, held in entries["pools"]}
        left = set(attachments) - holding
        assert not left, f"attachment keys of attachments holding nothing: {sorted(left)}"
        return sorted(entry for _, entry in entries["pools"])


STEADY = 2.5  # seconds entries without reservations must stay put to be taken as held (overlapping off)


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
        """The IPPool entries, once they agree with the reservations: served by the node daemon, the pools are a
        mirror written a moment after the reservations (store.kubecache); this waits for it, and fails if
        it does not come. With overlapping off there are no reservations: the entries once they stay put for
        STEADY seconds (a DEL's removal, written a moment later, is no entry staying put: two reads 0.3 s apart
        could both come before it)."""
        assert not (data_dir / "whereabouts.db").exists(), "a kubernetes-configured call wrote to the local store"
        deadline, last, since = time.monotonic() + 10, None, 0.0
        while True:
            held, reserved = self._read()
            now = time.monotonic()
            if reserved == {(address, cid, ifname) for address, cid, ifname in held}:
                return held
            if not reserved and held == last and now - since >= STEADY:
                return held
            if held != last:
                last, since = held, now
            assert now < deadline, f"the pools do not mirror the reservations: {held} vs {reserved}"
            time.sleep(0.3 if not reserved else 0.05)

    def _read(self) -> tuple[list[Held], set[Held]]:
        held: list[Held] = []
        for pool in self.server.objects(self.namespace, "ippools").values():
            network = ipaddress.ip_network(pool["spec"]["range"])
            for offset, entry in (pool["spec"].get("allocations") or {}).items():
                address = str(network.network_address + int(offset))
                held.append((address, entry["id"], entry.get("ifname", "")))
        reserved = {
            (o["spec"].get("address", ""), o["spec"]["containerid"], o["spec"].get("ifname", ""))
            for o in self.server.objects(self.namespace, "overlappingrangeipreservations").values()
        }
        return sorted(held), reserved


@dataclass(frozen=True)
class UnmirroredKubernetesDatastore(KubernetesDatastore):
    """The Kubernetes datastore with kubernetes.ippool_mirror false: the reservations alone, no IPPool written.
    Not in the default suite (a case that turns overlapping ranges off is a config error here): run it with
    WHEREABOUTS_TEST_DATASTORES=kubernetes-nomirror (tests/cni/conftest.py)."""

    def ipam(self, data_dir: Path) -> dict[str, Any]:
        kube = {"kubeconfig": str(self.kubeconfig), "ippool_mirror": False}
        return {"local_data_dir": str(data_dir), "kubernetes": kube}

    def held(self, data_dir: Path) -> list[Held]:
        assert not (data_dir / "whereabouts.db").exists(), "a kubernetes-configured call wrote to the local store"
        assert self.server.objects(self.namespace, "ippools") == {}, "an IPPool was written with the mirror off"
        return sorted(
            (o["spec"].get("address", ""), o["spec"]["containerid"], o["spec"].get("ifname", ""))
            for o in self.server.objects(self.namespace, "overlappingrangeipreservations").values()
        )
