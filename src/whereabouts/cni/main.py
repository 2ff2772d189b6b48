"""`whereabouts`: the CNI IPAM executable.

The container runtime starts it once per call, so start-up is most of its cost. When the node daemon
(`whereabouts-node`) listens on its socket, the call is handed over whole (environment and stdin) and this
process only relays the answer: it imports nothing beyond the interpreter's own. A busy daemon makes the call
wait (it is never served elsewhere meanwhile); the call is served here, in process, only when nobody listens,
when the daemon dies before answering, or when the daemon says so (it cannot prove it sees this process's
local store or the files the config names, or the request is too large for it). Either way the result is the
same.

On the nodes install-cni puts the compiled relay (whereabouts/node/relay.c) in this module's place: it does
the same without starting Python, and execs this module (installed as `whereabouts-python` beside it) with
WHEREABOUTS_SOCKET empty and its reason in WHEREABOUTS_RELAY_REASON whenever the call is served in process.

Wire format (see whereabouts.node.daemon): request = 4-byte length + "K=V\\0..." environment + 4-byte length + stdin.
The daemon then answers with frames: b"S" + 4-byte length + path asks "what is this path to you?" (answered
with b"s" + 4-byte length + "device:inode", empty when missing); b"R" + reason means "serve it yourself";
b"W" + 4-byte exit status + stdout up to the end is the answer. The caller keeps its end open until then:
one that ended (EOF) is taken for a caller gone (killed, or given up), whose ADD the daemon does not commit.

Fallbacks (what the daemon cannot count itself: it was not there, or not able to serve). When a call cannot
be served by the daemon for one of these reasons, this process appends exactly one ASCII byte to the file
`fallbacks` in the socket's directory; the daemon counts the bytes in its metric
`whereabouts_node_fallbacks_total{reason}` (see whereabouts.node.metrics, which consumes the file):

    n   the directory exists, the socket does not (the daemon stopped, or is restarting): served in process
    u   nobody listens on the socket (connection refused: a stale socket; or any other failure to connect), or
        the process listening runs neither as root nor as this process's user (SO_PEERCRED): served in process
    d   the daemon went away mid-call (the connection ended or failed before the answer, or the daemon
        answered out of turn): served in process
    b   busy: the daemon took no call within CONNECT_WAIT, or did not answer within ANSWER_WAIT; the call is
        answered code 11 (try again later) without being served

The file is opened with O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC|O_NOFOLLOW and mode 0600, so it is created only
in a directory that exists (never the directory itself), and every error (no directory, no permission, a
full disk) is ignored: counting never fails a call. No byte is written when no daemon is configured (an empty
WHEREABOUTS_SOCKET) or when the daemon declines a call (b"R"): the daemon counts its declines itself. The
compiled relay writes the same bytes.

The stand-in (WHEREABOUTS_STANDIN, set by install-cni: seconds of idleness after which it exits; unset, empty
or 0: none). When nobody listens on the socket (`n`, or `u` for a failed connect) the call is handed to the
stand-in daemon on STANDIN_SUFFIX beside it (`<socket>.standin`) the same way, with no byte written for that
second try: the byte already written says the node's daemon did not serve the call. A stand-in that is busy
makes the call try again later (code 11), one that declines or goes away mid-call leaves it to this process.
When nobody listens there either, this process starts one (`start_standin`, at most one per socket: it holds
the lock on `<socket>.standin.pid`, which holds its pid) and serves the call itself meanwhile; the compiled
relay asks it to by naming the stand-in's socket in WHEREABOUTS_RELAY_STANDIN. The stand-in is the node daemon
(whereabouts.node.daemon, `--stand-in-for`): it serves until it has had no call for that many seconds, or
until the node's daemon listens again, and then exits. While the node's daemon is stopped or restarting (a
rolling update, a crash) a burst of calls is thus served with a warm process and open connections instead of
an interpreter, its imports and a TLS handshake per call.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    import _socket
    from collections.abc import Callable
    from types import ModuleType

SOCKET_ENV = "WHEREABOUTS_SOCKET"  # empty: never use a daemon
RELAY_REASON_ENV = "WHEREABOUTS_RELAY_REASON"  # why the compiled relay (node/relay.c) hands the call back
DEFAULT_SOCKET = "/run/whereabouts/plugin.sock"
FORWARDED_ENV = ("CNI_", "NODENAME", "WHEREABOUTS_")
FALLBACKS = "fallbacks"  # beside the socket: one byte per call the daemon could not serve (above)
STANDIN_ENV = "WHEREABOUTS_STANDIN"  # seconds a stand-in daemon stays without a call; unset, empty or 0: none
STANDIN_START_ENV = "WHEREABOUTS_RELAY_STANDIN"  # the compiled relay: no stand-in listens on this socket
STANDIN_SUFFIX = ".standin"  # the stand-in's socket: the node daemon's socket's path with this added
STANDIN_START_EVERY = 2.0  # seconds: a stand-in is started at most this often per socket (one failing to start)
SUN_PATH = 108  # bytes of a unix socket's path, its NUL included
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW  # never through a link
CONNECT_WAIT = 30  # seconds a call waits for a busy daemon to take it
ANSWER_WAIT = 60  # seconds for each read of its answer (the daemon's own deadline per call is 45 s)


def main() -> int:
    if "CNI_COMMAND" not in os.environ:
        from whereabouts.cni.call import HELP

        sys.stdout.write(HELP)
        return 0
    stdin = sys.stdin.buffer.read()
    path = os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)
    # the compiled relay's word that nobody listens on `<socket>.standin` either (it empties WHEREABOUTS_SOCKET,
    # and drops this variable from the caller's environment before anything else)
    asked = os.environ.pop(STANDIN_START_ENV, "")
    standin = asked if not path and asked.endswith(STANDIN_SUFFIX) else ""
    answer = relay(path, os.environ, stdin) if path else _relayed_reason()
    if path and not isinstance(answer, tuple) and _absent and standin_wanted(os.environ):
        standin = path + STANDIN_SUFFIX
        if len(os.fsencode(standin)) >= SUN_PATH:
            standin = ""  # nobody can listen there
        else:
            tried = relay(standin, os.environ, stdin, tally=False)
            if isinstance(tried, tuple) or not _absent:
                answer, standin = tried, ""
    if standin and standin_wanted(os.environ):
        start_standin(standin, os.environ)
    if not isinstance(answer, tuple):
        if answer:
            sys.stderr.write(f"whereabouts: serving the call in process: {answer}\n")
        from whereabouts.cni.call import handle

        status, text = handle(os.environ, stdin)
        answer = status, text.encode()
    sys.stdout.buffer.write(answer[1])
    sys.stdout.flush()
    # Nothing is left to clean up: skip the interpreter's teardown (a tenth of a call's time). Stores
    # commit before answering, and SQLite's journal survives a process that simply ends.
    os._exit(answer[0])


_absent = False  # the last `relay` found nobody listening (a `n` or a `u` for its connect)


def relay(
    path: str, environ: os._Environ[str] | dict[str, str], stdin: bytes, *, tally: bool = True
) -> tuple[int, bytes] | str:
    """Hand the call to the node daemon: its (exit status, stdout), or why this process must serve the call
    ("" when no daemon is installed at all). `tally`: write the byte of a fallback (see the module)."""
    import _socket  # the C module: `socket` itself costs more than the relay saves
    import _struct

    global _absent
    _absent = False
    note = note_fallback if tally else _no_note
    text = "\0".join(f"{k}={v}" for k, v in environ.items() if k.startswith(FORWARDED_ENV))
    env = text.encode(errors="surrogateescape")  # the bytes the runtime set, as the compiled relay sends them
    request = len(env).to_bytes(4, "big") + env + len(stdin).to_bytes(4, "big") + stdin
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    # A blocking socket whose calls give up after a while: `settimeout` would make connect non-blocking, and a
    # daemon whose backlog is full would then turn callers away (EAGAIN) instead of making them wait.
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, _struct.pack("ll", CONNECT_WAIT, 0))
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, _struct.pack("ll", ANSWER_WAIT, 0))
    try:
        try:
            _connect(sock, path)
        except FileNotFoundError:
            note(path, b"n")  # nothing written when the directory is not there either: no daemon at all
            _absent = True
            return ""
        except BlockingIOError:
            note(path, b"b")
            return _busy(stdin, path, f"took no call for {CONNECT_WAIT} s")
        except OSError as exc:
            note(path, b"u")
            _absent = exc.errno is not None  # (None: a path too long for AF_UNIX, where nobody can listen)
            return f"node daemon on {path}: {exc.strerror or exc}"  # a stale socket: nobody listens
        stranger = _stranger(sock, _struct)
        if stranger:
            note(path, b"u")
            return f"node daemon on {path}: {stranger}"
        try:
            try:  # noqa: SIM105 (contextlib would cost every call its import)
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon stopped reading (a request too large for it): its reason waits to be read
            return _answer(sock, path, note)
        except BlockingIOError:
            note(path, b"b")
            return _busy(stdin, path, f"did not answer within {ANSWER_WAIT} s")
        except OSError as exc:
            note(path, b"d")
            return f"node daemon on {path} went away: {exc.strerror or exc}"
    finally:
        sock.close()


def _connect(sock: _socket.socket, path: str) -> None:
    """Connect, again when a signal interrupted it (SIGSTOP then SIGCONT: with a send timeout set, the kernel
    does not resume it). CPython takes an interrupted connect for one still under way and reports it done;
    on a unix socket it is not (the socket is left unconnected): that is checked, and the connect made again,
    as the compiled relay does."""
    while True:
        try:
            sock.connect(path)
        except InterruptedError:
            continue
        try:
            sock.getpeername()
            return
        except OSError as exc:
            import errno  # (only a connect a signal interrupted gets here)

            if exc.errno != errno.ENOTCONN:
                raise


def _stranger(sock: _socket.socket, struct: ModuleType) -> str:
    """Why the process listening on the socket is not to be trusted with the call ("" when it is): it must run
    as root or as this process's user (a user who could make the socket's path would answer the calls)."""
    import _socket

    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))
    except OSError as exc:
        return f"cannot tell who listens: {exc.strerror or exc}"
    if uid in (0, os.geteuid()):
        return ""
    return f"it is served by uid {uid}, neither root nor this process's user: not trusted"


def _answer(sock: _socket.socket, path: str, note: Callable[[str, bytes], None]) -> tuple[int, bytes] | str:
    buffered = bytearray()

    def take(size: int) -> bytes:
        while len(buffered) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(0, "the connection ended before the answer")
            buffered.extend(chunk)
        taken = bytes(buffered[:size])
        del buffered[:size]
        return taken

    while True:
        kind = take(1)
        if kind == b"S":
            asked = os.fsdecode(take(int.from_bytes(take(4), "big")))
            sock.sendall(_identity(asked))
        elif kind == b"R":
            return "node daemon declined: " + _rest(sock, buffered).decode(errors="replace")
        elif kind == b"W":
            status = int.from_bytes(take(4), "big")
            return status, _rest(sock, buffered)
        else:
            note(path, b"d")
            return f"node daemon on {path} answered {kind!r}: not a whereabouts daemon"


def note_fallback(path: str, reason: bytes) -> None:
    """Append `reason` (one byte, see the module's docstring) to FALLBACKS beside the socket `path`."""
    head, sep, _ = path.rpartition("/")
    try:
        fd = os.open(f"{head or sep or '.'}/{FALLBACKS}", _APPEND, 0o600)
        try:
            os.write(fd, reason)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return  # counting never fails a call


def _no_note(path: str, reason: bytes) -> None:
    """The stand-in's fallbacks are not counted: the node daemon's byte for the call is already written."""


def standin_wanted(environ: os._Environ[str] | dict[str, str]) -> bool:
    """Whether a stand-in daemon is wanted: WHEREABOUTS_STANDIN names a positive number of seconds."""
    value = environ.get(STANDIN_ENV, "")
    return value.isascii() and value.isdigit() and value.strip("0") != ""


def start_standin(standin: str, environ: os._Environ[str] | dict[str, str]) -> None:
    """Start the stand-in daemon on socket `standin` unless one runs or is starting (it holds the lock on
    `standin`.pid, 0600, never followed through a link, made only in a directory that exists). It runs detached
    (a session of its own, /dev/null for stdin and stdout, stderr to `standin`.log, emptied at each start), the
    interpreter of this process with its import path, in `/` (it pins no directory of the caller's) with no signal
    blocked; the lock's descriptor is its to keep. Every failure is ignored: the call is served here either way."""
    import fcntl
    import time

    if not _host_namespaces():
        return
    standin = os.path.abspath(standin)  # (it runs in /)
    opened = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # (a FIFO there never blocks the call)
    fd = log = -1
    try:
        fd = _above_stdio(os.open(standin + ".pid", os.O_RDWR | opened, 0o600))
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a stand-in runs, or another caller starts one
        last = os.fstat(fd)
        if last.st_size and last.st_mtime > time.time() - STANDIN_START_EVERY:
            raise InterruptedError("the last start was a moment ago: it failed, or that stand-in just stopped")
        os.ftruncate(fd, 0)
        os.write(fd, b"-\n")  # a start at this file's time (the stand-in writes its pid over it)
        log = _above_stdio(os.open(standin + ".log", os.O_WRONLY | os.O_TRUNC | opened, 0o600))
    except (OSError, ValueError):
        for opened_fd in (fd, log):
            if opened_fd >= 0:
                os.close(opened_fd)
        return
    main_socket = standin.removesuffix(STANDIN_SUFFIX)
    args = ["--socket", standin, "--stand-in-for", main_socket, "--idle-exit", environ.get(STANDIN_ENV, "")]
    args += ["--lock-fd", str(fd)]
    path = [os.path.abspath(entry) for entry in sys.path]  # ("" and relative entries: this process's cwd)
    # no descriptor of the caller's but the lock (a pipe of its runtime's held open would make it wait), in /
    code = f"import os, sys; os.closerange(3, {fd}); os.closerange({fd + 1}, 1 << 20); os.chdir('/'); " \
           f"sys.path[:] = {path!r}; from whereabouts.node.daemon import main; sys.exit(main({args!r}))"  # fmt: skip
    on = sys.flags
    flags = [f for f, set_ in (("-I", on.isolated), ("-S", on.no_site), ("-E", on.ignore_environment)) if set_]
    env = {k: v for k, v in environ.items() if not k.startswith("CNI_")}  # this call's are not the stand-in's
    try:
        os.set_inheritable(fd, True)
        os.posix_spawn(
            sys.executable,
            [sys.executable, *flags, "-c", code],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
                (os.POSIX_SPAWN_DUP2, 0, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
            setsigmask=(),  # a signal the runtime blocked for the plugin (SIGTERM) must still stop it
        )
    except Exception:  # (NotImplementedError too: no setsid in an old libc's posix_spawn)
        pass
    finally:
        os.close(fd)  # the stand-in's copy keeps the lock; a stand-in that did not start leaves it free
        os.close(log)


def _above_stdio(fd: int) -> int:
    """`fd`, moved above 0-2 (a caller with stdout or stderr closed gets them back from `open`, and the stand-in's
    own stdio would take their place)."""
    import fcntl

    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _host_namespaces() -> bool:
    """Whether this process runs in the network and mount namespaces of the machine's init (the node's: in a
    node that is a container, its own): a stand-in started from a pod's namespace would serve every caller
    from there. True when that cannot be told (init's are not ours to look at: a sandbox whose init another
    user namespace owns): the stand-in then declines the calls whose files it does not see as their callers
    do, as any daemon does."""
    for ns in ("net", "mnt"):
        try:
            if os.readlink(f"/proc/self/ns/{ns}") != os.readlink(f"/proc/1/ns/{ns}"):
                return False
        except (OSError, ValueError):
            continue
    return True


def _rest(sock: _socket.socket, buffered: bytearray) -> bytes:
    chunks = [bytes(buffered)]
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _identity(path: str) -> bytes:
    text = os.fsencode(path_identity(path))
    return b"s" + len(text).to_bytes(4, "big") + text


def path_identity(path: str) -> str:
    """What `path` is to this process: "device:inode" of the file or directory (a symlink itself, not followed),
    or of its deepest existing ancestor followed by the rest of the path (the path itself is missing). The
    daemon serves a local-store call only when its own answer is the same: then both name one directory (or
    will create the same one); see Runtime.same_file for the files a config names."""
    rest = ""
    while True:
        try:
            info = os.lstat(path)
            return f"{info.st_dev}:{info.st_ino}{rest}"
        except (FileNotFoundError, NotADirectoryError):
            parent, name = os.path.split(path)
            if parent == path or not name:
                return ""
            path, rest = parent, f"/{name}{rest}"
        except (OSError, ValueError):
            return ""


def _relayed_reason() -> str:
    """The reason the compiled relay passed along with a call it hands back, read as the daemon's is."""
    return os.environ.pop(RELAY_REASON_ENV, "").encode(errors="surrogateescape").decode(errors="replace")


def _busy(stdin: bytes, path: str, what: str) -> tuple[int, bytes]:
    """A daemon that is there but does not answer: try again later (code 11), never serve the call here
    meanwhile (it may still be serving it); the runtime retries, and the kubelet restarts a wedged daemon."""
    text = f"whereabouts node daemon on {path} {what}"
    msg = "".join(c if c >= " " else "?" for c in text).replace("\\", "\\\\").replace('"', '\\"')
    return 1, b'{"cniVersion": "%s", "code": 11, "msg": "%s"}\n' % (_declared_version(stdin), msg.encode())


def _declared_version(stdin: bytes) -> bytes:
    """The request's cniVersion, found without a JSON parser (the error must be in the caller's version)."""
    at = stdin.find(b'"cniVersion"')
    start = stdin.find(b'"', stdin.find(b":", at) + 1) + 1 if at >= 0 else 0
    end = stdin.find(b'"', start) if start else -1
    version = stdin[start:end] if 0 < end - start < 16 else b""
    return version if version.replace(b".", b"").isdigit() else b"1.1.0"


if __name__ == "__main__":
    sys.exit(main())
