"""The real node's config files: containerd's, the kubelet's, and the reference bridge + host-local CNI config.

Every path points into the node's temp dir; the settings are the ones REALNODE.md found necessary here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "k8s.gcr.io/pause:3.2"
BUSYBOX_IMAGE = "localhost/busybox:test"  # node-tools.sh builds it
POD_BRIDGE, POD_SUBNET = "wa-test0", "10.199.0.0/24"  # the session node's own bridge (unattached to eth0)
# snapshotters that cannot work here and only log errors (or probe kernel modules) at start
DISABLED_PLUGINS = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]  # fmt: skip


# relaxed: a test machine's disk and memory are what they are, and an evicted pod would only confuse a test
EVICTION_HARD = {
    "memory.available": "1Mi",
    "nodefs.available": "1%",
    "nodefs.inodesFree": "1%",
    "imagefs.available": "1%",
}


# relaxed: a test machine's disk and memory are what they are, and an evicted pod would only confuse a test
EVICTION_HARD = {
    "memory.available": "1Mi",
    "nodefs.available": "1%",
    "nodefs.inodesFree": "1%",
    "imagefs.available": "1%",
}


def containerd_config(base: Path, *, cni_bin_dir: Path, cni_conf_dir: Path) -> str:
    """containerd 1.6, version 2 config: its root, state, socket, runc root and plugin dirs all under `base`."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = {json.dumps(DISABLED_PLUGINS)}

[grpc]
  address = "{base / "containerd.sock"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # this VM lacks CAP_SYS_RESOURCE: without it every sandbox fails ("can't get final child's PID from pipe")
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{base / "runc"}"

[{cri}.cni]
  bin_dir = "{cni_bin_dir}"
  conf_dir = "{cni_conf_dir}"
"""


def kubelet_config(base: Path, *, port: int, healthz_port: int) -> dict[str, Any]:
    """KubeletConfiguration (JSON is YAML): loopback-only server, anonymous (the apiserver calls it for exec)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "makeIPTablesUtilChains": False,
        "evictionHard": EVICTION_HARD,
        "imageGCHighThresholdPercent": 100,  # never collect the imported images: there is no registry to pull from
        "imageGCLowThresholdPercent": 99,
        "volumePluginDir": str(base / "volume-plugins"),
        "staticPodPath": "",
        "serializeImagePulls": False,
        "syncFrequency": "10s",  # mounted Secrets and ConfigMaps follow their objects within seconds (token rotation)
    }


def bridge_host_local(
    *, bridge: str, subnet: str, data_dir: Path, name: str = "wa-test", cni_version: str = "0.4.0"
) -> dict[str, Any]:
    """The reference `bridge` plugin with `host-local` IPAM: a gateway on the node's own bridge, no masquerade."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(data_dir)}
    plugin = {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False, "ipam": ipam}
    return {"cniVersion": cni_version, "name": name, "plugins": [plugin]}


def busybox_deployment(name: str, replicas: int) -> dict[str, Any]:
    container = {"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                # sleep as PID 1 ignores SIGTERM: a short grace keeps scale-down quick
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
            },
        },
    }


def busybox_statefulset(name: str, replicas: int) -> dict[str, Any]:
    """Pods named `<name>-0` .. `<name>-<replicas - 1>`, made all at once (Parallel) rather than one by one, so
    that their ADDs race for addresses as a Deployment's do. No Service is needed for the pods to run."""
    container = {"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
            },
        },
    }
