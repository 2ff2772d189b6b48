"""The compiled relay (src/whereabouts/node/relay.c): what the Python relay does, byte for byte, without
starting Python; it execs the Python plugin beside it whenever the call is served in process.

Against a real node daemon for the outcomes, and against a scripted one (`Scripted`) to hold both relays to
the same bytes: the request, the identity answers, stdout, exit status and stderr."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import whereabouts.cni.main as cni_main
from support import PLUGIN, CNIResult, LocalDatastore, build_relay, netconf, running_daemon, stop_process

CALL = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x", "CNI_PATH": "/x"}
VERSION_CALL = {**CALL, "CNI_COMMAND": "VERSION"}  # served in process without a store: the same for every run


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "WHEREABOUTS_", "NODENAME"))}


def call(
    executable: str, sock: str, env: dict[str, str], stdin: bytes = b"{}", argv: tuple[str, ...] = ()
) -> CNIResult:
    environ = {**base_env(), "WHEREABOUTS_SOCKET": sock, **env}
    proc = subprocess.run([executable, *argv], input=stdin, capture_output=True, env=environ, timeout=60)
    return CNIResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def same(result: CNIResult, other: CNIResult) -> bool:
    return (result.returncode, result.stdout, result.stderr) == (other.returncode, other.stdout, other.stderr)


def tally(directory: Path) -> bytes:
    """The fallback bytes written beside the socket (and clear them for the next call)."""
    path = directory / "fallbacks"
    if not path.exists():
        return b""
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path holds 107 bytes at most."""
    directory = Path(tempfile.mkdtemp(prefix="relay-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# ---- a scripted daemon ----

Script = Callable[[socket.socket, bytes, bytes], None]


def exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError("caller hung up")
        data += chunk
    return data


def sized(conn: socket.socket) -> bytes:
    return exact(conn, int.from_bytes(exact(conn, 4), "big"))


class Scripted:
    """A listener on `path` that reads each request whole and answers with `script(conn, env, stdin)`; keeps
    the requests it read."""

    def __init__(self, path: str, script: Script) -> None:
        self.path, self.script = path, script
        self.requests: list[tuple[bytes, bytes]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(30)
            env, stdin = sized(conn), sized(conn)
            self.requests.append((env, stdin))
            self.script(conn, env, stdin)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()
        os.unlink(self.path)


@contextlib.contextmanager
def scripted(path: Path, script: Script) -> Iterator[Scripted]:
    server = Scripted(str(path), script)
    try:
        yield server
    finally:
        server.close()


def answers(status: int, stdout: bytes) -> Script:
    return lambda conn, env, stdin: conn.sendall(b"W" + status.to_bytes(4, "big") + stdout)


def sends(data: bytes) -> Script:
    return lambda conn, env, stdin: conn.sendall(data)


# ---- through a real daemon ----


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    sock = str(tmp_path / "run" / "plugin.sock")
    with running_daemon(sock, log=tmp_path / "daemon.log") as proc:
        yield proc, sock


def test_a_call_is_served_by_the_daemon_as_through_the_python_relay(
    compiled_relay: str, daemon: tuple, tmp_path: Path
) -> None:
    _, sock = daemon
    conf = json.dumps(netconf(tmp_path, range="10.94.0.0/29", gateway="10.94.0.1")).encode()
    via = call(compiled_relay, sock, {**CALL, "CNI_CONTAINERID": "r1"}, conf)
    assert (via.returncode, via.stderr) == (0, ""), via.stderr
    assert via.json == {"cniVersion": "1.0.0", "ips": [{"address": "10.94.0.2/29", "gateway": "10.94.0.1"}]}
    python = call(PLUGIN, sock, {**CALL, "CNI_CONTAINERID": "r2"}, conf)
    assert python.addresses() == ["10.94.0.3/29"]  # one store, whichever relay handed the call over
    log = (tmp_path / "daemon.log").read_text()
    assert log.count(" exit 0 ") == 2 and " r1/eth0 " in log  # the daemon served both
    assert call(compiled_relay, sock, {**CALL, "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "r1"}, conf).returncode == 0
    assert LocalDatastore().held(tmp_path) == [("10.94.0.3", "r2", "eth0")]
    assert tally(tmp_path / "run") == b""


def test_a_cni_error_passes_through_unchanged(compiled_relay: str, daemon: tuple) -> None:
    _, sock = daemon
    compiled, python = call(compiled_relay, sock, CALL, b"{nope"), call(PLUGIN, sock, CALL, b"{nope")
    assert compiled.returncode == 1 and compiled.json["code"] == 6
    assert same(compiled, python)


def test_a_request_the_daemon_declines_for_its_size_is_served_in_process(
    compiled_relay: str, daemon: tuple, tmp_path: Path
) -> None:
    _, sock = daemon
    conf = netconf(tmp_path, range="10.94.1.0/24", gateway="10.94.1.1", padding="x" * (9 << 20))
    served = call(compiled_relay, sock, CALL, json.dumps(conf).encode())
    assert served.addresses() == ["10.94.1.2/24"], served.stdout + served.stderr
    assert served.stderr.startswith("whereabouts: serving the call in process: node daemon declined: ")
    assert "over the daemon's limit" in served.stderr
    assert tally(tmp_path / "run") == b""  # the daemon's choice: it counts its declines itself


def test_no_daemon_means_in_process_and_silent(compiled_relay: str, tmp_path: Path) -> None:
    conf = json.dumps(netconf(tmp_path, range="10.94.2.0/24", gateway="10.94.2.1")).encode()
    missing = tmp_path / "not-installed" / "plugin.sock"
    served = call(compiled_relay, str(missing), CALL, conf)
    assert (served.returncode, served.stderr) == (0, "") and served.addresses() == ["10.94.2.2/24"]
    assert not missing.parent.exists()  # no daemon was ever installed: nothing counted, nothing made
    (tmp_path / "run").mkdir()
    served = call(compiled_relay, str(tmp_path / "run" / "plugin.sock"), {**CALL, "CNI_CONTAINERID": "c2"}, conf)
    assert (served.returncode, served.stderr) == (0, "")
    assert tally(tmp_path / "run") == b"n"  # installed, not running
    assert call(compiled_relay, "", {**CALL, "CNI_CONTAINERID": "c3"}, conf).returncode == 0  # "": no daemon
    assert tally(tmp_path / "run") == b""


def test_a_stale_socket_means_in_process(compiled_relay: str, short_dir: Path) -> None:
    sock = short_dir / "plugin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(sock))  # the file stays, nobody listens: a daemon killed with SIGKILL
    compiled = call(compiled_relay, str(sock), VERSION_CALL)
    assert tally(short_dir) == b"u"
    python = call(PLUGIN, str(sock), VERSION_CALL)
    assert compiled.returncode == 0 and "supportedVersions" in compiled.stdout
    assert compiled.stderr == f"whereabouts: serving the call in process: node daemon on {sock}: Connection refused\n"
    assert same(compiled, python)


def test_a_daemon_gone_mid_call_means_in_process(compiled_relay: str, short_dir: Path) -> None:
    sock = short_dir / "d.sock"
    with scripted(sock, lambda conn, env, stdin: None):  # reads the request, hangs up
        compiled = call(compiled_relay, str(sock), VERSION_CALL)
        assert tally(short_dir) == b"d"
        python = call(PLUGIN, str(sock), VERSION_CALL)
    reason = f"node daemon on {sock} went away: the connection ended before the answer"
    assert compiled.stderr == f"whereabouts: serving the call in process: {reason}\n"
    assert same(compiled, python)


def test_a_daemon_killed_mid_burst_loses_no_call(compiled_relay: str, daemon: tuple, tmp_path: Path) -> None:
    proc, sock = daemon
    conf = json.dumps(netconf(tmp_path, range="10.94.3.0/24", gateway="10.94.3.1")).encode()

    def add(n: int) -> CNIResult:
        if n == 8:
            proc.kill()  # SIGKILL: calls in its hands see it go, later ones find a stale socket
        return call(compiled_relay, sock, {**CALL, "CNI_CONTAINERID": f"k{n}"}, conf)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(add, range(24)))
    assert all(r.returncode == 0 for r in results), [r.stdout + r.stderr for r in results if r.returncode][:2]
    assert len({r.addresses()[0] for r in results}) == 24
    assert set(tally(tmp_path / "run")) <= set(b"du") and proc.wait() != 0


# ---- busy: the short-wait build ----


@pytest.fixture(scope="module")
def quick_relay(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The relay built to wait 1 s for the daemon to take a call and for each read of its answer."""
    return build_relay(tmp_path_factory.mktemp("quick-relay"), "-DCONNECT_WAIT=1", "-DANSWER_WAIT=1")


STDINS = [
    b'{"cniVersion": "0.4.0", "name": "n"}',
    b'{"name":"n","cniVersion":"1.0.0"}',
    b'{"name": "n"}',
    b'{"cniVersion": "latest"}',
    b'{"cniVersion": ""}',
    b'{"cniVersion": "1.0.0.0.0.0.0.0.0"}',
    b'{"cniVersion": 1, "name": "0.3.1"}',
    b'"cniVersion"',
    b"",
]


def test_a_daemon_that_takes_no_call_is_waited_for_then_answered_with_code_11(quick_relay: str, tmp_path: Path) -> None:
    """Its backlog full: the call waits, then try again later, in the request's own version; never served
    anywhere meanwhile (the daemon may still serve it)."""
    directory = Path(tempfile.mkdtemp(prefix='re"l\\ay\x01-', dir="/tmp"))  # a message with what JSON escapes
    path = str(directory / "busy.sock")
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
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(STDINS)) as pool:
            results = list(pool.map(lambda stdin: call(quick_relay, path, CALL, stdin), STDINS))
        assert time.monotonic() - started >= 0.9  # they waited
        for stdin, result in zip(STDINS, results, strict=True):
            expected = cni_main._busy(stdin, path, "took no call for 1 s")
            assert (result.returncode, result.stdout.encode()) == expected, stdin
            assert result.stderr == ""
        assert json.loads(results[0].stdout)["cniVersion"] == "0.4.0"
        assert tally(directory) == b"b" * len(STDINS)
    finally:
        for waiting in [*queued, listener]:
            waiting.close()
        shutil.rmtree(directory)


def test_a_daemon_that_does_not_answer_is_answered_with_code_11(quick_relay: str, short_dir: Path) -> None:
    sock = short_dir / "mute.sock"
    stdin = b'{"cniVersion": "0.3.1", "name": "n"}'
    with scripted(sock, lambda conn, env, stdin: time.sleep(3)):
        result = call(quick_relay, str(sock), CALL, stdin)
    assert (result.returncode, result.stdout.encode()) == cni_main._busy(stdin, str(sock), "did not answer within 1 s")
    assert tally(short_dir) == b"b"


# ---- byte for byte against a scripted daemon ----


def test_the_request_carries_the_same_environment_bytes(compiled_relay: str, short_dir: Path) -> None:
    sock = short_dir / "d.sock"
    env = {b"CNI_COMMAND": b"ADD", b"CNI_ARGS": b"K8S_POD_NAME=p;X=\xff\xfe", b"NODENAME": b"node-1",
           b"NODENAMES": b"prefix too", b"WHEREABOUTS_FLAT_FILE": b"/etc/x", b"WHEREABOUTS_SOCKET": str(sock).encode(),
           b"cni_lower": b"no", b"CNIX": b"no", b"PATH": os.environb[b"PATH"], b"X_CNI_": b"no", b"EMPTY_CNI_": b"",
           b"CNI_EMPTY": b""}  # fmt: skip
    stdin = bytes(range(256)) * 3
    with scripted(sock, answers(0, b"{}")) as server:
        for executable in (compiled_relay, PLUGIN):
            done = subprocess.run([executable], input=stdin, capture_output=True, env=env, timeout=30)
            assert (done.returncode, done.stdout, done.stderr) == (0, b"{}", b"")
    (compiled_env, compiled_stdin), (python_env, python_stdin) = server.requests
    assert compiled_env == python_env and compiled_stdin == python_stdin == stdin
    assert compiled_env.split(b"\0") == [
        b"CNI_COMMAND=ADD", b"CNI_ARGS=K8S_POD_NAME=p;X=\xff\xfe", b"NODENAME=node-1", b"NODENAMES=prefix too",
        b"WHEREABOUTS_FLAT_FILE=/etc/x", b"WHEREABOUTS_SOCKET=" + str(sock).encode(), b"CNI_EMPTY=",
    ]  # fmt: skip


def test_a_large_environment_is_forwarded_whole(compiled_relay: str, short_dir: Path) -> None:
    sock = short_dir / "d.sock"
    env = {**base_env(), **CALL, "WHEREABOUTS_SOCKET": str(sock), "CNI_ARGS": "K=" + "x" * 100_000}
    env |= {f"WHEREABOUTS_V{n}": f"{n}" * 20 for n in range(3000)}
    with scripted(sock, answers(0, b"{}")) as server:
        for executable in (compiled_relay, PLUGIN):
            done = subprocess.run([executable], input=b"{}", capture_output=True, env=env, timeout=30)
            assert (done.returncode, done.stdout, done.stderr) == (0, b"{}", b"")
    assert server.requests[0] == server.requests[1]
    assert len(server.requests[0][0].split(b"\0")) == len(CALL) + 2 + 3000


def test_a_call_stopped_and_continued_while_waiting_still_gets_its_answer(compiled_relay: str, short_dir: Path):
    """SIGSTOP then SIGCONT interrupts a read that has a timeout (EINTR even without a handler): it is resumed."""
    sock = short_dir / "d.sock"

    def slow(conn: socket.socket, env: bytes, stdin: bytes) -> None:
        time.sleep(1.5)
        conn.sendall(b"W" + (0).to_bytes(4, "big") + b"{}")

    env = {**base_env(), **CALL, "WHEREABOUTS_SOCKET": str(sock)}
    (short_dir / "stdin").write_bytes(b"{}")
    with scripted(sock, slow):
        for executable in (compiled_relay, PLUGIN):
            with open(short_dir / "stdin", "rb") as stdin:
                proc = subprocess.Popen(
                    [executable], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
                )
            time.sleep(0.7)  # in its read of the answer by now
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(0.1)
            os.kill(proc.pid, signal.SIGCONT)
            out, err = proc.communicate(timeout=30)
            assert (proc.returncode, out, err) == (0, b"{}", b""), executable


RAW_EXEC = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
args = [a.encode() for a in sys.argv[1:2]]
env = [e.encode("utf-8", "surrogateescape") for e in sys.argv[2:]]
argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
libc.execve(args[0], argv, envp)
sys.exit(f"execve: {ctypes.get_errno()}")
"""


def test_a_variable_set_twice_is_forwarded_once_with_its_first_value(compiled_relay: str, short_dir: Path) -> None:
    """As Python's os.environ reads an environment with a name twice (and getenv does): its first entry."""
    sock = short_dir / "d.sock"
    env = ["CNI_COMMAND=ADD", "CNI_IFNAME=first", f"WHEREABOUTS_SOCKET={sock}", "CNI_IFNAME=second", "NO_EQUALS",
           "WHEREABOUTS_SOCKET=/elsewhere", "NODENAME=n"]  # fmt: skip
    with scripted(sock, answers(0, b"{}")) as server:
        for executable in (compiled_relay, PLUGIN):
            done = subprocess.run([sys.executable, "-c", RAW_EXEC, executable, *env], input=b"{}", capture_output=True)
            assert (done.returncode, done.stdout, done.stderr) == (0, b"{}", b"")
    assert server.requests[0] == server.requests[1]
    assert server.requests[0][0] == f"CNI_COMMAND=ADD\0CNI_IFNAME=first\0WHEREABOUTS_SOCKET={sock}\0NODENAME=n".encode()


IDENTITY_PATHS = ["{d}", "{d}/new/dir", "{d}/file/x", "", "relative/missing", "//{d}//a//b", "{d}/", "{d}/missing/",
                  "/", "{d}/file", "{d}/x\0y", "{d}/\xff\xfe/z", "{d}/.."]  # fmt: skip


def test_identity_questions_get_the_same_answers(compiled_relay: str, short_dir: Path) -> None:
    """The daemon serves a local-store call only when the caller's "device:inode" of the data directory (or
    of its deepest existing ancestor, plus the rest) is its own: both relays answer as path_identity does."""
    (short_dir / "file").write_text("")
    asked = [p.format(d=short_dir).encode("latin-1") for p in IDENTITY_PATHS]
    told: list[list[bytes]] = []

    def ask(conn: socket.socket, env: bytes, stdin: bytes) -> None:
        got = []
        for path in asked:
            conn.sendall(b"S" + len(path).to_bytes(4, "big") + path)
            assert exact(conn, 1) == b"s"
            got.append(sized(conn))
        told.append(got)
        conn.sendall(b"W" + (0).to_bytes(4, "big") + b"{}")

    sock = short_dir / "d.sock"
    with scripted(sock, ask):
        for executable in (compiled_relay, PLUGIN):
            assert same(call(executable, str(sock), CALL), CNIResult(0, "{}", ""))
    compiled, python = told
    assert compiled == python
    expected = [os.fsencode(cni_main.path_identity(os.fsdecode(path))) for path in asked]
    assert compiled == expected
    info = short_dir.stat()
    assert compiled[1] == f"{info.st_dev}:{info.st_ino}/new/dir".encode() and compiled[3] == b""


FRAMES = {
    "garbage": b"X",
    "nul": b"\0rest",
    "quote": b"'",
    "backslash": b"\\",
    "newline": b"\n",
    "high": b"\xff",
    "answer-out-of-turn": b"s\0\0\0\0",
    "truncated-status": b"W\0\0",
    "truncated-question": b"S\0\0\0\x09/tm",
    "decline": b"R local_data_dir /x is not the same directory",
    "decline-invalid-utf8": b"R bad \xff\xfe bytes \xe2\x82",
    "empty": b"",
}


@pytest.mark.parametrize("frames", FRAMES.values(), ids=FRAMES.keys())
def test_a_daemon_out_of_turn_is_left_for_the_call_served_in_process(
    compiled_relay: str, short_dir: Path, frames: bytes
) -> None:
    sock = short_dir / "d.sock"
    with scripted(sock, sends(frames)):
        compiled = call(compiled_relay, str(sock), VERSION_CALL)
        counted = tally(short_dir)
        python = call(PLUGIN, str(sock), VERSION_CALL)
    assert compiled.returncode == 0 and "supportedVersions" in compiled.stdout
    assert compiled.stderr.startswith("whereabouts: serving the call in process: node daemon ")
    assert same(compiled, python)
    # gone mid-call, or answering out of turn: counted (by each relay alike); a decline the daemon counts itself
    assert counted == (b"" if frames[:1] == b"R" else b"d")
    assert tally(short_dir) == counted  # the Python relay's, the first cleared above


@pytest.mark.parametrize(
    ("status", "stdout", "code"),
    [(0, b"{}", 0), (7, bytes(range(256)) * 400, 7), (256, b"x", 0), (1 << 31, b"y", 1)],
    ids=["ok", "binary-stdout", "status-256", "status-over-int"],
)
def test_the_answer_is_relayed_exactly(compiled_relay: str, short_dir: Path, status: int, stdout: bytes, code: int):
    sock = short_dir / "d.sock"
    with scripted(sock, answers(status, stdout)):
        runs = [subprocess.run([executable], input=b"{}", capture_output=True, timeout=30,
                               env={**base_env(), **CALL, "WHEREABOUTS_SOCKET": str(sock)})
                for executable in (compiled_relay, PLUGIN)]  # fmt: skip
    assert [(r.returncode, r.stdout) for r in runs] == [(code, stdout)] * 2


def test_a_person_running_it_gets_the_help_without_it_reading_stdin(compiled_relay: str) -> None:
    reader, writer = os.pipe()  # stdin never ends: reading it would hang
    try:
        runs = [subprocess.run([executable], stdin=reader, capture_output=True, env=base_env(), timeout=20)
                for executable in (compiled_relay, PLUGIN)]  # fmt: skip
    finally:
        os.close(reader), os.close(writer)
    assert runs[0].returncode == 0 and b"cluster-wide IPAM plugin" in runs[0].stdout
    assert (runs[0].returncode, runs[0].stdout, runs[0].stderr) == (runs[1].returncode, runs[1].stdout, runs[1].stderr)


# ---- what the Python plugin gets when the relay hands a call back ----

PROBE = """#!{python}
import hashlib, json, os, sys
data = sys.stdin.buffer.read()
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
with open({out!r}, "w") as out:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ), "sha": hashlib.sha256(data).hexdigest(),
               "size": len(data), "fds": fds}}, out)
"""


def probe(directory: Path, relay: str) -> tuple[str, Path]:
    """The relay with a probe as its Python plugin: what it is handed, written to a file."""
    directory.mkdir()
    shutil.copy(relay, directory / "whereabouts")
    out = directory / "seen.json"
    (directory / "whereabouts-python").write_text(PROBE.format(python=sys.executable, out=str(out)))
    (directory / "whereabouts-python").chmod(0o755)
    return str(directory / "whereabouts"), out


@pytest.mark.parametrize("build", [(), ("-DWITHOUT_MEMFD",)], ids=["memfd", "pipe"])
def test_the_plugin_gets_the_call_as_the_relay_got_it(tmp_path: Path, short_dir: Path, build: tuple[str, ...]) -> None:
    relay, seen = probe(tmp_path / "probe", build_relay(tmp_path / "relay", *build))
    baseline = subprocess.run([str(Path(relay).with_name("whereabouts-python"))], input=b"", check=True)
    assert baseline.returncode == 0
    open_fds = json.loads(seen.read_text())["fds"]  # what the probe itself opens: none are the relay's
    sock = short_dir / "d.sock"
    for stdin in (b'{"cniVersion": "1.0.0"}', os.urandom(10 << 20)):  # small; larger than any pipe buffer
        with scripted(sock, sends(b"R too large")):
            done = call(relay, str(sock), {**CALL, "NODENAME": "n1"}, stdin, argv=("--flag", "x y"))
        assert done.returncode == 0, done.stderr
        got = json.loads(seen.read_text())
        assert (got["size"], got["sha"]) == (len(stdin), hashlib.sha256(stdin).hexdigest())
        assert got["argv"] == ["--flag", "x y"] and got["fds"] == open_fds
        assert got["env"]["WHEREABOUTS_SOCKET"] == ""  # it must not try the daemon again
        assert got["env"]["WHEREABOUTS_RELAY_REASON"] == "node daemon declined:  too large"
        assert {k: got["env"][k] for k in CALL} == CALL and got["env"]["NODENAME"] == "n1"
        assert got["env"]["PATH"] == os.environ["PATH"]
    done = call(relay, "", CALL, b"{}")  # no daemon wanted: the plugin reads stdin itself
    assert json.loads(seen.read_text())["env"]["WHEREABOUTS_SOCKET"] == ""
    assert "WHEREABOUTS_RELAY_REASON" not in json.loads(seen.read_text())["env"]


def test_a_missing_python_plugin_is_a_cni_error(tmp_path: Path, short_dir: Path, compiled_relay: str) -> None:
    (tmp_path / "alone").mkdir()
    relay = shutil.copy(compiled_relay, tmp_path / "alone" / "whereabouts")
    done = call(str(relay), str(short_dir / "absent.sock"), CALL, b'{"cniVersion": "0.4.0"}')
    assert done.returncode == 1 and done.json["code"] == 999 and done.json["cniVersion"] == "0.4.0"
    assert "whereabouts-python: No such file or directory" in done.json["msg"]


@pytest.mark.netns  # root: a mount namespace of the daemon's own
def test_a_daemon_that_sees_another_data_directory_declines(compiled_relay: str, tmp_path: Path) -> None:
    """The identity exchange through the compiled relay: the daemon, in a mount namespace where the data
    directory's path shows another directory, hands every local-store call back."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace")
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    sock = str(tmp_path / "run" / "plugin.sock")
    bind = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"', "bind", str(other), str(data))  # fmt: skip
    conf = json.dumps(netconf(data, range="10.94.4.0/24", gateway="10.94.4.1")).encode()
    with running_daemon(sock, wrap=bind) as proc:
        results = [call(compiled_relay, sock, {**CALL, "CNI_CONTAINERID": f"v{n}"}, conf) for n in range(5)]
        stop_process(proc, 10)
    assert [r.addresses() for r in results] == [[f"10.94.4.{n}/24"] for n in range(2, 7)]
    assert all("not the same directory for the daemon and the caller" in r.stderr for r in results)
    assert not (other / "whereabouts.db").exists() and len(LocalDatastore().held(data)) == 5
    assert tally(tmp_path / "run") == b""


def test_a_call_stopped_and_continued_while_connecting_still_reaches_the_daemon(
    compiled_relay: str, short_dir: Path
) -> None:
    """SIGSTOP then SIGCONT while the connect waits for room in a busy daemon's backlog interrupts it (EINTR:
    it has a timeout): it is made again, never taken for a daemon gone (the call served in process)."""
    path = str(short_dir / "busy.sock")
    env = {**base_env(), **CALL, "WHEREABOUTS_SOCKET": path}
    (short_dir / "stdin").write_bytes(b"{}")
    for executable in (compiled_relay, PLUGIN):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(0)
        queued = []
        for _ in range(4):  # fill the backlog: nobody accepts them yet
            waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            waiting.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                waiting.connect(path)
            queued.append(waiting)
        with open(short_dir / "stdin", "rb") as stdin:
            proc = subprocess.Popen([executable], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep(0.7)  # in its connect by now
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.1)
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.3)
        for waiting in queued:  # the daemon takes its calls again: those ahead of it hung up
            waiting.close()
        listener.settimeout(10)
        while proc.poll() is None:
            with contextlib.suppress(TimeoutError):
                conn, _ = listener.accept()
                with conn, contextlib.suppress(ConnectionError, OSError):
                    conn.settimeout(10)
                    sized(conn), sized(conn)
                    conn.sendall(b"W" + (0).to_bytes(4, "big") + b"{}")
        out, err = proc.communicate(timeout=30)
        listener.close()
        os.unlink(path)
        assert (proc.returncode, out, err) == (0, b"{}", b""), executable
    assert tally(short_dir) == b""


STRANGER = """
import os, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
os.setgid(65534)
os.setuid(65534)  # the credentials the caller sees are those of the process when it listened
listener.listen(8)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5)
        try:
            conn.sendall(b"W" + (0).to_bytes(4, "big") + b'{"answered": "by a stranger"}')
            while conn.recv(65536):
                pass
        except OSError:
            pass
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the listener drops to another user")
def test_a_socket_served_by_another_user_is_not_trusted(compiled_relay: str, short_dir: Path) -> None:
    """A user who can make the socket's path (neither root nor the caller's user) must not answer the calls:
    the call is served in process, counted as nobody listening."""
    sock = short_dir / "plugin.sock"
    stranger = subprocess.Popen([sys.executable, "-c", STRANGER, str(sock)], stdout=subprocess.PIPE)
    try:
        assert stranger.stdout is not None and stranger.stdout.readline() == b"ready\n"
        compiled = call(compiled_relay, str(sock), VERSION_CALL)
        assert tally(short_dir) == b"u"
        python = call(PLUGIN, str(sock), VERSION_CALL)
        assert tally(short_dir) == b"u"
    finally:
        stop_process(stranger, 5)
        assert stranger.stdout is not None
        stranger.stdout.close()
    assert compiled.returncode == 0 and "supportedVersions" in compiled.stdout
    why = f"node daemon on {sock}: it is served by uid 65534, neither root nor this process's user: not trusted"
    assert compiled.stderr == f"whereabouts: serving the call in process: {why}\n"
    assert same(compiled, python)
