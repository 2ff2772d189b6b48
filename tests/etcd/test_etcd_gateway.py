"""The etcd JSON gateway's error mapping, against a scripted loopback HTTP server: every answer that is not a
JSON object of success becomes EtcdError (which the store turns into code 11), every network failure
TryAgainLater naming the endpoints tried; failover to the next endpoint, and one re-authentication when
etcd says the token expired."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from etcd_server import free_port
from whereabouts.errors import TryAgainLater
from whereabouts.kube.transport import Endpoint
from whereabouts.store.etcd import EtcdStore
from whereabouts.store.etcd_gateway import EtcdError, EtcdGateway


class ScriptedServer(ThreadingHTTPServer):
    """Answers each POST with the next (status, body) of `answers`; records (path, Authorization) of each."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.answers: list[tuple[int, bytes]] = []
        self.seen: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("http", "127.0.0.1", self.server_address[1])


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, self.headers.get("Authorization") or ""))
        status, body = self.server.answers.pop(0) if self.server.answers else (200, b"{}")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def dead_endpoint() -> Endpoint:
    return Endpoint("http", "127.0.0.1", free_port())  # nobody listens: connection refused at once


ERRORS = {
    "grpc-error": (400, b'{"error":"etcdserver: mvcc: required revision has been compacted","code":11}',
                   "etcdserver: mvcc: required revision has been compacted"),
    "message": (401, b'{"message":"etcdserver: user name is empty"}', "etcdserver: user name is empty"),
    "neither-key": (404, b'{"code":5}', "{'code': 5}"),
    "plain-text": (500, b"upstream failed\n", "upstream failed"),
    "empty": (502, b"", ""),
    "not-utf8": (503, b"\xff\xfebad", "\ufffd\ufffdbad"),
    "json-list": (400, b'["forbidden"]', "['forbidden']"),
    "json-string": (403, b'"forbidden"', "forbidden"),
    "json-number": (500, b"42", "42"),
}  # fmt: skip


@pytest.mark.parametrize(("status", "body", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_an_error_answer_is_etcd_error_with_its_message(
    server: ScriptedServer, status: int, body: bytes, message: str
) -> None:
    server.answers = [(status, body)]
    with pytest.raises(EtcdError) as caught:
        EtcdGateway([server.endpoint]).call("kv/range", {})
    assert (caught.value.status, caught.value.message) == (status, message)


@pytest.mark.parametrize(
    "body",
    [b"<html>proxy page</html>", b'["a list"]', b'"a string"', b"null", b'{"truncated":'],
    ids=["html", "json-list", "json-string", "json-null", "truncated"],
)
def test_a_success_answer_that_is_no_json_object_is_etcd_error(server: ScriptedServer, body: bytes) -> None:
    """Callers read the answer as a JSON object: anything else (a proxy's page, a cut-off body) is an
    error answer, not a crash in the caller."""
    server.answers = [(200, body)]
    with pytest.raises(EtcdError) as caught:
        EtcdGateway([server.endpoint]).call("kv/range", {})
    assert caught.value.status == 200


@pytest.mark.parametrize(("status", "body"), [(400, b'{"error":"bad"}'), (200, b"<html>")], ids=["error", "no-json"])
def test_the_store_maps_etcd_errors_to_code_11_naming_the_request(
    server: ScriptedServer, status: int, body: bytes
) -> None:
    server.answers = [(status, body)]
    store = EtcdStore(EtcdGateway([server.endpoint]), prefix="/p")
    with pytest.raises(TryAgainLater) as caught:
        store.check_ready()
    assert caught.value.code == 11 and "etcd refused kv/range" in caught.value.msg


def test_unreachable_endpoints_are_code_11_naming_each(server: ScriptedServer) -> None:
    dead = [dead_endpoint(), dead_endpoint()]
    with pytest.raises(TryAgainLater) as caught:
        EtcdGateway(dead, timeout=2).call("kv/range", {})
    assert caught.value.code == 11 and all(e.url in caught.value.msg for e in dead)


def test_failover_to_the_endpoint_that_answers_and_keep_it_first(server: ScriptedServer) -> None:
    dead = dead_endpoint()
    gateway = EtcdGateway([dead, server.endpoint], timeout=2)
    server.answers = [(200, b'{"header":{"revision":"7"}}')]
    assert gateway.call("kv/range", {}) == {"header": {"revision": "7"}}
    assert [c.endpoint for c in gateway.connections] == [server.endpoint, dead]  # tried first next time
    gateway.call("kv/range", {})
    assert len(server.seen) == 2


def test_an_error_answer_is_not_failed_over(server: ScriptedServer) -> None:
    """etcd answered: another member would answer the same, and a write must not be sent twice."""
    other = ScriptedServer()
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        server.answers = [(400, b'{"error":"etcdserver: duplicate key given in txn request"}')]
        with pytest.raises(EtcdError):
            EtcdGateway([server.endpoint, other.endpoint]).call("kv/txn", {})
        assert other.seen == []
    finally:
        other.shutdown()
        other.server_close()


def test_an_expired_token_is_renewed_once(server: ScriptedServer) -> None:
    server.answers = [
        (200, b'{"token":"t1"}'),  # auth/authenticate
        (401, b'{"error":"etcdserver: invalid auth token"}'),  # t1 expired
        (200, b'{"token":"t2"}'),  # auth/authenticate again
        (200, b'{"kvs":[]}'),  # the call, once more, with t2
    ]
    gateway = EtcdGateway([server.endpoint], username="u", password="p")
    assert gateway.call("kv/range", {}) == {"kvs": []}
    assert server.seen == [
        ("/v3/auth/authenticate", ""),
        ("/v3/kv/range", "t1"),
        ("/v3/auth/authenticate", ""),
        ("/v3/kv/range", "t2"),
    ]


def test_a_token_refused_again_after_renewal_is_an_error(server: ScriptedServer) -> None:
    refused = (401, b'{"error":"etcdserver: invalid auth token"}')
    server.answers = [(200, b'{"token":"t1"}'), refused, (200, b'{"token":"t2"}'), refused]
    with pytest.raises(EtcdError, match="invalid auth token"):
        EtcdGateway([server.endpoint], username="u", password="p").call("kv/range", {})
    assert len(server.seen) == 4  # renewed once, not in a loop


def test_other_errors_are_not_retried_with_a_new_token(server: ScriptedServer) -> None:
    server.answers = [(200, b'{"token":"t1"}'), (400, b'{"error":"etcdserver: permission denied"}')]
    with pytest.raises(EtcdError, match="permission denied"):
        EtcdGateway([server.endpoint], username="u", password="p").call("kv/range", {})
    assert len(server.seen) == 2


def test_without_a_username_no_authentication_is_attempted(server: ScriptedServer) -> None:
    EtcdGateway([server.endpoint]).call("kv/range", {})
    assert server.seen == [("/v3/kv/range", "")]
