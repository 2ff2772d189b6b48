"""The stand-in daemon (whereabouts.cni.main.start_standin, whereabouts.node.daemon `--stand-in-for`): while
nobody listens on the node daemon's socket and WHEREABOUTS_STANDIN names seconds, the plugin starts one daemon
on `<socket>.standin` and the calls after it are served there, through either relay; it exits when idle or when
the node's daemon listens again. Real processes throughout (the relays, the stand-in, a real node daemon); who
served a call is read from the `pid=` of its line in the config's `log_file`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_relay import CALL, VERSION_CALL, answers, call, same, scripted, short_dir, tally  # noqa: F401

from support import PLUGIN, CNIResult, netconf, running_daemon

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
        text = self.pidfile.read_text().strip() if self.pidfile.exists() else ""
        return int(text) if text.isdigit() else 0

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
        pid = self.standin_pid()
        if pid and alive(pid):
            os.kill(pid, signal.SIGTERM)
            assert wait(lambda: not alive(pid), 70), f"stand-in {pid} did not stop"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return status[0] != "Z"


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
    node.standin.mkdir()  # where its socket goes: it cannot bind, and exits
    for n in range(1, 6):
        assert node.add(relay, n).returncode == 0
    assert wait(lambda: "Traceback" in (node.dir / "plugin.sock.standin.log").read_text(), 10)
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
