"""`whereabouts`: the CNI IPAM executable.

The container runtime starts it once per call, so start-up is most of its cost. When the node daemon
(`whereabouts-node`) listens on its socket, the call is handed over whole (environment and stdin) and this
process only relays the answer: it imports nothing beyond the interpreter's own. Otherwise, or when the
daemon does not answer, the call is served here, in process. Either way the result is the same.
"""

from __future__ import annotations

import os
import sys

SOCKET_ENV = "WHEREABOUTS_SOCKET"  # empty: never use a daemon
DEFAULT_SOCKET = "/run/whereabouts/plugin.sock"
FORWARDED_ENV = ("CNI_", "NODENAME", "WHEREABOUTS_")


def main() -> int:
    if "CNI_COMMAND" not in os.environ:
        from whereabouts.cni.call import HELP

        sys.stdout.write(HELP)
        return 0
    stdin = sys.stdin.buffer.read()
    path = os.environ.get(SOCKET_ENV, DEFAULT_SOCKET)
    answer = relay(path, os.environ, stdin) if path else None
    if answer is None:
        from whereabouts.cni.call import handle

        status, text = handle(os.environ, stdin)
        answer = status, text.encode()
    sys.stdout.buffer.write(answer[1])
    sys.stdout.flush()
    # Nothing is left to clean up: skip the interpreter's teardown (a tenth of a call's time). Stores
    # commit before answering, and SQLite's journal survives a process that simply ends.
    os._exit(answer[0])


def relay(path: str, environ: os._Environ[str] | dict[str, str], stdin: bytes) -> tuple[int, bytes] | None:
    """Hand the call to the node daemon; None when there is none or it did not answer in full."""
    import _socket  # the C module: `socket` itself costs more than the relay saves

    env = "\0".join(f"{k}={v}" for k, v in environ.items() if k.startswith(FORWARDED_ENV)).encode()
    request = len(env).to_bytes(4, "big") + env + len(stdin).to_bytes(4, "big") + stdin
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(60)
        sock.connect(path)
        sock.sendall(request)
        sock.shutdown(_socket.SHUT_WR)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    except OSError:
        return None  # no daemon, or it went away: serve the call here (idempotent if it got that far)
    finally:
        sock.close()
    if len(reply) < 5 or reply[:1] != b"W":
        return None
    return int.from_bytes(reply[1:5], "big"), reply[5:]


if __name__ == "__main__":
    sys.exit(main())
