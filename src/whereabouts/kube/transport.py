"""A small keep-alive HTTP/1.1 JSON client over the standard library's sockets: the transport of the
Kubernetes client (and of the etcd store's JSON gateway).

`http.client` would drag the `email` package into every CNI call; this needs `socket`, `json` and, for
https only, `ssl`. One connection is kept open for the whole call (a CNI call makes a handful of requests).
Network failures surface as OSError / ValueError: each store maps them to TryAgainLater in one place.

A request's answer must come whole within `timeout` seconds of sending it (and within the CNI call's deadline):
a server that sends a byte now and then cannot hold a call past it (TimeoutError). An answer that is no HTTP
(a status line without a status), a head above MAX_HEAD bytes, or a body above `max_body` bytes (declared or
sent) is refused with ValueError before it is held in memory; a body cut short by the server is a
ConnectionError. A watch (`stream`) is bounded per read instead: it lasts as long as the server keeps it.

Nothing a caller passes reaches the wire unchecked: a method, path, header name or value that could end the
request line or a header early (CR, LF, NUL, any control character; a space in the path) raises ValueError
before a byte is sent, so no string from a config can smuggle a second request onto the connection.
"""

from __future__ import annotations

import json
import os
import socket
import time

from whereabouts import deadline
from whereabouts.files import out_of_descriptors, require_regular
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, NoReturn

MAX_HEAD = 64 * 1024  # bytes of status line and headers: an API server's or etcd's take a few hundred
MAX_BODY = 64 * 1024 * 1024  # bytes of one answer's body (of one line or chunk of a watch), by default


