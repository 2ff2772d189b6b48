"""A loopback HTTP/1.1 server that keeps every byte it receives, to see exactly what a client put on the wire.

It frames requests as a server does (a head ended by an empty line, then Content-Length bytes of body),
keeps each one's request line, and answers each with a 404 and an empty JSON object. Stopped by closing
its listening socket.
"""

from __future__ import annotations

import re
import socket
import threading

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class RawHTTPServer:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.requests: list[str] = []  # the first line of every request framed, in order
        self.connections = 0
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        pending = b""
        with conn:
            while chunk := conn.recv(65536):
                self.received += chunk
                pending += chunk
                while b"\r\n\r\n" in pending:
                    head, _, rest = pending.partition(b"\r\n\r\n")
                    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    length = int(found.group(1)) if found else 0
                    if len(rest) < length:
                        break
                    pending = rest[length:]
                    self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                    conn.sendall(NOT_FOUND)
            if pending.strip():
                self.requests.append(pending.split(b"\r\n", 1)[0].decode("latin-1"))  # never ended

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every connection the client opened has been closed and read to its end."""
        for thread in self._threads:
            thread.join(timeout)

    def close(self) -> None:
        self.sock.close()


class AnsweringServer:
    """A loopback server that answers every request it frames with the same bytes, as a broken or hostile server
    might: `answer` sent whole, or with `drip` one byte every `drip` seconds (a slow-drip server that keeps
    each read of the client's alive), then the connection closed (`close`) or held open. Stopped by `close()`."""

    def __init__(self, answer: bytes, *, drip: float = 0.0, close: bool = True) -> None:
        self.answer, self.drip, self.hang_up = answer, drip, close
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        pending = b""
        with conn:
            try:
                while chunk := conn.recv(65536):
                    pending += chunk
                    head, sep, rest = pending.partition(b"\r\n\r\n")
                    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    if not sep or len(rest) < (int(found.group(1)) if found else 0):
                        continue
                    pending = b""
                    self.requests += 1
                    self._send(conn)
                    if self.hang_up:
                        return
            except OSError:
                return  # the client went away

    def _send(self, conn: socket.socket) -> None:
        if not self.drip:
            conn.sendall(self.answer)
            return
        for byte in self.answer:
            if self.stopped.wait(self.drip):
                return
            conn.sendall(bytes([byte]))

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
