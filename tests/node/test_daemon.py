"""The node daemon: calls handed over on its socket are served as in process; without it, nothing changes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import whereabouts.cni.main as cni_main
import whereabouts.node.daemon as daemon_module
from support import PLUGIN, LocalDatastore, netconf, run_cni, running_daemon, served_through, stop_process
from whereabouts.node.runtime import Peer, Runtime, ServeInProcess


def held(data_dir: Path) -> list:
    return LocalDatastore().held(data_dir)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    sock = str(tmp_path / "run" / "plugin.sock")
    with running_daemon(sock) as proc:
        yield proc, sock


def test_calls_through_the_daemon_match_in_process(daemon: tuple, tmp_path: Path) -> None:
    _, sock = daemon
    conf = netconf(tmp_path, range="10.95.0.0/29", gateway="10.95.0.1")
    via = run_cni("ADD", conf, container_id="d1", env={"WHEREABOUTS_SOCKET": sock})
    direct = run_cni("ADD", conf, container_id="d2")
    assert via.returncode == direct.returncode == 0
    assert via.json == {"cniVersion": "1.0.0", "ips": [{"address": "10.95.0.2/29", "gateway": "10.95.0.1"}]}
    assert direct.addresses() == ["10.95.0.3/29"]  # one store, whichever process wrote it
    error = run_cni("ADD", b"{nope", env={"WHEREABOUTS_SOCKET": sock})
    assert error.returncode == 1 and error.json["code"] == 6
    assert run_cni("DEL", conf, container_id="d1", env={"WHEREABOUTS_SOCKET": sock}).returncode == 0
    assert run_cni("ADD", conf, container_id="d3").addresses() == ["10.95.0.2/29"]


def test_the_daemon_does_the_work(daemon: tuple, tmp_path: Path) -> None:
    """With the daemon's socket, the plugin process never loads the IPAM code: proven by breaking it."""
    _, sock = daemon
    conf = netconf(tmp_path, range="10.95.1.0/29")
    broken = tmp_path / "broken"
    (broken / "whereabouts" / "cni").mkdir(parents=True)
    (broken / "whereabouts" / "__init__.py").write_text("")
    (broken / "whereabouts" / "cni" / "__init__.py").write_text("")
    (broken / "whereabouts" / "cni" / "main.py").write_text(Path(cni_main.__file__).read_text())
    (broken / "whereabouts" / "cni" / "call.py").write_text("raise ImportError('in-process path used')\n")
    env = {"PYTHONPATH": str(broken)}
    assert run_cni("ADD", conf, container_id="x", env={**env, "WHEREABOUTS_SOCKET": sock}).addresses() == [
        "10.95.1.1/29"
    ]
    assert run_cni("ADD", conf, container_id="y", env={**env, "WHEREABOUTS_SOCKET": ""}).returncode != 0


def test_burst_through_the_daemon_and_no_leaked_descriptors(daemon: tuple, tmp_path: Path) -> None:
    proc, sock = daemon
    conf = netconf(tmp_path, range="10.95.2.0/24")
    env = {"WHEREABOUTS_SOCKET": sock}
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda n: run_cni("ADD", conf, container_id=f"b{n}", env=env), range(120)))
    assert all(r.returncode == 0 for r in results)
    assert sorted(r.addresses()[0] for r in results) == sorted(f"10.95.2.{n}/24" for n in range(1, 121))
    with ThreadPoolExecutor(max_workers=40) as pool:
        assert all(
            r.returncode == 0
            for r in pool.map(lambda n: run_cni("DEL", conf, container_id=f"b{n}", env=env), range(120))
        )
    assert len(os.listdir(f"/proc/{proc.pid}/fd")) < 20  # every call's store was closed


