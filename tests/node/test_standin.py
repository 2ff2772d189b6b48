"""The stand-in daemon (whereabouts.cni.main.start_standin, whereabouts.node.daemon `--stand-in-for`): while
nobody listens on the node daemon's socket and WHEREABOUTS_STANDIN names seconds, the plugin starts one daemon
on `<socket>.standin` and the calls after it are served there, through either relay; it exits when idle or when
the node's daemon listens again. Real processes throughout (the relays, the stand-in, a real node daemon); who
served a call is read from the `pid=` of its line in the config's `log_file`."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_relay import CALL, VERSION_CALL, answers, base_env, call, same, scripted, short_dir, tally  # noqa: F401

from support import PLUGIN, CNIResult, alive, netconf, running_daemon, standin_pid, stop_standin

RELAYS = ("python", "compiled")


@pytest.fixture(params=RELAYS)
def relay(request: pytest.FixtureRequest) -> str:
    """The executable the runtime execs: the Python plugin, or the compiled relay with it beside."""
    return PLUGIN if request.param == "python" else str(request.getfixturevalue("compiled_relay"))


class Node:
    """A node's socket directory with no daemon running, and a network config that logs every call."""

    def __init__(self, directory: Path, data: Path, subnet: str) -> None:
        self.dir, self.sock = directory, directory / "plugin.sock"
        self.standin = directory / "plugin.sock.standin"
        self.pidfile, self.log = directory / "plugin.sock.standin.pid", data / "calls.log"
        conf = netconf(data, range=f"{subnet}.0/24", gateway=f"{subnet}.1", log_file=str(self.log))
        conf["ipam"]["log_level"] = "verbose"
        self.conf = json.dumps(conf).encode()

    def add(self, relay: str, n: int, seconds: str = "30", **env: str) -> CNIResult:
        cni = {**CALL, "CNI_CONTAINERID": f"c{n}", "WHEREABOUTS_STANDIN": seconds, **env}
        return call(relay, str(self.sock), cni, self.conf)

    def standin_pid(self) -> int:
        return standin_pid(self.sock)

    def wait_listening(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while not (self.standin.exists() and self.standin_pid()):
            assert time.monotonic() < deadline, "no stand-in started"
            time.sleep(0.05)
        return self.standin_pid()

    def servers(self) -> list[int]:
        """The pid that served each call logged, in order."""
        return [int(pid) for pid in re.findall(r"\] pid=(\d+) ADD ", self.log.read_text())]

    def stop(self) -> None:
        """Stop the stand-in, if one runs, by its pid (SIGTERM), and wait for it to go."""
        assert stop_standin(self.sock, 70), f"stand-in {self.standin_pid()} did not stop"


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def node(short_dir: Path, tmp_path: Path) -> Iterator[Node]:  # noqa: F811 (the fixture imported above)
    made = Node(short_dir, tmp_path, "10.95.1")
    try:
        yield made
    finally:
        made.stop()


def test_no_daemon_starts_a_stand_in_that_serves_the_next_calls(relay: str, node: Node) -> None:
    first = node.add(relay, 1)
    assert first.returncode == 0, first.stdout + first.stderr
    pid = node.wait_listening()
    later = [node.add(relay, n) for n in range(2, 6)]
    assert all(r.returncode == 0 for r in later), [r.stdout + r.stderr for r in later]
    servers = node.servers()
    assert servers[0] != pid and servers[1:] == [pid] * 4  # the first in process, the rest by the stand-in
    assert len({r.addresses()[0] for r in [first, *later]}) == 5
    assert tally(node.dir) == b"n" * 5  # each call still says the node's daemon was not there
    assert "standing in for" in (node.dir / "plugin.sock.standin.log").read_text()
    os.kill(pid, signal.SIGTERM)
    assert wait(lambda: not alive(pid), 10) and not node.standin.exists()  # its socket goes with it
    assert "stand-in stopped: signal 15" in (node.dir / "plugin.sock.standin.log").read_text()


def test_a_burst_starts_one_stand_in_and_holds_no_address_twice(relay: str, node: Node) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda n: node.add(relay, n), range(48)))
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results if r.returncode][:2]
    assert len({r.addresses()[0] for r in results}) == 48
    pid = node.wait_listening()
    more = [node.add(relay, n) for n in range(48, 52)]
    assert all(r.returncode == 0 for r in more) and len({r.addresses()[0] for r in [*results, *more]}) == 52
    served = node.servers()
    # a plugin process serves one call: any pid serving more is a stand-in, and there was only one
    assert {p for p in served if served.count(p) > 1} == {pid} and served[-4:] == [pid] * 4


