"""The remote stores' HTTP client: keep-alive within a call, connections kept across calls in the node
daemon, and a kept connection the server has closed meanwhile replaced without the caller noticing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raw_http import AnsweringServer, RawHTTPServer
from whereabouts.kube import transport
from whereabouts.kube.transport import Endpoint, HTTPConnection


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    accepted = 0

    def get_request(self) -> tuple[socket.socket, object]:
        self.accepted += 1
        return super().get_request()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[CountingServer]:
    srv = CountingServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def one_call(srv: CountingServer, conn: HTTPConnection | None = None) -> HTTPConnection:
    conn = conn or HTTPConnection(Endpoint("http", "127.0.0.1", srv.server_address[1]))
    for _ in range(3):
        assert conn.request("GET", "/").json() == {"ok": True}
    return conn


def test_one_connection_serves_a_call_and_closing_it_ends_it(server: CountingServer) -> None:
    one_call(server).close()
    one_call(server).close()
    assert server.accepted == 2  # keep-alive within a call, nothing kept after it


def test_a_connection_kept_between_calls_is_reused(server: CountingServer) -> None:
    """The node daemon keeps a store open between calls, and with it the store's connection."""
    conn = one_call(server)
    for _ in range(4):
        one_call(server, conn)
    assert server.accepted == 1


def test_a_kept_connection_closed_by_the_server_is_replaced(server: CountingServer) -> None:
    conn = one_call(server)
    assert conn._sock is not None
    conn._sock.shutdown(socket.SHUT_RDWR)  # as if the server had timed the idle connection out
    one_call(server, conn)
    assert server.accepted == 2


@pytest.fixture
def raw() -> Iterator[RawHTTPServer]:
    srv = RawHTTPServer()
    yield srv
    srv.close()


# (method, path, headers): each could end the request line or a header early, or split the path
UNSAFE = {
    "path-crlf-second-request": ("GET", "/a HTTP/1.1\r\nHost: x\r\n\r\nDELETE /b", {}),
    "path-lf": ("GET", "/a\nDELETE /b HTTP/1.1", {}),
    "path-cr": ("GET", "/a\rb", {}),
    "path-nul": ("GET", "/a\x00b", {}),
    "path-del-char": ("GET", "/a\x7fb", {}),
    "path-space": ("GET", "/a b", {}),
    "path-tab": ("GET", "/a\tb", {}),
    "path-non-ascii": ("GET", "/b\u00e4", {}),
    "path-not-absolute": ("GET", "http://elsewhere/", {}),
    "method-crlf": ("GET /x HTTP/1.1\r\n\r\nDELETE", "/", {}),
    "method-space": ("GET /", "/", {}),
    "header-name-crlf": ("GET", "/", {"X-A\r\nX-B": "v"}),
    "header-name-colon": ("GET", "/", {"X-A: y\r\nX-B": "v"}),
    "header-name-space": ("GET", "/", {"X A": "v"}),
    "header-value-crlf": ("GET", "/", {"Authorization": "Bearer secret\r\nX-Evil: 1"}),
    "header-value-lf": ("GET", "/", {"Authorization": "Bearer secret\nGET /b HTTP/1.1"}),
    "header-value-nul": ("GET", "/", {"Authorization": "Bearer secret\x00"}),
    "header-value-control": ("GET", "/", {"Authorization": "Bearer secret\x1b"}),
}


@pytest.mark.parametrize(("method", "path", "headers"), UNSAFE.values(), ids=UNSAFE.keys())
def test_unsafe_request_heads_are_refused_before_anything_is_sent(
    raw: RawHTTPServer, method: str, path: str, headers: dict[str, str]
) -> None:
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", raw.port))
    with pytest.raises(ValueError) as refused:
        conn.request(method, path, None, headers)
    assert "secret" not in str(refused.value)  # a header value may be a credential: never quoted
    if method == "GET":
        with pytest.raises(ValueError):
            list(conn.stream(path, headers))
    conn.close()
    raw.wait_idle()
    assert raw.connections == 0 and raw.received == b""  # refused before connecting