def test_daemon_gone_mid_burst_calls_still_succeed(daemon: tuple, tmp_path: Path) -> None:
    proc, sock = daemon
    conf = netconf(tmp_path, range="10.95.3.0/24")
    env = {"WHEREABOUTS_SOCKET": sock}

    def add(n: int):
        if n == 30:
            proc.kill()  # SIGKILL: the socket file stays behind, nobody answers it
        return run_cni("ADD", conf, container_id=f"g{n}", env=env)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(add, range(80)))
    assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:2]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 80


def test_a_daemon_that_stops_leaves_the_socket_of_the_one_that_replaced_it(tmp_path: Path) -> None:
    """A DaemonSet rolled with maxSurge starts the new daemon (which takes the socket path) before the old one
    stops: the old one must not remove the new one's socket on its way out, or every call on the node is
    served in process until the new daemon restarts."""
    sock = str(tmp_path / "run" / "plugin.sock")
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    conf = netconf(tmp_path, range="10.95.4.0/24")
    with running_daemon(sock, log=old_log) as old:
        with running_daemon(sock, log=new_log):
            deadline = time.monotonic() + 20
            while "serving on" not in new_log.read_text():
                assert time.monotonic() < deadline, "the new daemon did not start"
                time.sleep(0.05)
            stop_process(old, 10)
            assert old.returncode == 0 and os.path.exists(sock)
            result = run_cni("ADD", conf, container_id="after", env={"WHEREABOUTS_SOCKET": sock})
            assert result.addresses() == ["10.95.4.1/24"] and result.stderr == ""  # not served in process
            assert " whereabouts-node: ADD after/eth0 exit 0 " in new_log.read_text()
        assert not os.path.exists(sock)  # the new daemon removes its own on the way out


def parallel_adds(conf: dict, env: dict[str, str], *, calls: int, callers: int, prefix: str) -> list:
    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(lambda n: run_cni("ADD", conf, container_id=f"{prefix}{n}", env=env), range(calls)))


def test_a_burst_is_served_by_the_daemon_alone(tmp_path: Path) -> None:
    """300 ADDs from 40 concurrent processes: every one served by the daemon (a busy daemon makes callers
    wait, it does not send them to a store of their own), none served in process, no address twice."""
    sock, log = str(tmp_path / "run" / "plugin.sock"), tmp_path / "daemon.log"
    conf = netconf(tmp_path, range="10.96.0.0/22")
    with running_daemon(sock, log=log):
        results = parallel_adds(conf, {"WHEREABOUTS_SOCKET": sock}, calls=300, callers=40, prefix="burst")
    assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:2]
    assert [r.stderr for r in results if r.stderr] == []  # the plugin notes every call it serves itself
    served = [line for line in log.read_text().splitlines() if " whereabouts-node: ADD " in line]
    assert len(served) == 300 and all(" exit 0 " in line for line in served), served[:3]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 300


