"""The node daemon never commits an ADD its caller no longer waits for, and an attachment's DEL is served after
any ADD of it still to be committed: otherwise the runtime, told the ADD failed (its caller killed, or answered
code 11), DELs first, and the ADD's late commit holds an address nobody releases."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from etcd_server import EtcdServer
from support import PLUGIN, LocalDatastore, netconf, run_cni
from whereabouts.node import daemon as daemon_module
from whereabouts.node.batch import Attachments, Batcher
from whereabouts.node.runtime import Runtime, StorePool
from whereabouts.store.factory import open_store


class Gate:
    """Stops the first ADD of the daemon's store at `where` ("begin": before its transaction, "commit": right
    before its commit, its caller's liveness checked already) until released."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.armed = True
        self.reached = threading.Event()
        self.release = threading.Event()

    def stop(self) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            assert self.release.wait(30)


class _Txn:
    def __init__(self, txn: Any, gate: Gate) -> None:
        self.txn, self.gate = txn, gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)

    def commit(self, changes: Any) -> bool:
        if self.gate.where == "commit" and any(change.owner is not None for change in changes.changes):
            self.gate.stop()
        return bool(self.txn.commit(changes))


class _Transacting:
    def __init__(self, inner: Any, gate: Gate) -> None:
        self.inner, self.gate = inner, gate

    def __enter__(self) -> _Txn:
        if self.gate.where == "begin":
            self.gate.stop()
        return _Txn(self.inner.__enter__(), self.gate)

    def __exit__(self, *exc: object) -> Any:
        return self.inner.__exit__(*exc)


class GatedStore:
    def __init__(self, store: Any, gate: Gate) -> None:
        self.store, self.gate = store, gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def transaction(self, keys: Any, *, overlapping: bool) -> _Transacting:
        return _Transacting(self.store.transaction(keys, overlapping=overlapping), self.gate)


@contextlib.contextmanager
def gated_daemon(tmp_path: Path, gate: Gate) -> Iterator[daemon_module.NodeDaemon]:
    """A daemon as whereabouts-node runs one (group commit, stores kept, attachments one call at a time), in
    this process, its store gated."""
    stores = StorePool(opener=lambda settings: GatedStore(open_store(settings), gate))
    runtime = Runtime(batcher=Batcher(), stores=stores, attachments=Attachments())
    server = daemon_module.NodeDaemon(str(tmp_path / "d.sock"), runtime=runtime, quiet=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        gate.release.set()
        server.shutdown()
        server.server_close()


def start_add(conf: dict[str, Any], sock: str, container_id: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    environ.update(WHEREABOUTS_SOCKET=sock, CNI_COMMAND="ADD", CNI_CONTAINERID=container_id, CNI_IFNAME="eth0",
                   CNI_NETNS="/var/run/netns/test", CNI_PATH="/usr/lib/cni")  # fmt: skip
    pipe = subprocess.PIPE
    proc = subprocess.Popen([PLUGIN], stdin=pipe, stdout=pipe, stderr=pipe, env=environ)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    return proc


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        assert pipe is not None
        pipe.close()


def settled(server: daemon_module.NodeDaemon, timeout: float = 20.0) -> None:
    """Every call the daemon took is over (its slots all free)."""
    deadline = time.monotonic() + timeout
    while server.slots._value != daemon_module.MAX_CALLS:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the daemon's calls did not end"
        time.sleep(0.02)


def test_an_add_whose_caller_was_killed_before_its_commit_commits_nothing(tmp_path: Path) -> None:
    gate = Gate("begin")
    conf = netconf(tmp_path, range="10.97.0.0/29")
    with gated_daemon(tmp_path, gate) as server:
        proc = start_add(conf, server.path, "killed")
        assert gate.reached.wait(20)
        kill(proc)  # the runtime's timeout: it will DEL (or not at all, the pod gone)
        gate.release.set()
        settled(server)
        assert LocalDatastore().held(tmp_path) == []
        served = run_cni("ADD", conf, container_id="next", env={"WHEREABOUTS_SOCKET": server.path})
        assert served.addresses() == ["10.97.0.1/29"]  # the daemon still serves: the first address was never taken


def test_a_del_after_its_add_s_caller_was_killed_mid_commit_is_served_after_the_commit(
    tmp_path: Path, etcd: EtcdServer, etcd_prefix: str
) -> None:
    """The ADD's caller killed while its commit is on its way (too late to leave it out): the runtime's DEL
    waits for that commit, then releases what it wrote."""
    gate = Gate("commit")
    conf = netconf(tmp_path, range="10.97.1.0/29", etcd_host=etcd.url, etcd_prefix=etcd_prefix)
    with gated_daemon(tmp_path, gate) as server, ThreadPoolExecutor(max_workers=1) as pool:
        proc = start_add(conf, server.path, "late")
        assert gate.reached.wait(20)
        kill(proc)
        deleting = pool.submit(run_cni, "DEL", conf, container_id="late", env={"WHEREABOUTS_SOCKET": server.path})
        time.sleep(0.5)
        assert not deleting.done()  # it waits for the ADD of the same attachment
        gate.release.set()
        assert deleting.result(timeout=30).returncode == 0
        settled(server)
        assert etcd.dump(etcd_prefix + "/") == {}  # neither a pool entry nor a reservation


def test_a_call_of_an_attachment_waits_for_the_one_before_it_within_its_deadline() -> None:
    from whereabouts import deadline
    from whereabouts.errors import TryAgainLater

    attachments = Attachments()
    leave = attachments.enter(("c", "eth0", "net"))
    other = attachments.enter(("c", "eth1", "net"))  # another attachment goes ahead
    deadline.start(0.3)
    try:
        with pytest.raises(TryAgainLater, match="still being served"):
            attachments.enter(("c", "eth0", "net"))
    finally:
        deadline.clear()
    threading.Timer(0.2, leave).start()
    attachments.enter(("c", "eth0", "net"))()  # served once the one before it is over
    other()
    leave()  # (twice: a no-op)
    assert attachments.busy == set()
