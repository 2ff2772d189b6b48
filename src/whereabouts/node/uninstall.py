"""`whereabouts-install-cni --uninstall`: take off a node what install-cni and the plugin put there.

Removed: the `whereabouts` executable, the launcher or the compiled relay, and the `whereabouts-python`
launcher beside a relay (each only if install-cni wrote it: another plugin of that name is left) and
`whereabouts.d/` with every bundle in the CNI bin dir; the flat file, the kubeconfig and `nodename` (and their
staging files, by the names install-cni gives them) in `<CNI conf dir>/whereabouts.d/`, and that directory
once empty (one that is a symbolic link is refused, nothing removed: install.refuse_link); the node daemon's
socket and the plugin's `fallbacks` file beside it (whereabouts.node.metrics); the node-local lock files
(`<local data dir>/locks/`, see whereabouts.store.nodelock).

Left on purpose: a local store's database in the local data dir (`whereabouts.db` and its journal and id files:
the addresses of `datastore: local` networks, which running containers may still hold), anything else found in
those directories that is not ours, and, when run from the DaemonSet's pod, the directories that are its own
mount points (a pod cannot remove them). What is left is logged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from whereabouts.cni.main import FALLBACKS, STANDIN_SUFFIX
from whereabouts.node.install import refuse_link, staging_names
from whereabouts.node.metrics import TAKEN
from whereabouts.node.relay import PYTHON_PLUGIN, note_of

INSTALLER_NOTE = "installed by whereabouts-install-cni"
NODE_FILES = ("whereabouts.conf", "whereabouts.kubeconfig", "nodename")


def uninstall(*, bin_dir: Path, conf_dir: Path, socket: Path, data_dir: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove what is ours; returns what stays in the directories we used (logged)."""
    files = conf_dir / "whereabouts.d"
    refuse_link(files)
    _remove_launcher(bin_dir / "whereabouts", log)
    if (bin_dir / PYTHON_PLUGIN).exists():
        _remove_launcher(bin_dir / PYTHON_PLUGIN, log)
    for staged in [*staging_names(bin_dir / "whereabouts"), *staging_names(bin_dir / PYTHON_PLUGIN)]:
        _remove(staged, log)
    _remove(bin_dir / "whereabouts.d", log)
    for name in NODE_FILES:
        for path in [files / name, *staging_names(files / name)]:
            _remove(path, log)
    standin = socket.with_name(socket.name + STANDIN_SUFFIX)
    for listened in (socket, standin):  # a stand-in running still exits after its idle time: no call comes
        if _is_socket(listened):
            _remove(listened, log)
    for name in (FALLBACKS, TAKEN, f"{standin.name}.pid", f"{standin.name}.log"):
        _remove(socket.parent / name, log)
    _remove(data_dir / "locks", log)
    left = []
    for directory in (files, socket.parent, data_dir):
        if not _rmdir(directory, log) and directory.exists():
            left += sorted(directory.iterdir()) or [directory]
    for path in left:
        log(f"install-cni: uninstall: left {path}")
    return left


def _remove_launcher(path: Path, log: Callable[[str], None]) -> None:
    try:
        content = path.read_bytes()
    except OSError:
        return
    ours = INSTALLER_NOTE in content[:1000].decode(errors="replace") or INSTALLER_NOTE in note_of(content)
    if ours:
        _remove(path, log)
    else:
        log(f"install-cni: uninstall: left {path}: not written by install-cni")


def _remove(path: Path, log: Callable[[str], None]) -> None:
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if not os.path.lexists(path):
        log(f"install-cni: uninstall: removed {path}")


def _rmdir(directory: Path, log: Callable[[str], None]) -> bool:
    """Remove an empty directory; False if it is not there, not empty, or a mount point (the pod's own)."""
    try:
        directory.rmdir()
    except OSError:
        return False
    log(f"install-cni: uninstall: removed {directory}")
    return True


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.lstat().st_mode)
    except OSError:
        return False