@pytest.mark.netns  # root: a mount namespace of the daemon's own
def test_a_daemon_that_sees_another_data_directory_gives_no_duplicates(tmp_path: Path) -> None:
    """The daemon runs in a mount namespace where the data directory's path shows another directory (as in
    a container with a different mount): it must not serve local-store calls from its own database."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    sock, log = str(tmp_path / "run" / "plugin.sock"), tmp_path / "daemon.log"
    bind = (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$1" "$2" && shift 2 && exec "$@"',
    )
    conf = netconf(data, range="10.96.4.0/24")
    with running_daemon(sock, log=log, wrap=(*bind, "bind", str(other), str(data))):
        results = parallel_adds(conf, {"WHEREABOUTS_SOCKET": sock}, calls=40, callers=40, prefix="view")
    assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:2]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 40, sorted(addresses)
    assert all("not the same directory" in r.stderr for r in results)  # each served in process, and said so
    assert not (other / "whereabouts.db").exists()  # the daemon's own view was never written
    assert len(held(data)) == 40


MOUNT_TMPFS = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "tmpfs")  # fmt: skip


def served_in_process_for_files(results: list) -> bool:
    """Every call handed back by the daemon, and served by its caller, for a file they see apart."""
    return all(r.returncode == 0 and "not the same file for the daemon and the caller" in r.stderr for r in results)


@pytest.mark.netns  # root: a mount namespace of the daemon's own
@pytest.mark.parametrize("relay", ["python", "compiled"])
def test_a_daemon_that_does_not_see_the_flat_file_hands_the_call_back(
    request: pytest.FixtureRequest, tmp_path: Path, etcd, etcd_prefix: str, relay: str
) -> None:
    """The flat file install-cni wrote names etcd; the daemon's container does not see it (a tmpfs over its
    directory, as a container without that mount): served by the daemon the call would find no flat file and
    use the local store, while the same call in process uses etcd: one address to two pods. Each call is
    handed back and lands in etcd."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    conf_dir, data = tmp_path / "net.d" / "whereabouts.d", tmp_path / "data"
    conf_dir.mkdir(parents=True)
    data.mkdir(mode=0o700)
    flat = conf_dir / "whereabouts.conf"
    flat.write_text(json.dumps({"etcd_host": etcd.url, "etcd_prefix": etcd_prefix}))
    ipam = {"type": "whereabouts", "range": "10.96.8.0/24", "local_data_dir": str(data)}
    conf = {"cniVersion": "1.0.0", "name": "testnet", "type": "bridge", "ipam": ipam}
    sock = str(tmp_path / "run" / "plugin.sock")
    env = {"WHEREABOUTS_SOCKET": sock, "WHEREABOUTS_FLAT_FILE": str(flat)}
    plugin = request.getfixturevalue("compiled_relay") if relay == "compiled" else PLUGIN
    with running_daemon(sock, wrap=(*MOUNT_TMPFS, str(conf_dir))), served_through("", plugin):
        results = [run_cni("ADD", conf, container_id=f"f{n}", env=env) for n in range(4)]
    assert served_in_process_for_files(results), [(r.stdout, r.stderr) for r in results]
    assert [r.addresses() for r in results] == [[f"10.96.8.{n}/24"] for n in range(1, 5)]
    assert len(etcd.dump(etcd_prefix)) >= 4 and held(data) == []  # etcd's, the daemon's local store untouched
    in_process = run_cni("ADD", conf, container_id="direct", env={"WHEREABOUTS_FLAT_FILE": str(flat)})
    assert in_process.addresses() == ["10.96.8.5/24"]  # one store for all


