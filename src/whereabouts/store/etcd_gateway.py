"""A minimal client for etcd v3's JSON gateway (`POST /v3/...`), over the standard library's sockets.

Why not a client library: the maintained Python clients speak gRPC, whose import alone costs more than a
whole CNI call here; `http.client` drags in the `email` package. This module needs `socket`, `json`, `base64`
and, for TLS endpoints only, `ssl`. It keeps one keep-alive connection, fails over across the configured
endpoints, authenticates with username/password (a token, renewed when etcd says it expired), and maps every
network or server failure to TryAgainLater (code 11) within `timeout` seconds per endpoint.
"""

from __future__ import annotations

import base64
import json
import socket
from dataclasses import dataclass
from typing import Any

from whereabouts.errors import TryAgainLater


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_endpoint(text: str, *, tls: bool) -> Endpoint:
    """'host:port', '[::1]:2379' or 'http(s)://host:port'; bare host:port is https when TLS files are set."""
    scheme = "https" if tls else "http"
    if "://" in text:
        scheme, _, text = text.partition("://")
    text = text.rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "2379")
    if scheme not in ("http", "https") or not host or not port_text.isdigit():
        raise ValueError(text)
    return Endpoint(scheme, host, int(port_text))


def _error_message(body: bytes) -> str:
    try:
        reply = json.loads(body)
        return str(reply.get("error") or reply.get("message") or reply)
    except ValueError:
        return body.decode(errors="replace").strip()


@dataclass(frozen=True)
class TLSFiles:
    ca_cert_file: str = ""
    cert_file: str = ""
    key_file: str = ""


class EtcdError(Exception):
    """etcd answered with an error (HTTP status and gRPC message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"etcd error {status}: {message}")
        self.status = status
        self.message = message


class EtcdGateway:
    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        tls: TLSFiles | None = None,
        username: str = "",
        password: str = "",
        timeout: float = 3.0,
    ) -> None:
        self.endpoints = endpoints
        self.tls = tls or TLSFiles()
        self.username, self.password = username, password
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._endpoint: Endpoint | None = None
        self._token = ""

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v3/<path>; authenticates first when a username is configured."""
        if self.username and not self._token:
            self._authenticate()
        try:
            return self._call_any(path, body)
        except EtcdError as exc:
            if self.username and "token" in exc.message:
                self._authenticate()  # expired or revoked token: get a new one, once
                return self._call_any(path, body)
            raise

    def _authenticate(self) -> None:
        self._token = ""
        reply = self._call_any("auth/authenticate", {"name": self.username, "password": self.password})
        self._token = reply.get("token", "")

    def _call_any(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        errors = []
        order = [self._endpoint] if self._endpoint else []
        order += [e for e in self.endpoints if e != self._endpoint]
        for endpoint in order:
            try:
                return self._request(endpoint, path, payload)
            except (OSError, ValueError) as exc:
                self.close()
                errors.append(f"{endpoint.url}: {exc or type(exc).__name__}")
        raise TryAgainLater(f"etcd unreachable ({'; '.join(errors)})")

    def _request(self, endpoint: Endpoint, path: str, payload: bytes) -> dict[str, Any]:
        if self._sock is None or self._endpoint != endpoint:
            self._connect(endpoint)
        assert self._sock is not None
        headers = [
            f"POST /v3/{path} HTTP/1.1",
            f"Host: {endpoint.host}:{endpoint.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
        ]
        if self._token:
            headers.append(f"Authorization: {self._token}")
        self._sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + payload)
        status, body = self._read_response()
        if status != 200:
            raise EtcdError(status, _error_message(body))
        return json.loads(body) if body else {}

    def _connect(self, endpoint: Endpoint) -> None:
        self.close()
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.scheme == "https":
            sock = self._wrap_tls(sock, endpoint.host)
        self._sock, self._endpoint = sock, endpoint
        self._reader = sock.makefile("rb")

    def _wrap_tls(self, sock: socket.socket, host: str) -> socket.socket:
        import ssl  # only TLS endpoints pay for it

        context = ssl.create_default_context(cafile=self.tls.ca_cert_file or None)
        if self.tls.cert_file:
            context.load_cert_chain(self.tls.cert_file, self.tls.key_file or None)
        return context.wrap_socket(sock, server_hostname=host)

    def _read_response(self) -> tuple[int, bytes]:
        status_line = self._reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by etcd")
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
        body = self._read_chunked() if chunked else self._reader.read(length) if length >= 0 else self._reader.read()
        if close or (length < 0 and not chunked):
            self.close()
        return status, body

    def _read_chunked(self) -> bytes:
        parts = []
        while (size := int(self._reader.readline().split(b";")[0], 16)) > 0:
            parts.append(self._reader.read(size))
            self._reader.readline()
        while self._reader.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock, self._reader, self._endpoint = None, None, None