def test_a_stand_in_exits_after_its_idle_time(relay: str, node: Node) -> None:
    assert node.add(relay, 1, seconds="1").returncode == 0
    pid = node.wait_listening()
    assert wait(lambda: not alive(pid), 10), "the stand-in stayed without a call"
    assert not node.standin.exists()
    assert "stand-in stopped: no call for 1 s" in (node.dir / "plugin.sock.standin.log").read_text()


def test_a_stand_in_leaves_when_the_node_daemon_is_back(relay: str, node: Node, tmp_path: Path) -> None:
    assert node.add(relay, 1).returncode == 0
    pid = node.wait_listening()
    with running_daemon(str(node.sock), log=tmp_path / "daemon.log"):
        assert wait(lambda: not alive(pid), 10), "the stand-in stayed beside the node daemon"
        tally(node.dir)
        served = node.add(relay, 2)
        assert served.returncode == 0 and tally(node.dir) == b""  # the node daemon's
        assert "ADD c2/eth0 exit 0" in (tmp_path / "daemon.log").read_text()
    assert "the node daemon listens on" in (node.dir / "plugin.sock.standin.log").read_text()


def test_no_stand_in_starts_beside_a_running_node_daemon(relay: str, node: Node, tmp_path: Path) -> None:
    with running_daemon(str(node.sock)):
        assert node.add(relay, 1).returncode == 0
    assert not node.pidfile.exists() and not node.standin.exists()


@pytest.mark.parametrize("seconds", ["", "0", "000", "-5", " 5", "5s", "²", "1e3"])
def test_a_stand_in_starts_only_for_a_plain_number_of_seconds(relay: str, node: Node, seconds: str) -> None:
    assert node.add(relay, 1, seconds=seconds).returncode == 0
    assert node.add(relay, 2, seconds=seconds).returncode == 0
    time.sleep(0.3)
    assert not node.pidfile.exists() and not node.standin.exists()


def test_a_pid_file_that_is_a_link_starts_nothing(relay: str, node: Node, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    node.pidfile.symlink_to(target)
    for n in (1, 2):
        assert node.add(relay, n).returncode == 0
    time.sleep(0.3)
    assert not target.exists() and not node.standin.exists()  # never followed, never started


def test_a_stand_in_that_fails_to_start_is_tried_again_only_after_a_while(relay: str, node: Node) -> None:
    node.standin.mkdir()  # where its socket goes: it removes no file that is not a socket, and exits
    for n in range(1, 6):
        assert node.add(relay, n).returncode == 0
    assert wait(lambda: "is there and is no socket" in (node.dir / "plugin.sock.standin.log").read_text(), 10)
    assert node.standin.is_dir()
    log = node.dir / "plugin.sock.standin.log"
    started = log.stat().st_mtime
    for n in range(6, 10):
        assert node.add(relay, n).returncode == 0
    assert log.stat().st_mtime == started  # within STANDIN_START_EVERY of the failed start: none made
    assert len(set(node.servers())) == 9  # all served in process


def test_the_caller_cannot_choose_where_a_stand_in_starts(relay: str, node: Node, tmp_path: Path) -> None:
    elsewhere = tmp_path / "evil.sock"
    assert node.add(relay, 1, WHEREABOUTS_RELAY_STANDIN=str(elsewhere)).returncode == 0
    assert node.wait_listening()  # where the socket says, and only there
    assert not elsewhere.exists() and not Path(f"{elsewhere}.pid").exists()


def test_a_stand_in_served_call_is_the_same_through_both_relays(compiled_relay: str, short_dir: Path) -> None:  # noqa: F811
    standin = short_dir / "plugin.sock.standin"
    with scripted(standin, answers(0, b'{"from": "the stand-in"}')) as server:
        env = {**VERSION_CALL, "WHEREABOUTS_STANDIN": "30"}
        compiled = call(compiled_relay, str(short_dir / "plugin.sock"), env)
        assert tally(short_dir) == b"n"
        python = call(PLUGIN, str(short_dir / "plugin.sock"), env)
        assert tally(short_dir) == b"n"
    assert compiled.stdout == '{"from": "the stand-in"}' and same(compiled, python)
    assert server.requests[0] == server.requests[1]
    assert b"WHEREABOUTS_RELAY_STANDIN" not in server.requests[0][0]


def test_a_stand_in_that_goes_away_mid_call_leaves_the_call_to_the_caller(
    compiled_relay: str,
    short_dir: Path,  # noqa: F811
) -> None:
    standin = short_dir / "plugin.sock.standin"
    with scripted(standin, lambda conn, env, stdin: None):  # reads the request, hangs up
        env = {**VERSION_CALL, "WHEREABOUTS_STANDIN": "30"}
        compiled = call(compiled_relay, str(short_dir / "plugin.sock"), env)
        python = call(PLUGIN, str(short_dir / "plugin.sock"), env)
    reason = f"node daemon on {standin} went away: the connection ended before the answer"
    assert compiled.stderr == f"whereabouts: serving the call in process: {reason}\n" and same(compiled, python)
    assert tally(short_dir) == b"nn"  # the stand-in's going is not the node daemon's: not counted
    assert not (short_dir / "plugin.sock.standin.pid").exists()  # one listens there: none started


def test_a_stand_in_finishes_the_calls_it_serves_before_it_exits(relay: str, node: Node) -> None:
    assert node.add(relay, 0).returncode == 0
    pid = node.wait_listening()
    with ThreadPoolExecutor(max_workers=8) as pool:
        pending = [pool.submit(node.add, relay, n) for n in range(1, 25)]
        time.sleep(0.05)
        os.kill(pid, signal.SIGTERM)  # stops taking calls; those taken are answered
        results = [p.result() for p in pending]
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results if r.returncode][:2]
    assert len({r.addresses()[0] for r in results}) == 24
    assert not [r.stderr for r in results if "went away" in r.stderr]  # none taken was dropped
    assert node.servers().count(pid) > 1 and wait(lambda: not alive(pid), 10)