@pytest.mark.netns  # root: a mount namespace of the daemon's own
def test_a_daemon_that_does_not_see_the_kubeconfig_hands_the_call_back(
    tmp_path: Path, kube, kube_namespace: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    (tmp_path / "kc").mkdir()
    kubeconfig = kube.kubeconfig(tmp_path / "kc" / "plugin.kubeconfig", token=kube.plugin_token,
                                 namespace=kube_namespace, as_json=True)  # fmt: skip
    conf = netconf(tmp_path, kubernetes={"kubeconfig": str(kubeconfig)}, range="10.96.9.0/24")
    sock = str(tmp_path / "run" / "plugin.sock")
    with running_daemon(sock, wrap=(*MOUNT_TMPFS, str(tmp_path / "kc"))):
        results = [run_cni("ADD", conf, container_id=f"k{n}", env={"WHEREABOUTS_SOCKET": sock}) for n in range(3)]
    assert served_in_process_for_files(results), [(r.stdout, r.stderr) for r in results]
    assert [r.addresses() for r in results] == [[f"10.96.9.{n}/24"] for n in range(1, 4)]
    assert kube.objects(kube_namespace, "ippools")  # the caller's kubeconfig's cluster


class AskedPeer(Peer):
    """A caller that answers from a table (its own view of the paths), noting what it was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked = answers, []

    def identity(self, path: str) -> str:
        self.asked.append(path)
        return self.answers.get(path, cni_main.path_identity(path))


def test_a_file_is_judged_missing_by_each_side_s_answer_not_by_comparing_them(tmp_path: Path) -> None:
    """A path missing on both sides is known by different ancestors (the container's own /etc, the host's):
    no file for either, so the next place is looked at; a file the call creates (log_file) needs the same
    directory, and a file only one side sees declines the call."""
    missing = str(tmp_path / "missing" / "whereabouts.conf")
    elsewhere = {missing: "1:2/cni/net.d/whereabouts.d/whereabouts.conf"}
    runtime = Runtime(peer=AskedPeer(elsewhere))
    assert runtime.same_file(missing, "flat file", False) is False
    with pytest.raises(ServeInProcess) as declined:
        runtime.same_file(missing, "log_file", True)
    assert declined.value.reason == "files" and "log_file" in str(declined.value)
    assert Runtime(peer=AskedPeer({})).same_file(missing, "log_file", True) is False  # the same directory: fine
    there = tmp_path / "flat.conf"
    there.write_text("{}")
    peer = AskedPeer({})
    assert Runtime(peer=peer).same_file(str(there), "flat file", False) is True and peer.asked == [str(there)]
    for answer in ("1:2/flat.conf", "1:2", ""):  # missing for the caller, another file, no answer
        with pytest.raises(ServeInProcess):
            Runtime(peer=AskedPeer({str(there): answer})).same_file(str(there), "flat file", False)
    with pytest.raises(ServeInProcess):  # there for the caller only
        Runtime(peer=AskedPeer({missing: cni_main.path_identity(str(there))})).same_file(missing, "x", False)


def test_a_symlink_must_lead_to_the_same_file_for_both(tmp_path: Path) -> None:
    """The link itself may be one file for both while its target is not (an absolute target in a directory the
    daemon's container does not mount): its end is asked about too."""
    target = tmp_path / "target.conf"
    target.write_text("{}")
    link = tmp_path / "whereabouts.conf"
    link.symlink_to(target)
    peer = AskedPeer({})
    assert Runtime(peer=peer).same_file(str(link), "flat file", False) is True
    assert peer.asked == [str(link), str(target)]
    with pytest.raises(ServeInProcess):
        Runtime(peer=AskedPeer({str(target): "1:2"})).same_file(str(link), "flat file", False)


def test_the_relay_waits_for_a_busy_daemon_then_says_try_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A daemon that takes no call (its backlog full) is waited for, then answered with code 11: the call is
    not served elsewhere meanwhile, since the daemon may still be serving it."""
    path = str(tmp_path / "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued = []
    for _ in range(4):  # fill the backlog: nobody accepts them
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            waiting.connect(path)
        queued.append(waiting)
    monkeypatch.setattr(cni_main, "CONNECT_WAIT", 1)
    started = time.monotonic()
    answer = cni_main.relay(path, {"CNI_COMMAND": "ADD"}, b'{"cniVersion": "0.4.0"}')
    assert time.monotonic() - started >= 0.9  # it waited
    assert isinstance(answer, tuple) and answer[0] == 1
    assert json.loads(answer[1]) == {
        "cniVersion": "0.4.0", "code": 11, "msg": f"whereabouts node daemon on {path} took no call for 1 s"
    }  # fmt: skip
    for waiting in [*queued, listener]:
        waiting.close()


def test_the_relay_serves_in_process_only_when_nobody_listens_or_the_daemon_dies(tmp_path: Path) -> None:
    assert cni_main.relay(str(tmp_path / "absent.sock"), {}, b"{}") == ""  # no daemon installed: silently here
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # the file stays, nobody listens: a daemon killed with SIGKILL
    assert "Connection refused" in cni_main.relay(str(tmp_path / "stale.sock"), {}, b"{}")
    dying = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dying.bind(str(tmp_path / "dying.sock"))
    dying.listen(1)

    def accept_and_die() -> None:
        conn, _ = dying.accept()
        conn.recv(10)
        conn.close()

    thread = threading.Thread(target=accept_and_die)
    thread.start()
    assert "went away" in cni_main.relay(str(tmp_path / "dying.sock"), {}, b"{}")
    thread.join()
    dying.close()


@pytest.fixture
def in_test_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[daemon_module.NodeDaemon]:
    monkeypatch.setattr(daemon_module, "REQUEST_WAIT", 0.5)
    server = daemon_module.NodeDaemon(str(tmp_path / "d.sock"), quiet=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_daemon_declines_a_request_over_its_size_limit(in_test_daemon, tmp_path: Path) -> None:
    conf = netconf(tmp_path, range="10.96.5.0/24", padding="x" * (daemon_module.MAX_REQUEST + 1))
    answer = cni_main.relay(in_test_daemon.path, dict(CALL_ENV), json.dumps(conf).encode())
    assert isinstance(answer, str) and "over the daemon's limit" in answer, answer
    served = run_cni("ADD", conf, container_id="big", env={"WHEREABOUTS_SOCKET": in_test_daemon.path})
    assert served.addresses() == ["10.96.5.1/24"]  # served by the caller, with its own memory
    assert "over the daemon's limit" in served.stderr


def test_a_half_sent_request_does_not_pin_a_thread(in_test_daemon) -> None:
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(in_test_daemon.path)
    slow.sendall(b"\x00\x00")  # two bytes of a length, then nothing
    slow.settimeout(5)
    started = time.monotonic()
    assert slow.recv(10) == b""  # the daemon hung up on it
    assert time.monotonic() - started < 3
    slow.close()
    wait_for(lambda: in_test_daemon.slots._value == daemon_module.MAX_CALLS)  # its slot is given back
    assert in_test_daemon.budget.held == 0


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_requests_beyond_the_bytes_it_holds_at_once_are_declined(in_test_daemon, tmp_path, monkeypatch) -> None:
    """Many large requests at once could take the daemon past its memory limit: past IN_FLIGHT bytes held,
    the next is declined and its caller serves it (a budget given back once each request is done)."""
    in_test_daemon.budget.limit = 4096 * daemon_module.PARSED_COST
    conf = netconf(tmp_path, range="10.96.6.0/24", padding="x" * 5000)
    answer = cni_main.relay(in_test_daemon.path, dict(CALL_ENV), json.dumps(conf).encode())
    assert isinstance(answer, str) and "does not fit" in answer, answer
    small = netconf(tmp_path, range="10.96.6.0/24")
    for n in range(3):  # what a served request held is given back: the budget never fills up
        answer = cni_main.relay(
            in_test_daemon.path, {**CALL_ENV, "CNI_CONTAINERID": f"s{n}"}, json.dumps(small).encode()
        )
        assert isinstance(answer, tuple) and answer[0] == 0, answer
    wait_for(lambda: in_test_daemon.budget.held == 0)


def high_water_mark(pid: int) -> int:
    """The most resident memory the process has used, in bytes (VmHWM)."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_requests_are_counted_by_their_memory_once_parsed(tmp_path: Path) -> None:
    """JSON such as `[[[]],[[]],...]` takes ~35 bytes of Python objects per byte sent: a burst of such
    configs, within the bytes the daemon once took at once (32 MiB), is held to IN_FLIGHT once parsed; the
    rest are declined and served by their callers (before: six of them took the daemon ~220 MB past its
    start, 16 of 1.5 MB past a 256 MiB memory limit)."""
    sock, data = str(tmp_path / "run" / "plugin.sock"), tmp_path / "data"
    small = netconf(data, range="10.96.7.0/24")
    junk = "[" + ",".join(["[[]]"] * (daemon_module.MAX_REQUEST // 5 - 100)) + "]"  # just under the limit
    big = json.dumps({**small, "x": 0}).replace("0}", junk + "}", 1).encode()
    assert len(big) < daemon_module.MAX_REQUEST
    env = {"WHEREABOUTS_SOCKET": sock}
    with running_daemon(sock) as proc:
        assert run_cni("ADD", small, container_id="warm", env=env).returncode == 0
        before = high_water_mark(proc.pid)
        with contextlib.closing(sqlite3.connect(data / "whereabouts.db", isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock: every call served holds its parsed config meanwhile
            with ThreadPoolExecutor(max_workers=6) as pool:
                calls = [pool.submit(run_cni, "ADD", big, container_id=f"big{n}", env=env) for n in range(6)]
                grown = grown_and_settled(proc.pid, before)
                db.execute("ROLLBACK")
                results = [call.result() for call in calls]
    assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:2]
    assert len({r.addresses()[0] for r in results}) == 6
    assert grown < daemon_module.IN_FLIGHT + (32 << 20), f"{grown >> 20} MiB"
    declined = [r for r in results if "does not fit" in r.stderr]  # served in process, and said so
    assert len(declined) == 6 - daemon_module.IN_FLIGHT // (len(big) * daemon_module.PARSED_COST)


def grown_and_settled(pid: int, before: int, timeout: float = 8.0) -> int:
    """How far VmHWM grew past `before`, once it grew by a parsed request at least and then stopped growing."""
    last, deadline = -1, time.monotonic() + timeout
    while True:
        now = high_water_mark(pid)
        if now == last and now - before > 16 << 20:
            return now - before
        assert time.monotonic() < deadline, "the daemon's memory did not settle"
        last = now
        time.sleep(0.5)


CALL_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x", "CNI_PATH": "/x"}


def test_a_directory_yet_to_be_made_is_known_by_its_deepest_existing_ancestor(tmp_path: Path) -> None:
    """Caller and daemon agree on a new data directory when they see the same parent: creating it then
    makes one directory for both."""
    info = tmp_path.stat()
    assert cni_main.path_identity(str(tmp_path)) == f"{info.st_dev}:{info.st_ino}"
    assert cni_main.path_identity(str(tmp_path / "new" / "dir")) == f"{info.st_dev}:{info.st_ino}/new/dir"
    (tmp_path / "file").write_text("")
    file_info = (tmp_path / "file").stat()
    assert cni_main.path_identity(str(tmp_path / "file" / "x")) == f"{file_info.st_dev}:{file_info.st_ino}/x"


def test_a_local_data_dir_naming_a_byte_that_is_not_utf8_is_served_as_in_process(daemon: tuple, tmp_path: Path):
    """JSON's "\\udcff" names the byte 0xff in a path (as the OS functions read it): the daemon asks its caller
    about that path, and serves the call on the same store (before: code 100, an internal error)."""
    _, sock = daemon
    conf = netconf(tmp_path / "data\udcff", range="10.96.8.0/29")
    via = run_cni("ADD", conf, container_id="v", env={"WHEREABOUTS_SOCKET": sock})
    direct = run_cni("ADD", conf, container_id="d", env={"WHEREABOUTS_SOCKET": ""})
    assert (via.returncode, via.stderr) == (0, ""), via.stdout  # served by the daemon, not by its caller
    assert via.addresses() == ["10.96.8.1/29"] and direct.addresses() == ["10.96.8.2/29"]
    assert len(held(Path(os.fsdecode(bytes(tmp_path) + b"/data\xff")))) == 2  # one store, both wrote it


def test_an_environment_value_that_is_not_utf8_is_served_as_in_process(daemon: tuple, tmp_path: Path) -> None:
    """The runtime sets bytes: a container ID with the byte 0xff reaches the daemon as it reaches an in-process
    call (os.environ's surrogateescape), and gets the same answer; before, the daemon hung up without one and
    its caller counted it as dead ("d" in the fallbacks file)."""
    _, sock = daemon
    conf = netconf(tmp_path, range="10.96.9.0/29")
    odd = "c\udcff"  # subprocess sets it as the bytes b"c\xff"
    via = run_cni("ADD", conf, container_id=odd, env={"WHEREABOUTS_SOCKET": sock})
    direct = run_cni("ADD", conf, container_id=odd, env={"WHEREABOUTS_SOCKET": ""})
    assert via.stderr == "", via.stderr  # served by the daemon
    assert (via.returncode, via.stdout) == (direct.returncode, direct.stdout)
    assert via.json["code"] == 4 and "CNI_CONTAINERID" in via.json["msg"]  # (it was code 100: an internal error)
    fallbacks = Path(sock).parent / cni_main.FALLBACKS
    assert not fallbacks.exists() or b"d" not in fallbacks.read_bytes()


@contextlib.contextmanager
def daemon_with_few_descriptors(sock: str, nofile: int, idle: float) -> Iterator[subprocess.Popen[bytes]]:
    """whereabouts-node limited to `nofile` open files, closing stores unused for `idle` seconds."""
    import resource
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    code = (
        "import sys, whereabouts.node.runtime as runtime, whereabouts.node.daemon as daemon;"
        f"runtime.SHARED_IDLE = {idle}; sys.exit(daemon.main(['--socket', sys.argv[1], '--quiet']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, sock], preexec_fn=limit)
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, "whereabouts-node did not start"
        yield proc
    finally:
        stop_process(proc, 10)


def test_many_data_directories_do_not_run_the_daemon_out_of_descriptors(tmp_path: Path) -> None:
    """Each distinct local_data_dir keeps an open store (descriptors) for a while. Past the daemon's limit of
    open files, a call is served by its caller (never code 7, invalid flat file), the daemon closes its idle
    stores at once, and calls are served by it again (before: every call answered code 7 for good, since
    idle stores were closed only by calls that got as far as leasing one)."""
    sock = str(tmp_path / "run" / "plugin.sock")
    env = {"WHEREABOUTS_SOCKET": sock}
    with daemon_with_few_descriptors(sock, nofile=48, idle=2.0) as proc:
        results = [
            run_cni("ADD", netconf(tmp_path / f"data{n}", range="10.96.10.0/29"), container_id=f"m{n}", env=env)
            for n in range(40)
        ]
        assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:2]
        assert all(r.addresses() == ["10.96.10.1/29"] for r in results)  # one store each
        declined = [r for r in results if "out of file descriptors" in r.stderr]
        assert 0 < len(declined) < 10, [r.stderr for r in results]  # the limit was reached, and recovered from
        # the stores idle for longer than `idle` are closed, with no call to close them
        wait_for(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) < 12, timeout=10)
        last = run_cni("ADD", netconf(tmp_path / "last", range="10.96.10.0/29"), container_id="l", env=env)
        assert (last.returncode, last.stderr) == (0, "")


def test_the_files_a_kubeconfig_names_and_the_nodename_file_must_be_the_callers_too(tmp_path: Path) -> None:
    """A kubeconfig's tokenFile (or CA, client certificate and key) is read on connect, the nodename file names
    the node an ADD records and a GC judges by: the daemon reading its own (its service account's token, say)
    would serve the call with other credentials or another node than the caller's. Each is asked about; one
    the caller does not see declines the call."""
    from whereabouts.config import parse_ipam
    from whereabouts.nodeslice import node_name

    token = tmp_path / "token"
    token.write_text("daemon-only-token")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"tokenFile": str(token)}}],
    }))  # fmt: skip
    peer = AskedPeer({})
    Runtime(peer=peer).require_same_kubeconfig_files(str(kubeconfig))
    assert peer.asked == [str(token)]
    with pytest.raises(ServeInProcess) as declined:
        Runtime(peer=AskedPeer({str(token): "1:2/token"})).require_same_kubeconfig_files(str(kubeconfig))
    assert declined.value.reason == "files" and "tokenFile" in str(declined.value)

    (tmp_path / "nodename").write_text("node-7\n")
    cfg = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24", "configuration_path": str(tmp_path)})
    peer = AskedPeer({})
    assert node_name(cfg, "", Runtime(peer=peer).same_file) == "node-7"
    assert peer.asked == [str(tmp_path / "nodename")]
    with pytest.raises(ServeInProcess):
        node_name(cfg, "", Runtime(peer=AskedPeer({str(tmp_path / "nodename"): "1:2/nodename"})).same_file)
