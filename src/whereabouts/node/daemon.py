"""`whereabouts-node`: a node-local daemon that serves the plugin's calls with warm imports.

Optional. The `whereabouts` executable hands each call over on a unix socket (default
/run/whereabouts/plugin.sock); a busy daemon makes it wait, and it serves the call itself only when nobody
listens, the daemon dies before answering, or the daemon declines. The daemon serves calls exactly as the
executable would (the same `cni.call.handle`), each on a thread of its own; it holds no state between calls
but open connections to the datastore's servers (kept for the next call, saving a TCP and TLS handshake
each), so stopping or restarting it at any moment loses nothing.

It trusts its callers no further than it must: a request larger than MAX_REQUEST, or one whose memory once
parsed (PARSED_COST per byte) would take what the requests being read and served hold past IN_FLIGHT, is
declined (the caller serves it with its own memory), one not sent in full within REQUEST_WAIT is dropped, at
most MAX_CALLS are served at once (more wait in the listen backlog), a local-store call is served only when
the caller proves it sees the same data directory, and any call only when each file its config reads is the
same file for the caller, or missing for both (Runtime.same_file; see whereabouts.cni.main for the wire
format).

As a stand-in (`--stand-in-for SOCKET`: started by the plugin, whereabouts.cni.main.start_standin, when nobody
listens on the node daemon's socket) it serves on its own socket until it has had no call for `--idle-exit`
seconds or until a daemon listens on SOCKET again (looked at every STANDIN_LOOK seconds); then it stops
listening, lets the calls it is serving finish, and exits. It counts no fallbacks (the node's daemon does).

It keeps metrics (whereabouts.node.metrics: calls by verb and code, latencies, declines and the executable's
fallbacks, group-commit sizes, store errors), served on --metrics-address/--metrics-port when given (in a
cluster, install-cni serves them with its own).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Callable

from whereabouts.cni.call import handle
from whereabouts.cni.main import DEFAULT_SOCKET, STANDIN_SUFFIX
from whereabouts.controller.context import log_line
from whereabouts.controller.metrics import Registry
from whereabouts.files import out_of_descriptors
from whereabouts.node.batch import Attachments, Batcher
from whereabouts.node.metrics import NodeMetrics
from whereabouts.node.runtime import Peer, Runtime, ServeInProcess, StorePool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

MAX_REQUEST = 2 << 20  # bytes of environment or of network config: a usual call sends a few kB, the largest NAD etcd
# stores (its 1.5 MiB request limit) must fit
# Memory a request takes once parsed, per byte sent: JSON such as `[[[]],[[]],...]` or `[{},{},...]` costs
# 32-36 bytes of Python objects per byte on the wire (the wire bytes and their decoded text included).
PARSED_COST = 40
IN_FLIGHT = 96 << 20  # memory of all requests held at once, parsed: well inside the DaemonSet's limit of 256 MiB
REQUEST_WAIT = 10.0  # seconds for a caller to send its whole request
MAX_CALLS = 128  # calls served at once; more wait to be accepted
BACKLOG = 4096  # callers waiting to be accepted (the kernel caps it at net.core.somaxconn)
STANDIN_LOOK = 0.5  # seconds between a stand-in's looks at the node daemon's socket (a connect: nobody there, ENOENT)
DRAIN_WAIT = 60.0  # seconds a stopping stand-in waits for the calls it serves (each has a 45 s deadline)


class Declined(Exception):
    """A request the daemon will not serve: the caller serves it itself. `reason` is its metrics label."""

    def __init__(self, msg: str, reason: str) -> None:
        super().__init__(msg)
        self.reason = reason


class ByteBudget:
    """The memory requests take in the daemon at once (their parsed cost): a request that does not fit is
    declined."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self.lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self.lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def give_back(self, size: int) -> None:
        with self.lock:
            self.held -= size


