"""A small keep-alive HTTP/1.1 JSON client over the standard library's sockets: the transport of the
Kubernetes client (and of the etcd store's JSON gateway).

`http.client` would drag the `email` package into every CNI call; this needs `socket`, `json` and, for
https only, `ssl`. One connection is kept open for the whole call (a CNI call makes a handful of requests).
Network failures surface as OSError / ValueError: each store maps them to TryAgainLater in one place.

Nothing a caller passes reaches the wire unchecked: a method, path, header name or value that could end the
request line or a header early (CR, LF, NUL, any control character; a space in the path) raises ValueError
before a byte is sent, so no string from a config can smuggle a second request onto the connection.
"""

from __future__ import annotations

import json
import os
import socket

from whereabouts import deadline
from whereabouts.files import out_of_descriptors, require_regular
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, NoReturn


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
        self, endpoint: Endpoint, *, tls: TLSSettings | None = None, timeout: float = 10.0, connect_timeout: float = 2.0
    ) -> None:
        if not _is_host(endpoint.host):
            raise ValueError(f"unsafe host {endpoint.host!r}")
        self.endpoint = endpoint
        self.tls = tls or TLSSettings()
        self.timeout = timeout  # per read: a busy server may take a while to answer a write
        self.connect_timeout = connect_timeout  # a dead or unreachable server is given up on quickly
        self._sock: socket.socket | None = None
        self._reader: Any = None
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
        except (ConnectionError, TimeoutError, OSError):
            self.close()
            if fresh:
                raise
            return self._exchange(method, path, payload, headers or {})

    def _exchange(self, method: str, path: str, payload: bytes, headers: dict[str, str]) -> Response:
        if self._sock is None:
            self._connect()
        else:
            self._sock.settimeout(deadline.remaining(self.timeout))
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
        self.last_status, length, chunked, _ = self._read_head()
        try:
            if not chunked:  # an error: its body whole (by its length: the server keeps the connection open)
                yield self._reader.read(length) if length >= 0 else self._reader.read()
                return
            pending = b""
            for chunk in self._chunks():
                *complete, pending = (pending + chunk).split(b"\n")
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
        self._sock, self._reader = sock, sock.makefile("rb")
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
        status_line = self._reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        length, chunked, close = -1, False, False
        while (line := self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        return status, length, chunked, close

    def _read_response(self) -> Response:
        status, length, chunked, close = self._read_head()
        body = self._read_chunked() if chunked else self._reader.read(length) if length >= 0 else self._reader.read()
        if close or (length < 0 and not chunked):
            self.close()
        return Response(status, body)

    def _chunks(self) -> Iterator[bytes]:
        while (size := int(self._chunk_head().split(b";")[0], 16)) > 0:
            yield self._reader.read(size)
            self._reader.readline()

    def _chunk_head(self) -> bytes:
        line = self._reader.readline()
        if not line:
            raise ConnectionError("connection closed by the server mid-answer")
        return bytes(line)

    def _read_chunked(self) -> bytes:
        body = b"".join(self._chunks())
        while self._reader.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
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
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock, self._reader = None, None


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