def test_an_unsafe_host_is_refused() -> None:
    with pytest.raises(ValueError):
        HTTPConnection(Endpoint("http", "127.0.0.1\r\nX-Evil: 1", 80))


def test_safe_requests_go_out_as_one_request_line_each(raw: RawHTTPServer) -> None:
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", raw.port))
    assert conn.request("GET", "/a/b%0D%0A?x=1", None, {"Authorization": "Bearer abc.DEF-_~+/="}).status == 404
    assert conn.request("POST", "/c", {"k": "v\r\n"}).status == 404  # a body may hold anything: it is JSON
    conn.close()
    raw.wait_idle()
    assert raw.requests == ["GET /a/b%0D%0A?x=1 HTTP/1.1", "POST /c HTTP/1.1"]


# --- parse_endpoint: etcd_host entries, kubeconfig servers, the in-cluster service address -----------------

ENDPOINTS = {
    "host-port": ("127.0.0.1:2379", False, 2379, Endpoint("http", "127.0.0.1", 2379)),
    "host-port-tls": ("127.0.0.1:2379", True, 2379, Endpoint("https", "127.0.0.1", 2379)),
    "name": ("etcd.example:2379", False, 2379, Endpoint("http", "etcd.example", 2379)),
    "no-port": ("etcd.example", False, 2379, Endpoint("http", "etcd.example", 2379)),
    "no-port-kube": ("kube.example", True, 443, Endpoint("https", "kube.example", 443)),
    "url-over-tls-flag": ("http://h:1", True, 2379, Endpoint("http", "h", 1)),  # the URL's scheme wins
    "https-url": ("https://h:6443", False, 2379, Endpoint("https", "h", 6443)),
    "url-no-port": ("https://h", False, 443, Endpoint("https", "h", 443)),
    "url-path-dropped": ("https://h:6443/prefix/api", False, 2379, Endpoint("https", "h", 6443)),
    "ipv6": ("[::1]:2379", False, 2379, Endpoint("http", "::1", 2379)),
    "ipv6-no-port": ("[fd00::5]", False, 2379, Endpoint("http", "fd00::5", 2379)),
    "ipv6-url": ("https://[fd00::5]:6443/", False, 2379, Endpoint("https", "fd00::5", 6443)),
    "ipv6-empty-port": ("[::1]:", False, 2379, Endpoint("http", "::1", 2379)),
    "port-leading-zeros": ("h:02379", False, 2379, Endpoint("http", "h", 2379)),
    "highest-port": ("h:65535", False, 2379, Endpoint("http", "h", 65535)),
}


