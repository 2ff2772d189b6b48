"""Helpers shared by the test suites: run the installed `whereabouts` executable as a CNI runtime would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# The console script installed into the test environment (the same one a runtime would exec).
PLUGIN = (
    shutil.which("whereabouts", path=os.path.dirname(sys.executable)) or shutil.which("whereabouts") or "whereabouts"
)
REPO = Path(__file__).resolve().parent.parent


def build_relay(directory: Path, *flags: str) -> str:
    """The compiled relay (scripts/build-relay.sh, with extra compiler `flags`) as `whereabouts` in `directory`,
    the Python plugin beside it as `whereabouts-python` (run by this interpreter), as install-cni lays them out
    on a node; the relay's path. No compiler fails the test session: scripts/setup.sh installs one."""
    from whereabouts.node.launcher import script

    directory.mkdir(parents=True, exist_ok=True)
    python = directory / "whereabouts-python"
    python.write_text(script("whereabouts", python=sys.executable))
    python.chmod(0o755)
    relay = directory / "whereabouts"
    subprocess.run(["bash", str(REPO / "scripts/build-relay.sh"), str(relay), *flags], check=True, capture_output=True)
    return str(relay)


@dataclass
class CNIResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def addresses(self) -> list[str]:
        return [ip["address"] for ip in self.json["ips"]]


Held = tuple[str, str, str]  # (address, container ID, ifname)


class Datastore(Protocol):
    """A datastore the CNI-level tests run against: the ipam keys that select it, and what it holds."""

    def ipam(self, data_dir: Path) -> dict[str, Any]: ...

    def held(self, data_dir: Path) -> list[Held]: ...


class LocalDatastore:
    """The embedded default: a SQLite file in `local_data_dir`."""

    def ipam(self, data_dir: Path) -> dict[str, Any]:
        # explicit: calls from a pod (K8S_POD_NAMESPACE) refuse the local store unless it is chosen
        return {"datastore": "local", "local_data_dir": str(data_dir)}

    def held(self, data_dir: Path) -> list[Held]:
        db = data_dir / "whereabouts.db"
        if not db.exists():
            return []
        with closing(sqlite3.connect(db)) as conn:
            return sorted(conn.execute("SELECT address, container_id, ifname FROM allocations"))


_datastore: Datastore = LocalDatastore()
_socket = ""  # the node daemon's socket that calls go through; "": served in process
_plugin = PLUGIN  # the executable run_cni runs


def current_datastore() -> Datastore:
    return _datastore


def current_socket() -> str:
    return _socket


def current_plugin() -> str:
    return _plugin


@contextmanager
def served_through(sock: str, plugin: str = PLUGIN) -> Iterator[None]:
    """`run_cni` runs `plugin` (the Python executable unless told), which hands calls to the node daemon on
    `sock`, inside the block ("" : in process)."""
    global _socket, _plugin
    previous = _socket, _plugin
    _socket, _plugin = sock, plugin
    try:
        yield
    finally:
        _socket, _plugin = previous


@contextmanager
def using_datastore(store: Datastore) -> Iterator[Datastore]:
    """`netconf` and the `held` readers target `store` inside the block, the previous one after it."""
    global _datastore
    previous, _datastore = _datastore, store
    try:
        yield store
    finally:
        _datastore = previous


def netconf(data_dir: Path, cni_version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
    """A network config for the current datastore (local, in `data_dir`, unless a test chose another), no flat file."""
    store = _datastore.ipam(data_dir)
    if any(key in ipam for key in ("datastore", "kubernetes", "etcd_host")):
        store.pop("datastore", None)  # a test choosing its own store: the default's explicit "local" is not wanted
    if isinstance(ipam.get("kubernetes"), dict) and isinstance(store.get("kubernetes"), dict):
        ipam["kubernetes"] = {**store["kubernetes"], **ipam["kubernetes"]}  # a test's extra keys join the store's
    ipam = {"type": "whereabouts", **store, "configuration_path": str(data_dir / "none"), **ipam}
    return {"cniVersion": cni_version, "name": "testnet", "type": "bridge", "ipam": ipam}


def run_cni(
    command: str,
    conf: dict[str, Any] | str | bytes,
    *,
    container_id: str = "c1",
    ifname: str = "eth0",
    netns: str = "/var/run/netns/test",
    cni_args: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> CNIResult:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    environ["WHEREABOUTS_SOCKET"] = _socket  # in process, unless the suite or the test names a daemon's socket
    environ.update(
        CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_IFNAME=ifname, CNI_NETNS=netns, CNI_PATH="/usr/lib/cni"
    )
    if cni_args:
        environ["CNI_ARGS"] = cni_args
    environ.update(env or {})
    data = conf if isinstance(conf, bytes) else (conf if isinstance(conf, str) else json.dumps(conf)).encode()
    proc = subprocess.run([_plugin], input=data, capture_output=True, env=environ, timeout=timeout)
    result = CNIResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    if _socket and environ["WHEREABOUTS_SOCKET"] == _socket:
        assert "serving the call in process" not in result.stderr, result.stderr  # the daemon must serve it
    return result


DAEMON = str(Path(PLUGIN).with_name("whereabouts-node"))


@contextmanager
def running_daemon(
    sock: str, *, log: Path | None = None, wrap: tuple[str, ...] = (), args: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """whereabouts-node serving on `sock` until the block ends (its line per call in `log`, if given);
    stopped by PID. `wrap` runs it under another command (e.g. in a mount namespace of its own); `args` are
    more of its options."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([*wrap, DAEMON, "--socket", sock, *args], stderr=out)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            assert proc.poll() is None and time.monotonic() < deadline, "whereabouts-node did not start"
            time.sleep(0.05)
        yield proc
    finally:
        stop_process(proc, 10)
        if log:
            out.close()


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Stop a server the tests started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def standin_pid(sock: str | Path) -> int:
    """The pid the stand-in for the node daemon on `sock` wrote into its pid file (whereabouts.cni.main), 0 if
    none is written."""
    pidfile = Path(f"{sock}.standin.pid")
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    return int(text) if text.isdigit() else 0


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_standin(sock: str | Path, wait: float) -> bool:
    """Stop the stand-in for the node daemon on `sock`, if one runs, by its pid: SIGTERM, then SIGKILL if it is
    still there after `wait` seconds (closing stores on servers stopped before it, say). Whether SIGTERM did."""
    pid = standin_pid(sock)
    if not pid or not alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False
