"""What a real node changes on the host, noted before bring-up and put back at teardown.

A kubelet, containerd and the bridge plugin touch host-wide things outside the node's temp dir: network
namespaces in /run/netns, shim sockets in /run/containerd, pod logs in /var/log/pods, libcni's cache in
/var/lib/cni, cgroups, a few sysctls (the kubelet sets its kernel tunables, the bridge plugin turns on
forwarding), the propagation of `/`, and the pod bridge. `HostSnapshot.take()` records their state first;
`restore()` removes exactly what appeared since and puts the sysctls back, and never raises: it returns
what it could not undo.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

NETNS = Path("/run/netns")
CGROUPS = Path("/sys/fs/cgroup")
CGROUP_TREES = ("kubepods", "k8s.io")  # what the kubelet (cgroupfs driver) and containerd make


@dataclass(frozen=True)
class Watched:
    """A host dir the node writes into. Other tests may write there at the same time: only entries matching
    `ours` are the node's. A dir that was not there before goes whole if `whole`, else only once empty."""

    path: Path
    ours: str = "*"
    whole: bool = True


WATCHED = (
    Watched(NETNS, "cni-*", whole=False),  # containerd's pod network namespaces
    Watched(Path("/run/containerd")),  # shim sockets (s/), whatever containerd keeps at its default state dir
    Watched(Path("/run/containerd/s")),
    Watched(Path("/var/log/pods")),  # the kubelet's pod logs: fixed paths in 1.20
    Watched(Path("/var/log/containers")),
    Watched(Path("/var/lib/kubelet"), "device-plugins", whole=False),  # its device-plugin socket: fixed in 1.20
    Watched(Path("/var/lib/kubelet/device-plugins")),
    Watched(Path("/var/lib/cni"), "results", whole=False),  # libcni's result cache (containerd's go-cni)
    Watched(Path("/var/lib/cni/results")),
    Watched(Path("/usr/libexec/kubernetes")),  # the flexvolume dir, should a component default to it
    Watched(Path("/var/lib/rancher")),  # the session node's CNI dirs, where k3s keeps them (conftest.py)
)
# the kubelet's kernel tunables (pkg/kubelet/cm setupKernelTunables) and the bridge plugin's forwarding
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "vm/overcommit_memory", "vm/panic_on_oom",
           "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")  # fmt: skip


def links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], check=True, capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out or "[]")}


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, in mount order (fields of /proc/self/mountinfo, unescaped)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(point.encode().decode("unicode_escape"))
    return points


def root_propagation() -> str:
    out = subprocess.run(["findmnt", "-no", "PROPAGATION", "/"], capture_output=True, text=True).stdout
    return out.strip() or "private"


def unmount_under(prefix: Path) -> list[str]:
    """Unmount everything mounted at or below `prefix`, deepest first; returns what stayed mounted."""
    base = str(prefix).rstrip("/")

    def under(point: str) -> bool:
        return point == base or point.startswith(base + "/")

    for point in filter(under, reversed(mount_points())):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    return list(filter(under, mount_points()))


def entries(directory: Path) -> set[str] | None:
    """The names in `directory`, or None when it does not exist."""
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return None


def remove_path(path: Path) -> None:
    """Remove a file, a symlink, a mount point (unmounted first) or a tree, whatever it is."""
    unmount_under(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def cgroup_dirs() -> list[Path]:
    """The kubepods/k8s.io cgroups in every mounted hierarchy (cgroup v1 controllers, named ones, v2)."""
    tops = [CGROUPS, *(p for p in CGROUPS.iterdir() if p.is_dir())] if CGROUPS.is_dir() else []
    return [top / name for top in tops for name in CGROUP_TREES if (top / name).is_dir()]


def remove_cgroup_tree(top: Path) -> bool:
    """rmdir `top` and its descendants, children first; False if any is still in use."""
    ok = True
    for directory, _subdirs, _files in sorted(os.walk(top), key=lambda walked: -len(walked[0])):
        try:
            os.rmdir(directory)
        except OSError:
            ok = False
    return ok


def read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


@dataclass
class HostSnapshot:
    """The host's state before the node came up (see the module docstring)."""

    links: set[str] = field(default_factory=set)
    watched: dict[Path, set[str] | None] = field(default_factory=dict)
    sysctls: dict[str, str | None] = field(default_factory=dict)
    propagation: str = "private"

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(links=links(), watched={w.path: entries(w.path) for w in WATCHED},
                   sysctls={name: read_sysctl(name) for name in SYSCTLS}, propagation=root_propagation())  # fmt: skip

    def restore(self, *, base: Path, bridges: Iterable[str]) -> list[str]:
        """Undo what the node did to the host, in REALNODE.md's order; returns what is left over."""
        problems = [f"still mounted: {point}" for point in unmount_under(base)]
        problems += self.remove_new_entries()
        problems += self.delete_bridges(bridges)
        problems += self.restore_sysctls()
        problems += [f"cgroup in use: {top}" for top in cgroup_dirs() if not remove_cgroup_tree(top)]
        if self.propagation == "private":
            subprocess.run(["mount", "--make-rprivate", "/"], capture_output=True)
        new_links = links() - self.links
        problems += [f"link left behind: {name}" for name in sorted(new_links)]
        return problems

    def remove_new_entries(self) -> list[str]:
        """What the node added to the watched dirs (see `Watched`); deepest dirs first."""
        problems = []
        for watched in sorted(WATCHED, key=lambda w: -len(w.path.parts)):
            directory, before, now = watched.path, self.watched.get(watched.path), entries(watched.path)
            if now is None:
                continue
            if before is None and watched.whole:
                remove_path(directory)
                problems += [f"left behind: {directory}"] if directory.exists() else []
                continue
            for name in fnmatch.filter(now - (before or set()), watched.ours):
                remove_path(directory / name)
            if before is None:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            left = fnmatch.filter((entries(directory) or set()) - (before or set()), watched.ours)
            problems += [f"left behind: {directory / name}" for name in sorted(left)]
        return problems

    def delete_bridges(self, bridges: Iterable[str]) -> list[str]:
        problems = []
        for name in sorted(set(bridges) - self.links):
            if name in links():
                subprocess.run(["ip", "link", "del", name], capture_output=True)
            if name in links():
                problems.append(f"bridge left behind: {name}")
        return problems

    def restore_sysctls(self) -> list[str]:
        problems = []
        for name, value in self.sysctls.items():
            if value is not None and read_sysctl(name) != value:
                try:
                    (Path("/proc/sys") / name).write_text(value + "\n")
                except OSError as error:
                    problems.append(f"sysctl {name} not restored to {value}: {error}")
        return problems
