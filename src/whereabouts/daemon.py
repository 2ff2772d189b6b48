"""`whereabouts-node`: a node-local daemon that serves the plugin's calls with warm imports.

Optional. The `whereabouts` executable hands each call over on a unix socket (default
/run/whereabouts/plugin.sock) and falls back to serving it itself when nobody listens. The daemon serves
calls exactly as the executable would (the same `cni.call.handle`), each on a thread of its own; it holds
no state between calls but open connections to the datastore's servers (kept for the next call, saving a
TCP and TLS handshake each), so stopping or restarting it at any moment loses nothing.

Wire format: request = 4-byte length + "K=V\\0..." environment + 4-byte length + stdin;
answer = b"W" + 4-byte exit status + stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import socketserver
import sys
import threading

from whereabouts.cni.call import handle
from whereabouts.cni.main import DEFAULT_SOCKET


def _read_exact(stream: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = stream.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("caller went away mid-request")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def decode_request(sock: socket.socket) -> tuple[dict[str, str], bytes]:
    env_blob = _read_exact(sock, int.from_bytes(_read_exact(sock, 4), "big"))
    stdin = _read_exact(sock, int.from_bytes(_read_exact(sock, 4), "big"))
    environ = dict(item.split("=", 1) for item in env_blob.decode().split("\0") if "=" in item)
    return environ, stdin


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            environ, stdin = decode_request(self.request)
        except (OSError, ValueError):
            return
        status, text = handle(environ, stdin)
        with contextlib.suppress(OSError):
            self.request.sendall(b"W" + status.to_bytes(4, "big") + text.encode())


class NodeDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket from a previous run
        old = os.umask(0o077)  # only root (the runtime) may talk to it
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        self.path = path

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whereabouts-node", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=os.environ.get("WHEREABOUTS_SOCKET") or DEFAULT_SOCKET)
    args = parser.parse_args(argv)
    from whereabouts.batch import Batcher
    from whereabouts.cni import verbs
    from whereabouts.store import http

    http.keep_connections()
    verbs.BATCHER = Batcher()
    server = NodeDaemon(args.socket)
    stop = threading.Event()

    def shutdown(signum: int, frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"whereabouts-node: serving on {args.socket}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
