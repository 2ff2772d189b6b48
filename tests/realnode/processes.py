"""Finding and stopping the real node's processes by PID, and probing its components' health endpoints."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import time
import urllib.request
from pathlib import Path


def kill_leftovers(state: Path, socket: Path) -> list[str]:
    """What a containerd (state dir `state`, socket `socket`) left running, killed by PID: each container's init
    (its bundle's init.pid, checked against its cgroup), then each shim. The runc v2 shim writes no pid file and
    is re-parented to init, so a shim is found as the process whose working dir is a bundle in this state dir and
    that names this socket: nothing another node or test could own. Returns what it killed."""
    bundles = state / "io.containerd.runtime.v2.task"
    left = []
    for bundle in sorted(bundles.glob("*/*")):
        init = pid_file(bundle / "init.pid")
        if init and bundle.name in read(f"/proc/{init}/cgroup"):
            kill(init)
            left.append(f"container {bundle.name[:12]}")
    for pid, cwd in processes_in(bundles):
        if str(socket) in read(f"/proc/{pid}/cmdline"):
            kill(pid)
            left.append(f"shim {pid} of {Path(cwd).name[:12]}")
    return left


def processes_in(directory: Path) -> list[tuple[int, str]]:
    """(pid, working dir) of every process whose working dir lies under `directory`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cwd = os.readlink(proc / "cwd")
                if cwd.startswith(f"{directory}/"):
                    found.append((int(proc.name), cwd))
    return found


def healthz(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # a self-signed serving cert
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=5, context=context) as reply:
        return reply.read() == b"ok"


def read(path: str) -> str:
    try:
        return Path(path).read_bytes().decode(errors="replace")
    except OSError:
        return ""


def pid_file(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def kill(pid: int) -> None:
    """SIGKILL one process found by its pid file, and wait until it is gone (or a zombie for its parent)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and read(f"/proc/{pid}/stat").split(") ")[-1][:1] not in ("", "Z"):
        time.sleep(0.05)


def stop_standin(run_dir: Path, socket: str = "plugin.sock") -> int | None:
    """Stop the plugin's stand-in daemon on this host (docs/install.md), if one runs: found by its pid file in
    the node daemon's socket dir, and only if that pid is a stand-in (its command line says so). Its pid."""
    pid = pid_file(run_dir / f"{socket}.standin.pid")
    if pid is None or "--stand-in-for" not in read(f"/proc/{pid}/cmdline"):
        return None
    kill(pid)
    return pid