class _Reader:
    """Exact reads from a caller, all within one deadline (a half-sent request must not pin a thread), each
    sized part counted against the daemon's budget until `close`."""

    def __init__(self, sock: socket.socket, deadline: float, budget: ByteBudget | None = None) -> None:
        self.sock, self.deadline = sock, deadline
        self.budget, self.taken = budget, 0

    def exact(self, size: int) -> bytes:
        chunks, remaining = [], size
        while remaining:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("caller too slow to send its request")
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(remaining, 65536))
            if not chunk:
                raise ConnectionError("caller went away mid-request")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def sized(self, what: str) -> bytes:
        size = int.from_bytes(self.exact(4), "big")
        if size > MAX_REQUEST:
            raise Declined(f"{what} of {size} bytes is over the daemon's limit of {MAX_REQUEST}", "size")
        if self.budget is not None:
            cost = size * PARSED_COST
            if not self.budget.take(cost):
                why = f"{what} of {size} bytes ({cost} once parsed) does not fit in the {IN_FLIGHT} it serves at once"
                raise Declined(why, "in_flight")
            self.taken += cost
        return self.exact(size)

    def close(self) -> None:
        if self.budget is not None:
            self.budget.give_back(self.taken)
        self.taken = 0


def _drain(reader: _Reader) -> None:
    """After declining: end our side, then read and drop what the caller still sends until it hangs up (or
    the request's deadline), so that it reads our reason rather than a reset connection."""
    with contextlib.suppress(OSError):
        reader.sock.shutdown(socket.SHUT_WR)
        while reader.deadline > time.monotonic():
            reader.sock.settimeout(reader.deadline - time.monotonic())
            if not reader.sock.recv(65536):
                return


def decode_request(reader: _Reader) -> tuple[dict[str, str], bytes]:
    env_blob = reader.sized("environment")
    stdin = reader.sized("network config")
    text = env_blob.decode(errors="surrogateescape")  # as os.environ reads the bytes the runtime set, in process
    environ = dict(item.split("=", 1) for item in text.split("\0") if "=" in item)
    return environ, stdin


class SocketPeer(Peer):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def identity(self, path: str) -> str:
        """The caller's answer, its bytes read back as the OS functions read a path (surrogateescape, as JSON's
        "\\udcff" names the byte 0xff). An exchange that fails declines the call: a caller still there
        serves it."""
        try:
            asked = os.fsencode(path)
            self.sock.sendall(b"S" + len(asked).to_bytes(4, "big") + asked)
            reader = _Reader(self.sock, time.monotonic() + REQUEST_WAIT)
            if reader.exact(1) != b"s":
                raise ConnectionError("caller answered out of turn")
            return os.fsdecode(reader.sized("identity"))
        except (OSError, ValueError, Declined) as exc:
            raise ServeInProcess(f"cannot ask the caller what {path!r} is to it: {exc}", "local_dir") from exc

    def here(self) -> bool:
        """The caller sends nothing after its request (and its identity answers): its end readable means it
        hung up (it was killed, or gave up waiting)."""
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            if not poller.poll(0):
                return True
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except (OSError, ValueError):  # (ValueError: the socket is closed)
            return False


def _text(reason: Exception) -> bytes:
    """A reason as bytes: it may quote a config's lone surrogates ("\\udcff"), which UTF-8 cannot carry."""
    return str(reason).encode(errors="backslashreplace")


class _Handler(socketserver.BaseRequestHandler):
    server: NodeDaemon

    def handle(self) -> None:
        reader = _Reader(self.request, time.monotonic() + REQUEST_WAIT, self.server.budget)
        metrics = self.server.metrics
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            self._serve(reader)
        finally:
            reader.close()
            if metrics is not None:
                metrics.in_flight.inc(-1)

    def _serve(self, reader: _Reader) -> None:
        started = time.monotonic()
        try:
            environ, stdin = decode_request(reader)
        except Declined as exc:
            self.server.declined(exc.reason)  # counted before answering: a caller that has its answer sees it
            self._send(b"R" + _text(exc))
            _drain(reader)
            return
        except (OSError, ValueError):
            return
        try:
            status, text = handle(environ, stdin, self.server.runtime.for_peer(SocketPeer(self.request)))
        except ServeInProcess as exc:
            self.server.declined(exc.reason)
            if exc.reason == "descriptors" and self.server.runtime.stores is not None:
                self.server.runtime.stores.shed()  # the next calls find descriptors free
            self._send(b"R" + _text(exc))
            self.server.log(environ, "served by the caller", started, str(exc))
            return
        if self.server.metrics is not None:
            self.server.metrics.served(environ.get("CNI_COMMAND"), status, text, time.monotonic() - started)
        self.request.settimeout(REQUEST_WAIT)
        self._send(b"W" + status.to_bytes(4, "big") + text.encode())
        self.server.log(environ, f"exit {status}", started, text if status else "")

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.request.sendall(data)


class NodeDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(
        self, path: str, *, runtime: Runtime | None = None, quiet: bool = False, metrics: NodeMetrics | None = None
    ) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket from a previous run
        old = os.umask(0o077)  # only root (the runtime) may talk to it
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        self.path = path
        self.bound = _identity(path)  # the socket file this daemon made (another may take the path later)
        self.runtime = runtime or Runtime()
        self.quiet = quiet
        self.slots = threading.BoundedSemaphore(MAX_CALLS)
        self.budget = ByteBudget(IN_FLIGHT)
        self.metrics = metrics
        if metrics is not None:
            metrics.refresh()  # what callers wrote while no daemon was here
        self.stands_in_for = ""  # a stand-in: the node daemon's socket (see `stand_in`)
        self.idle_exit = 0.0
        self.serving = 0  # calls accepted and not yet over
        self.last_call = self.last_look = time.monotonic()
        self.done = threading.Condition()
        self.why_stopped = ""

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: object) -> None:
        self.slots.acquire()  # at MAX_CALLS, stop accepting: callers wait in the backlog, they never go elsewhere
        with self.done:
            self.serving += 1
            self.last_call = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._over()
            raise

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._over()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        if not self.stands_in_for:
            self.wait_for_standin()
        super().serve_forever(poll_interval)

    def wait_for_standin(self, wait: float = DRAIN_WAIT + 5) -> float:
        """Take no call while a stand-in still serves some (it stops taking calls once this daemon listens, and
        holds the lock on its pid file until those are over): callers wait in the backlog meanwhile, so that a
        DEL served here never overtakes the stand-in's commit of its attachment's ADD. Seconds waited."""
        import fcntl

        started = time.monotonic()
        try:
            pidfile = self.path + STANDIN_SUFFIX + ".pid"
            fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (OSError, ValueError):
            return 0.0  # no stand-in ever ran here
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - started > wait:
                        log_line(f"whereabouts-node: the stand-in still holds its lock after {wait:g} s: serving")
                        break
                    time.sleep(0.05)
        finally:
            os.close(fd)
        waited = time.monotonic() - started
        if waited > 0.1:
            log_line(f"whereabouts-node: waited {waited:.1f} s for the stand-in's calls to end")
        return waited

    def _over(self) -> None:
        self.slots.release()
        with self.done:
            self.serving -= 1
            self.last_call = time.monotonic()
            self.done.notify_all()

    def stand_in(self, main_socket: str, idle_exit: float) -> None:
        """Serve as the stand-in for the daemon on `main_socket`: stop when it listens again, or after
        `idle_exit` seconds without a call (see the module)."""
        self.stands_in_for, self.idle_exit = main_socket, idle_exit

    def _stand_down(self) -> None:
        """A stand-in's look, between accepts: the reason to stop, if there is one, and the loop told to end."""
        now = time.monotonic()
        with self.done:
            idle = self.serving == 0 and now - self.last_call >= self.idle_exit
        if idle:
            self.why_stopped = f"no call for {self.idle_exit:g} s"
        elif now - self.last_look >= STANDIN_LOOK:
            self.last_look = now
            if listening(self.stands_in_for):
                self.why_stopped = f"the node daemon listens on {self.stands_in_for} again"
        if self.why_stopped:
            threading.Thread(target=self.shutdown, daemon=True).start()  # (from serve_forever's own thread)

    def drain(self, wait: float = DRAIN_WAIT) -> bool:
        """Stop listening (new callers find no socket: they go to the node daemon, or serve themselves), take
        the callers that connected before (waiting in the backlog: closing it would reset them), and wait up to
        `wait` seconds for the calls being served to end; whether they did."""
        self.unlink_socket()  # no connect reaches the backlog from now on
        self.socket.setblocking(False)
        while True:
            try:
                request, address = self.get_request()
            except OSError:
                break
            self.process_request(request, address)
        self.socket.close()
        with self.done:
            return self.done.wait_for(lambda: self.serving == 0, timeout=wait)

    def declined(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.declined(reason)

    def service_actions(self) -> None:
        """Between accepts (serve_forever's loop): the fallback bytes are consumed even when nobody scrapes,
        and stores idle too long are closed even when no call comes (one that cannot be accepted, with no
        descriptor left, included)."""
        if self.metrics is not None:
            self.metrics.refresh_if_due()
        if self.runtime.stores is not None:
            self.runtime.stores.sweep()
        if self.stands_in_for and not self.why_stopped:
            self._stand_down()

    def get_request(self) -> tuple[socket.socket, object]:
        try:
            return super().get_request()
        except OSError as exc:
            if out_of_descriptors(exc) and self.runtime.stores is not None:
                self.runtime.stores.shed()  # a caller waits in the backlog: free descriptors for it
            raise

    def log(self, environ: dict[str, str], outcome: str, started: float, detail: str = "") -> None:
        """One line per call on stderr (the container log)."""
        if self.quiet:
            return
        who = f"{environ.get('CNI_CONTAINERID', '-')}/{environ.get('CNI_IFNAME', '-')}"
        elapsed = (time.monotonic() - started) * 1000
        line = f"whereabouts-node: {environ.get('CNI_COMMAND', '?')} {who} {outcome} in {elapsed:.0f} ms"
        log_line(f"{line} {detail.strip()}".rstrip())

    def server_close(self) -> None:
        """Stop listening; the socket file goes only if it is still this daemon's. A daemon started on the path
        meanwhile (a DaemonSet rolled with maxSurge starts the new pod before the old one stops) replaced it, and
        removing that one would send every call on the node in process until the new daemon restarts."""
        super().server_close()
        self.unlink_socket()
        if self.runtime.stores is not None:
            self.runtime.stores.close()

    def unlink_socket(self) -> None:
        if _identity(self.path) == self.bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, None if there is none."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def listening(path: str) -> bool:
    """Whether a process listens on the unix socket `path` (one with a full backlog included)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except (BlockingIOError, TimeoutError):
        return True
    except (OSError, ValueError):
        return False
    finally:
        probe.close()


def start_serving(
    path: str, *, quiet: bool = False, registry: Registry | None = None, count_fallbacks: bool = True
) -> NodeDaemon:
    """A daemon on `path` with the process-wide parts of its runtime: open stores kept between calls, and
    group commit; its metrics in `registry` (one of its own if none: counted, served by nobody), the
    executable's fallbacks beside `path` counted unless `count_fallbacks` is false (a stand-in)."""
    stores = StorePool()
    fallbacks = (os.path.dirname(path) or ".") if count_fallbacks else None
    metrics = NodeMetrics(registry or Registry(), fallbacks_dir=fallbacks, stores=stores)
    stores.on_error = metrics.store_failed
    runtime = Runtime(batcher=Batcher(observe=metrics.batch), stores=stores, attachments=Attachments())
    return NodeDaemon(path, runtime=runtime, quiet=quiet, metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whereabouts-node", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=os.environ.get("WHEREABOUTS_SOCKET") or DEFAULT_SOCKET)
    parser.add_argument("--quiet", action="store_true", help="no line per call on stderr")
    parser.add_argument("--metrics-address", default=os.environ.get("WHEREABOUTS_METRICS_ADDRESS", ""),
                        help="serve /metrics (and /healthz, /readyz) on this address; default: not served")  # fmt: skip
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("WHEREABOUTS_METRICS_PORT") or 9147),
                        help="with --metrics-address (0: a free port, logged)")  # fmt: skip
    parser.add_argument(
        "--accept-store-loss",
        metavar="DIR",
        help="the local store in DIR is lost for good: set its remains aside so that calls start an empty one, "
        "then exit (every address it held becomes free: only when no container on this node still uses one)",
    )
    parser.add_argument("--stand-in-for", metavar="SOCKET", default="",
                        help="stand in for the node daemon on SOCKET: serve while nobody listens there")  # fmt: skip
    parser.add_argument("--idle-exit", type=float, default=60.0, metavar="SECONDS",
                        help="with --stand-in-for: exit after this long without a call")  # fmt: skip
    parser.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the stand-in's lock: its pid is written there
    args = parser.parse_args(argv)
    if args.accept_store_loss:
        return _accept_store_loss(args.accept_store_loss)
    if args.stand_in_for:
        return _stand_in(args)
    registry = Registry()  # the endpoint first: a port taken fails the start before the socket is made
    endpoint = _serve_metrics(args.metrics_address, args.metrics_port, registry) if args.metrics_address else None
    server = start_serving(args.socket, quiet=args.quiet, registry=registry)
    log_line(f"whereabouts-node: serving on {args.socket}")

    def close() -> None:
        server.server_close()
        if endpoint is not None:
            endpoint.shutdown()

    _serve_until_stopped(server, close)
    return 0