@pytest.mark.parametrize(("text", "tls", "port", "expected"), ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_parse_endpoint(text: str, tls: bool, port: int, expected: Endpoint) -> None:
    assert transport.parse_endpoint(text, tls=tls, default_port=port) == expected


NOT_ENDPOINTS = {
    "empty": "",
    "scheme-only": "http://",
    "other-scheme": "ftp://h:1",
    "unix-scheme": "unix:///run/etcd.sock",
    "no-host": ":2379",
    "port-not-a-number": "h:abc",
    "signed-port": "h:+1",
    "negative-port": "h:-1",
    "port-zero": "h:0",
    "port-too-large": "h:65536",
    "port-far-too-large": "h:99999999999999999999",
    "arabic-indic-digit-port": "h:\u0663",  # int() reads it as 3
    "superscript-port": "h:\u00b2",
    "bare-ipv6": "fd00::5",  # host 'fd00:' port 5? Brackets say where the address ends
    "bare-ipv6-loopback": "::1",
    "two-ports": "h:1:2",
    "unclosed-bracket": "[::1",
    "junk-after-bracket": "[::1]x:1",
    "empty-brackets": "[]:1",
    "userinfo": "user:pw@h:1",
    "space-in-host": "h x:1",
    "trailing-space": "h:1 ",
    "crlf-in-host": "h\r\n:1",
    "non-ascii-host": "h\u00e4:1",
}


@pytest.mark.parametrize("text", NOT_ENDPOINTS.values(), ids=NOT_ENDPOINTS.keys())
def test_parse_endpoint_refuses_what_is_no_endpoint(text: str) -> None:
    with pytest.raises(ValueError):
        transport.parse_endpoint(text, tls=False)


def within(seconds: float, call: Callable[[], object]) -> tuple[BaseException | None, float]:
    """Run `call` on a thread of its own: (what it raised, None if nothing; the seconds it took). Fails the test
    when it is still running after `seconds` (the thread is left behind: a daemon, and its server goes)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # reported to the test
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    return outcome[0], time.monotonic() - started


SLOW_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n" + b"{}".ljust(40)


@pytest.mark.parametrize("answer", [SLOW_HEAD, b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100],
                         ids=["head-and-body", "endless-head"])  # fmt: skip
def test_a_slow_drip_server_cannot_hold_a_request_past_its_timeout(answer: bytes) -> None:
    """A byte every half second keeps each read alive: the timeout bounds the whole answer, not each read of it
    (a server sending a byte a second held a CNI call for as long as it liked)."""
    server = AnsweringServer(answer, drip=0.5, close=False)
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", server.port), timeout=2.0)
    try:
        raised, took = within(10, lambda: conn.request("POST", "/v3/kv/range", {}))
    finally:
        conn.close()
        server.close()
    assert isinstance(raised, TimeoutError), raised
    assert 1.9 < took < 3.0


def test_a_request_answered_within_its_timeout_is_not_cut_by_it() -> None:
    """The answer's bytes come slowly but in time: read whole."""
    server = AnsweringServer(SLOW_HEAD[:60] + SLOW_HEAD[60:], drip=0.01)
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", server.port), timeout=5.0)
    try:
        assert conn.request("POST", "/v3/kv/range", {}).json() == {}
    finally:
        conn.close()
        server.close()


GARBAGE = {
    "no-status": (b"HTTP/1.1\r\n\r\n", ValueError),
    "not-http": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", ValueError),
    "status-not-a-number": (b"HTTP/1.1 OK fine\r\n\r\n", ValueError),
    "content-length-huge": (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999\r\n\r\n{}", ValueError),
    "content-length-negative": (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}", ValueError),
    "content-length-garbage": (b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n{}", ValueError),
    "head-too-big": (b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"x" * 70000 + b"\r\n\r\n", ValueError),
    "short-body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"header\":{}}", ConnectionError),
    "head-cut-off": (b"HTTP/1.1 200 OK\r\nContent-Le", ConnectionError),
    "chunk-size-garbage": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", ValueError),
    "chunk-huge": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n{}", ValueError),
    "chunks-cut-off": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{}", ConnectionError),
}  # fmt: skip


@pytest.mark.parametrize(("answer", "error"), GARBAGE.values(), ids=GARBAGE.keys())
def test_an_answer_that_is_no_http_or_too_big_is_a_clear_error(answer: bytes, error: type[Exception]) -> None:
    """ValueError (garbled, or bigger than allowed: refused before it is held in memory) or ConnectionError (cut
    short): the errors the stores map to code 11, never an IndexError or a MemoryError (code 100)."""
    server = AnsweringServer(answer)
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", server.port), timeout=5.0)
    try:
        raised, _ = within(10, lambda: conn.request("POST", "/v3/kv/range", {}))
    finally:
        conn.close()
        server.close()
    assert type(raised) is error or (error is ConnectionError and isinstance(raised, ConnectionError)), repr(raised)


def test_a_body_bigger_than_the_limit_is_refused_as_it_comes() -> None:
    """A body sent without a length (until the server closes) is bounded too."""
    server = AnsweringServer(b"HTTP/1.1 200 OK\r\n\r\n" + b" " * 5000)
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", server.port), max_body=1000)
    try:
        with pytest.raises(ValueError, match="exceeds 1000"):
            conn.request("GET", "/")
    finally:
        conn.close()
        server.close()
