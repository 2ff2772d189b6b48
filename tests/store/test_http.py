"""The remote stores' HTTP client: keep-alive within a call, connections kept across calls in the node
daemon, and a kept connection the server has closed meanwhile replaced without the caller noticing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from whereabouts.store import http
from whereabouts.store.http import Endpoint, HTTPConnection


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


@pytest.fixture
def kept() -> Iterator[None]:
    http.keep_connections()
    yield
    http._idle = None  # back to a CNI process's behaviour


def one_call(srv: CountingServer) -> None:
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", srv.server_address[1]))
    for _ in range(3):
        assert conn.request("GET", "/").json() == {"ok": True}
    conn.release()


def test_a_cni_process_uses_one_connection_per_call(server: CountingServer) -> None:
    one_call(server)
    one_call(server)
    assert server.accepted == 2  # keep-alive within a call, nothing kept after it


def test_the_node_daemon_keeps_connections_between_calls(server: CountingServer, kept: None) -> None:
    for _ in range(5):
        one_call(server)
    assert server.accepted == 1


def test_a_kept_connection_closed_by_the_server_is_replaced(server: CountingServer, kept: None) -> None:
    one_call(server)
    for sock, _ in http._idle[(Endpoint("http", "127.0.0.1", server.server_address[1]), http.TLSSettings())]:
        sock.shutdown(socket.SHUT_RDWR)  # as if the server had timed the idle connection out
    one_call(server)
    assert server.accepted == 2


def test_a_failed_connection_is_never_kept(server: CountingServer, kept: None) -> None:
    conn = HTTPConnection(Endpoint("http", "127.0.0.1", server.server_address[1]))
    conn.request("GET", "/")
    conn.close()  # a call that hit an error closes, it does not release
    assert not any(http._idle.values())