def _serve_until_stopped(server: NodeDaemon, close: Callable[[], None]) -> None:
    """Serve until SIGTERM or SIGINT (or, a stand-in, its own reason to stop: `why_stopped`), then `close`."""

    def shutdown(signum: int, frame: object) -> None:
        server.why_stopped = server.why_stopped or f"signal {signum}"
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        close()


def _stand_in(args: argparse.Namespace) -> int:
    """The stand-in's life (see the module): started by a caller that found nobody listening on the node
    daemon's socket, with the lock on its pid file as `--lock-fd` (held until it exits)."""
    if args.socket != args.stand_in_for + STANDIN_SUFFIX:
        log_line(f"whereabouts-node: a stand-in for {args.stand_in_for} listens on it + {STANDIN_SUFFIX}, not "
                 f"{args.socket}")  # fmt: skip
        return 2
    with contextlib.suppress(OSError):
        if not stat.S_ISSOCK(os.lstat(args.socket).st_mode):
            log_line(f"whereabouts-node: not standing in: {args.socket} is there and is no socket")
            return 1
    if args.lock_fd is not None:
        with contextlib.suppress(OSError):
            os.ftruncate(args.lock_fd, 0)
            os.pwrite(args.lock_fd, f"{os.getpid()}\n".encode(), 0)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("0")  # not its caller's (a container runtime's is -999: never killed for memory)
    if listening(args.stand_in_for):
        log_line(f"whereabouts-node: not standing in: the node daemon listens on {args.stand_in_for}")
        return 0
    server = start_serving(args.socket, quiet=True, count_fallbacks=False)
    server.stand_in(args.stand_in_for, args.idle_exit)
    log_line(f"whereabouts-node: standing in for {args.stand_in_for} on {args.socket}")
    drained = False

    def close() -> None:
        nonlocal drained
        drained = server.drain()
        if args.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(args.lock_fd)  # its calls are over: the node daemon may take calls (wait_for_standin)
        server.server_close()

    _serve_until_stopped(server, close)
    left = "" if drained else f"; calls still served after {DRAIN_WAIT:g} s were cut short"
    log_line(f"whereabouts-node: stand-in stopped: {server.why_stopped}{left}")
    return 0


def _serve_metrics(address: str, port: int, registry: Registry) -> ThreadingHTTPServer:
    from whereabouts.controller.health import Health, serve

    health = Health()
    health.ready.set()
    endpoint = serve(address, port, registry, health)
    log_line(f"whereabouts-node: metrics on {address}:{endpoint.server_address[1]}")
    return endpoint


def _accept_store_loss(directory: str) -> int:
    from whereabouts.store.local import accept_loss

    moved = accept_loss(os.path.abspath(directory))
    kept = "; set aside: " + ", ".join(moved) if moved else ""
    print(f"whereabouts-node: the local store in {directory} starts empty at the next call{kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