@record(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_endpoint(text: str, *, tls: bool, default_port: int = 2379) -> Endpoint:
    """'host:port', '[::1]:2379' or 'http(s)://host[:port]'; a bare host:port is https when `tls`."""
    scheme = "https" if tls else "http"
    if "://" in text:
        scheme, _, text = text.partition("://")
    text = text.split("/", 1)[0]
    if text.startswith("["):  # an IPv6 address: the brackets say where it ends
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port_text = rest[1:] or str(default_port)
    else:
        host, _, port_text = text.partition(":") if ":" in text else (text, "", str(default_port))
        if ":" in port_text:  # 'fd00::5' or 'h:1:2': no telling host from port
            raise ValueError(text)
    if scheme not in ("http", "https") or not _is_host(host) or not _is_port(port_text):
        raise ValueError(text)
    return Endpoint(scheme, host, int(port_text))


def _is_port(text: str) -> bool:
    # ASCII digits only (int() takes other scripts' digits); 0 and above 65535 reach no server
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and 0 < int(text) <= 65535


def _is_host(host: str) -> bool:
    return bool(host) and host.isascii() and host.isprintable() and not any(c in host for c in " /@")


@record(frozen=True)
class TLSSettings:
    """What a TLS connection trusts and presents. Inline certificates and keys are kept as their PEM bytes,
    never copied to files: settings read twice from one kubeconfig are equal, so the node daemon's kept
    connections are found again by them."""

    ca_file: str = ""
    ca_data: str = ""  # PEM text
    cert_file: str = ""
    key_file: str = ""
    cert_data: bytes = b""  # PEM, used instead of cert_file
    key_data: bytes = b""  # PEM, used instead of key_file
    verify: bool = True


@record(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


class HTTPConnection:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        tls: TLSSettings | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        max_body: int = MAX_BODY,
    ) -> None:
        if not _is_host(endpoint.host):
            raise ValueError(f"unsafe host {endpoint.host!r}")
        self.endpoint = endpoint
        self.tls = tls or TLSSettings()
        self.timeout = timeout  # a request's whole answer (a watch's: each read): a busy server may take a while
        self.connect_timeout = connect_timeout  # a dead or unreachable server is given up on quickly
        self.max_body = max_body
        self._sock: socket.socket | None = None
        self._reader: _Reader | None = None
        self.last_status = 0
        self.interrupted = False  # (see `interrupt`)

    def request(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None) -> Response:
        """Send one request; on a stale keep-alive connection (the node daemon keeps a store, and so its
        connection, between calls), reconnect and send it once more."""
        _check_head(method, path, headers or {})
        payload = b"" if body is None else json.dumps(body).encode()
        fresh = self._sock is None
        try:
            return self._exchange(method, path, payload, headers or {})
        except (TimeoutError, ValueError):  # a slow or garbled server, not a stale connection: no second try
            self.close()
            raise
        except OSError:
            self.close()
            if fresh:
                raise
            return self._exchange(method, path, payload, headers or {})

    def _exchange(self, method: str, path: str, payload: bytes, headers: dict[str, str]) -> Response:
        until = time.monotonic() + deadline.remaining(self.timeout)  # the whole answer, not each read of it
        if self._sock is None:
            self._connect()
        else:
            self._sock.settimeout(deadline.remaining(self.timeout))
        assert self._reader is not None
        self._reader.until = until
        self._send_head(method, path, payload, headers)
        return self._read_response()

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
        """GET `path` and yield its body line by line as it arrives (a Kubernetes watch: one JSON event per
        line). `last_status` holds the answer's status once the first line is out; an answer that is not
        chunked (an error) comes whole, as one item. The connection is closed at the end."""
        _check_head("GET", path, headers or {})
        self.close()
        self._connect()
        self._send_head("GET", path, b"", headers or {})
        try:
            self.last_status, length, chunked, _ = self._read_head()
            if not chunked:  # an error: its body whole (by its length: the server keeps the connection open)
                yield self._read_body(length)
                return
            pending = b""
            for chunk in self._chunks():
                *complete, pending = (pending + chunk).split(b"\n")
                if len(pending) > self.max_body:
                    raise ValueError(f"a line of the answer exceeds {self.max_body} bytes")
                yield from (line for line in complete if line.strip())
            if pending.strip():
                yield pending
        finally:
            self.close()

    def _send_head(self, method: str, path: str, payload: bytes, headers: dict[str, str]) -> None:
        assert self._sock is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.endpoint.host}:{self.endpoint.port}"]
        if payload or method in ("POST", "PUT", "PATCH"):
            headers = {"Content-Type": "application/json", **headers, "Content-Length": str(len(payload))}
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def _connect(self) -> None:
        address = (self.endpoint.host, self.endpoint.port)
        sock = socket.create_connection(address, timeout=deadline.remaining(self.connect_timeout))
        sock.settimeout(deadline.remaining(self.timeout))  # no wait outlives the CNI call's deadline
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.endpoint.scheme == "https":
            try:
                sock = self._wrap_tls(sock)
            except BaseException:
                sock.close()
                raise
        self._sock, self._reader = sock, _Reader(sock)
        if self.interrupted:  # (after `_sock` is set: `interrupt` either sees the socket, or is seen here)
            self.close()
            raise ConnectionAbortedError("connection interrupted")

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        import ssl  # only https endpoints pay for it

        try:
            if self.tls.ca_file:
                require_regular(self.tls.ca_file)
            context = ssl.create_default_context(cafile=self.tls.ca_file or None, cadata=self.tls.ca_data or None)
        except OSError as exc:  # (ssl.SSLError is one)
            _file_failed(exc, f"invalid TLS CA {self.tls.ca_file or 'data'}")
        if not self.tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.tls.cert_file or self.tls.cert_data:
            try:
                for path in (self.tls.cert_file, self.tls.key_file):
                    if path:
                        require_regular(path)
                _load_client_certificate(context, self.tls)
            except OSError as exc:
                which = f"{self.tls.cert_file or 'data'} and key {self.tls.key_file or 'data'}"
                _file_failed(exc, f"invalid TLS client certificate {which}")
        return context.wrap_socket(sock, server_hostname=self.endpoint.host)

    def _read_head(self) -> tuple[int, int, bool, bool]:
        """The status line and headers: (status, content length or -1, chunked, connection: close)."""
        assert self._reader is not None
        reader, budget = self._reader, MAX_HEAD
        status_line = reader.readline(budget)
        if not status_line:
            raise ConnectionError("connection closed by the server")
        budget -= len(status_line)
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not _is_status(parts[1]):
            raise ValueError(f"not an HTTP answer: {bytes(status_line[:80])!r}")
        status = int(parts[1])
        length, chunked, close = -1, False, False
        while (line := reader.readline(budget)) not in (b"\r\n", b"\n"):
            if not line.endswith(b"\n"):
                raise ConnectionError("connection closed by the server mid-answer")
            budget -= len(line)
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                if not (value.isascii() and value.isdigit()):
                    raise ValueError(f"invalid Content-Length {value[:40]!r}")
                length = int(value)
                if length > self.max_body:
                    raise ValueError(f"the answer's body of {length} bytes exceeds {self.max_body}")
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        return status, length, chunked, close

    def _read_response(self) -> Response:
        status, length, chunked, close = self._read_head()
        body = self._read_chunked() if chunked else self._read_body(length)
        if close or (length < 0 and not chunked):
            self.close()
        return Response(status, body)

    def _read_body(self, length: int) -> bytes:
        """`length` bytes (all of them, else ConnectionError), or with no length (-1) all until the server
        closes the connection."""
        assert self._reader is not None
        if length < 0:
            return self._reader.read_to_end(self.max_body)
        return self._reader.read_exactly(length)

    def _chunks(self) -> Iterator[bytes]:
        assert self._reader is not None
        total = 0
        while (size := _chunk_size(self._chunk_head())) > 0:
            total += size
            if size > self.max_body or (self._reader.until is not None and total > self.max_body):
                raise ValueError(f"the answer's body exceeds {self.max_body} bytes")
            yield self._reader.read_exactly(size)
            self._reader.readline(MAX_HEAD)

    def _chunk_head(self) -> bytes:
        assert self._reader is not None
        line = self._reader.readline(MAX_HEAD)
        if not line.endswith(b"\n"):
            raise ConnectionError("connection closed by the server mid-answer")
        return line

    def _read_chunked(self) -> bytes:
        assert self._reader is not None
        body = b"".join(self._chunks())
        budget = MAX_HEAD
        while (line := self._reader.readline(budget)) not in (b"\r\n", b"\n", b""):
            budget -= len(line)  # trailers
        return body

    def interrupt(self) -> None:
        """From another thread: end what the connection waits for now (a watch's next line; its reader sees
        the stream end) and refuse to connect again. Shut down, not closed: the reader's thread closes it."""
        import contextlib  # (only a long-running process interrupts)

        self.interrupted = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # not connected any more
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._reader = None, None