def test_uninstall_takes_the_stand_ins_files_off(node: Node, tmp_path: Path) -> None:
    from whereabouts.node.uninstall import uninstall

    assert node.add(PLUGIN, 1).returncode == 0
    node.wait_listening()
    node.stop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(node.standin))  # one killed with SIGKILL leaves its socket
    lines: list[str] = []
    uninstall(bin_dir=tmp_path / "bin", conf_dir=tmp_path / "net.d", socket=node.sock, data_dir=tmp_path / "d",
              log=lines.append)  # fmt: skip
    assert not node.dir.exists(), lines


def test_a_stand_in_pins_no_directory_and_blocks_no_signal(relay: str, node: Node, tmp_path: Path) -> None:
    """Started by a caller that runs in a directory of its own with SIGTERM blocked (a runtime may exec plugins
    so), the stand-in runs in / and SIGTERM stops it."""
    cwd = tmp_path / "caller-cwd"
    cwd.mkdir()
    blocked = "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); " \
              "os.execv(sys.argv[1], sys.argv[1:])"  # fmt: skip
    env = {**base_env(), **CALL, "WHEREABOUTS_SOCKET": str(node.sock), "WHEREABOUTS_STANDIN": "30"}
    done = subprocess.run([sys.executable, "-c", blocked, relay], input=node.conf, capture_output=True, env=env,
                          cwd=cwd, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    pid = node.wait_listening()
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert int(status["SigBlk"], 16) & (1 << (signal.SIGTERM - 1)) == 0
    os.kill(pid, signal.SIGTERM)
    assert wait(lambda: not alive(pid), 10)


def test_a_caller_with_no_socket_cannot_have_a_stand_in_replace_a_file(relay: str, node: Node, tmp_path: Path) -> None:
    """WHEREABOUTS_SOCKET empty means no daemon: a WHEREABOUTS_RELAY_STANDIN the caller sets starts nothing
    that replaces a file (the compiled relay drops it; the stand-in replaces nothing but a socket)."""
    for victim in (tmp_path / "victim", tmp_path / "victim.standin"):
        victim.write_text("precious")
        env = {"WHEREABOUTS_RELAY_STANDIN": str(victim), "WHEREABOUTS_STANDIN": "30"}
        done = call(relay, "", {**CALL, **env}, node.conf)
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(0.5)
        assert victim.read_text() == "precious"
        Path(f"{victim}.pid").unlink(missing_ok=True)  # (the Python plugin's try: the stand-in refused)


def test_a_stand_in_holds_no_descriptor_of_its_caller(relay: str, node: Node) -> None:
    """A pipe the runtime leaked into the plugin is not kept open by the stand-in (its reader would wait for
    the stand-in's exit)."""
    read_end, write_end = os.pipe()
    env = {**base_env(), **CALL, "WHEREABOUTS_SOCKET": str(node.sock), "WHEREABOUTS_STANDIN": "30"}
    done = subprocess.run([relay], input=node.conf, capture_output=True, env=env, pass_fds=(write_end,), timeout=60)
    os.close(write_end)
    assert done.returncode == 0, done.stdout + done.stderr
    pid = node.wait_listening()
    assert wait(lambda: bool(select.select([read_end], [], [], 0)[0]), 10), "the pipe stayed open"
    assert os.read(read_end, 1) == b""  # its end: nobody holds the write end any more
    os.close(read_end)
    assert alive(pid)


@pytest.mark.parametrize("closed", ["1", "2"])
def test_a_caller_with_stdout_or_stderr_closed_still_starts_a_locked_stand_in(
    relay: str, node: Node, closed: str
) -> None:
    env = {**base_env(), **CALL, "WHEREABOUTS_SOCKET": str(node.sock), "WHEREABOUTS_STANDIN": "30"}
    script = f'exec {closed}>&- && exec "$0" < "$1"'
    conf = node.dir / "conf.json"
    conf.write_bytes(node.conf)
    subprocess.run(["bash", "-c", script, relay, str(conf)], env=env, capture_output=True, timeout=60)
    pid = node.wait_listening()
    fd = os.open(node.pidfile, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the stand-in holds it
    finally:
        os.close(fd)
    assert node.standin_pid() == pid


def test_the_node_daemon_takes_no_call_while_the_stand_in_finishes_its_own(node: Node, tmp_path: Path) -> None:
    """The node daemon back: it listens (the stand-in stops taking calls) but takes none until the stand-in,
    whose calls are over, lets go of its lock; callers wait in its backlog meanwhile."""
    node.pidfile.write_text("4242\n")
    held = os.open(node.pidfile, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # a stand-in still serving
    try:
        with running_daemon(str(node.sock), log=tmp_path / "daemon.log"), ThreadPoolExecutor(1) as pool:
            pending = pool.submit(node.add, PLUGIN, 1, "0")
            time.sleep(1.0)
            assert not pending.done()  # waiting in the backlog
            fcntl.flock(held, fcntl.LOCK_UN)
            assert pending.result().returncode == 0
            assert "waited" in (tmp_path / "daemon.log").read_text()
    finally:
        os.close(held)


def test_a_fifo_where_the_stand_in_logs_blocks_no_call(relay: str, node: Node) -> None:
    os.mkfifo(node.dir / "plugin.sock.standin.log")
    started = time.monotonic()
    assert node.add(relay, 1).returncode == 0
    assert time.monotonic() - started < 20 and not node.standin.exists()


def test_a_relative_socket_path_finds_the_stand_in_it_started(relay: str, node: Node) -> None:
    env = {**base_env(), **CALL, "WHEREABOUTS_SOCKET": "plugin.sock", "WHEREABOUTS_STANDIN": "30"}
    for n in (1, 2):
        done = subprocess.run([relay], input=node.conf, capture_output=True, timeout=60, cwd=node.dir,
                              env={**env, "CNI_CONTAINERID": f"r{n}"})  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        if n == 1:
            pid = node.wait_listening()
    assert node.servers()[-1] == pid


def test_a_socket_path_too_long_for_a_stand_in_beside_it_tries_none(compiled_relay: str, tmp_path: Path) -> None:
    """A stand-in's socket must fit in 107 bytes: where it cannot, no stand-in is tried, and both relays say
    nothing more than with no stand-in wanted."""
    directory = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    try:
        sock = directory / ("s" * (103 - len(str(directory))))  # 104 bytes: its stand-in's would be 112
        assert len(str(sock)) < 107 < len(f"{sock}.standin")
        conf = json.dumps(netconf(tmp_path, range="10.95.9.0/24", gateway="10.95.9.1")).encode()
        for n, executable in enumerate((compiled_relay, PLUGIN)):
            done = call(executable, str(sock), {**CALL, "CNI_CONTAINERID": f"l{n}", "WHEREABOUTS_STANDIN": "30"}, conf)
            assert (done.returncode, done.stderr) == (0, "")
        assert not Path(f"{sock}.standin.pid").exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_plugin_in_another_network_namespace_than_init_s_starts_no_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """(In process: this machine's init may not be ours to look at.) A namespace that differs from init's
    starts none; one that cannot be compared does not stop it (the stand-in still declines what it cannot see)."""
    import whereabouts.cni.main as plugin

    def readlink(differs: str) -> Callable[[str], str]:
        def look(path: str) -> str:
            if path.startswith("/proc/1/") and differs == "denied":
                raise PermissionError(13, "Permission denied")
            return f"{path.rsplit('/', 1)[1]}:[{'2' if path.startswith('/proc/1/') and differs in path else '1'}]"

        return look

    for differs, expected in (("net", False), ("mnt", False), ("none", True), ("denied", True)):
        monkeypatch.setattr(os, "readlink", readlink(differs))
        assert plugin._host_namespaces() is expected, differs