class _Reader:
    """The answer's bytes off the socket, buffered. With `until` set (a request's answer), each wait for more is
    bounded by what is left of it, so the whole answer must come by then; unset (a watch), by the socket's
    timeout per read. Lines and bodies are bounded by the caller's limits: nothing a server sends is held
    beyond them."""

    __slots__ = ("buffer", "sock", "until")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.until: float | None = None  # time.monotonic() by which the answer must be read

    def _fill(self) -> bool:
        """Read what the server sent next into the buffer; False when it closed the connection."""
        if self.until is not None:
            left = self.until - time.monotonic()
            if left <= 0:
                raise TimeoutError("the server did not send its whole answer in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("the server did not send its whole answer in time") from None
        else:
            data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def readline(self, limit: int) -> bytes:
        """One line with its end; what is left when the server closes first (b"" if nothing)."""
        start = 0
        while (end := self.buffer.find(b"\n", start)) < 0:
            if len(self.buffer) > limit:
                raise ValueError(f"a line of the answer's head exceeds {limit} bytes")
            start = len(self.buffer)
            if not self._fill():
                end = len(self.buffer) - 1
                break
        if end + 1 > limit:
            raise ValueError(f"a line of the answer's head exceeds {limit} bytes")
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError(f"connection closed by the server after {len(self.buffer)} of {size} bytes")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_to_end(self, limit: int) -> bytes:
        while len(self.buffer) <= limit and self._fill():
            pass
        if len(self.buffer) > limit:
            raise ValueError(f"the answer's body exceeds {limit} bytes")
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _is_status(text: bytes) -> bool:
    return len(text) == 3 and text.isdigit()


def _chunk_size(line: bytes) -> int:
    text = line.split(b";")[0].strip()
    if not text or len(text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"invalid chunk size {bytes(line[:40])!r}")
    return int(text, 16)


def _check_head(method: str, path: str, headers: dict[str, str]) -> None:
    """Refuse a request whose method, path or headers could end its request line or a header early."""
    if not (method.isascii() and method.isalpha()):
        raise ValueError(f"unsafe HTTP method {method!r}")
    if not (path.startswith("/") and path.isascii() and path.isprintable()) or " " in path:
        raise ValueError(f"unsafe HTTP request path {path!r}")
    for name, value in headers.items():
        if not (name.isascii() and name.isprintable()) or not name or any(c in name for c in " :"):
            raise ValueError(f"unsafe HTTP header name {name!r}")
        if not (value.isascii() and value.isprintable()):
            raise ValueError(f"unsafe value of HTTP header {name}")  # a credential, maybe: never quoted


class TLSFileError(OSError):
    """A TLS file of the settings (the CA, the client certificate or key) missing or no PEM: the config's fault,
    not the server's, which no retry mends (a CNI call on etcd says code 7). Long-running clients take it as any
    failure to connect (a file being rewritten) and try again."""


def _file_failed(exc: OSError, what: str) -> NoReturn:
    """A TLS file could not be loaded: the file's fault (TLSFileError), unless no descriptor was left (raised
    as it is: the node daemon declines the call, in process it is code 11)."""
    if out_of_descriptors(exc):
        raise exc
    raise TLSFileError(f"{what}: {exc.strerror or str(exc) or type(exc).__name__}") from None


def _load_client_certificate(context: Any, tls: TLSSettings) -> None:
    """ssl loads a client certificate and key only from paths: inline ones are handed over as anonymous
    memory files (/proc/self/fd/N of a memfd), which exist for this process alone and vanish when closed,
    so no key material is ever written to disk."""
    fds = []
    try:
        cert, key = tls.cert_file, tls.key_file
        if tls.cert_data:
            fds.append(_memory_file(tls.cert_data))
            cert = f"/proc/self/fd/{fds[-1]}"
        if tls.key_data:
            fds.append(_memory_file(tls.key_data))
            key = f"/proc/self/fd/{fds[-1]}"
        context.load_cert_chain(cert, key or None)
    finally:
        for fd in fds:
            os.close(fd)


def _memory_file(data: bytes) -> int:
    fd = os.memfd_create("whereabouts-tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.close(fd)
        raise
    return fd
