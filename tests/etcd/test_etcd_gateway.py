"""The etcd JSON gateway's error mapping, against a scripted loopback HTTP server: etcd's error answers become
EtcdError (which the store turns into code 11); every endpoint failure (no connection, a 5xx or gRPC code 14,
an answer that is no HTTP or no etcd reply) is failed over to the next endpoint, and when all failed is
TryAgainLater naming each; one re-authentication when etcd says the token expired; credentials sent only when
both a username and a password are set."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from etcd_server import EtcdServer, free_port
from raw_http import AnsweringServer
from whereabouts.config import parse_ipam
from whereabouts.errors import TryAgainLater
from whereabouts.kube.transport import Endpoint, parse_endpoint
from whereabouts.model import Owner
from whereabouts.service import IPAMService
from whereabouts.store.etcd import EtcdStore, open_etcd
from whereabouts.store.etcd_gateway import EtcdError, EtcdGateway

REPLY = b'{"header":{"revision":"1"}}'  # the least an etcd reply is: every one has its header


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
        status, body = self.server.answers.pop(0) if self.server.answers else (200, REPLY)
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
    "plain-text": (400, b"bad request\n", "bad request"),
    "empty": (412, b"", ""),
    "not-utf8": (400, b"\xff\xfebad", "\ufffd\ufffdbad"),
    "json-list": (400, b'["forbidden"]', "['forbidden']"),
    "json-string": (403, b'"forbidden"', "forbidden"),
    "json-number": (400, b"42", "42"),
}  # fmt: skip


@pytest.mark.parametrize(("status", "body", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_an_error_answer_is_etcd_error_with_its_message(
    server: ScriptedServer, status: int, body: bytes, message: str
) -> None:
    server.answers = [(status, body)]
    with pytest.raises(EtcdError) as caught:
        EtcdGateway([server.endpoint]).call("kv/range", {})
    assert (caught.value.status, caught.value.message) == (status, message)


NO_REPLIES = {
    "html": b"<html>proxy page</html>",
    "json-list": b'["a list"]',
    "json-string": b'"a string"',
    "json-null": b"null",
    "truncated": b'{"truncated":',
    "empty-object": b"{}",
    "header-no-object": b'{"header":"x"}',
}


@pytest.mark.parametrize("body", NO_REPLIES.values(), ids=NO_REPLIES.keys())
def test_a_success_answer_that_is_no_etcd_reply_is_an_endpoint_failure(server: ScriptedServer, body: bytes) -> None:
    """Callers read the answer as etcd's reply: anything else (a proxy's page, a cut-off body, `{}`) is no etcd
    member answering, code 11 naming the endpoint, not a crash in the caller (`{}` to a txn was a KeyError)."""
    server.answers = [(200, body)]
    with pytest.raises(TryAgainLater) as caught:
        EtcdGateway([server.endpoint]).call("kv/range", {})
    assert caught.value.code == 11 and server.endpoint.url in caught.value.msg and "no etcd reply" in caught.value.msg


def test_the_store_maps_etcd_errors_to_code_11_naming_the_request(server: ScriptedServer) -> None:
    server.answers = [(400, b'{"error":"bad"}')]
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
        (200, b'{"header":{},"token":"t1"}'),  # auth/authenticate
        (401, b'{"error":"etcdserver: invalid auth token"}'),  # t1 expired
        (200, b'{"header":{},"token":"t2"}'),  # auth/authenticate again
        (200, b'{"header":{},"kvs":[]}'),  # the call, once more, with t2
    ]
    gateway = EtcdGateway([server.endpoint], username="u", password="p")
    assert gateway.call("kv/range", {}) == {"header": {}, "kvs": []}
    assert server.seen == [
        ("/v3/auth/authenticate", ""),
        ("/v3/kv/range", "t1"),
        ("/v3/auth/authenticate", ""),
        ("/v3/kv/range", "t2"),
    ]


def test_a_token_refused_again_after_renewal_is_an_error(server: ScriptedServer) -> None:
    refused = (401, b'{"error":"etcdserver: invalid auth token"}')
    server.answers = [(200, b'{"header":{},"token":"t1"}'), refused, (200, b'{"header":{},"token":"t2"}'), refused]
    with pytest.raises(EtcdError, match="invalid auth token"):
        EtcdGateway([server.endpoint], username="u", password="p").call("kv/range", {})
    assert len(server.seen) == 4  # renewed once, not in a loop


def test_other_errors_are_not_retried_with_a_new_token(server: ScriptedServer) -> None:
    server.answers = [(200, b'{"header":{},"token":"t1"}'), (400, b'{"error":"etcdserver: permission denied"}')]
    with pytest.raises(EtcdError, match="permission denied"):
        EtcdGateway([server.endpoint], username="u", password="p").call("kv/range", {})
    assert len(server.seen) == 2


def test_without_a_username_no_authentication_is_attempted(server: ScriptedServer) -> None:
    EtcdGateway([server.endpoint]).call("kv/range", {})
    assert server.seen == [("/v3/kv/range", "")]


def test_a_username_without_a_password_sends_no_credentials(server: ScriptedServer) -> None:
    """As the Go plugin (its etcd client gets a username and password only when both are set): a username alone
    made every call fail on the authentication etcd refused."""
    EtcdGateway([server.endpoint], username="u").call("kv/range", {})
    EtcdGateway([server.endpoint], password="p").call("kv/range", {})
    assert server.seen == [("/v3/kv/range", ""), ("/v3/kv/range", "")]


def test_credentials_for_an_etcd_without_authentication_are_not_needed(server: ScriptedServer) -> None:
    """etcd answers authenticate with 'authentication is not enabled': go on without a token, and do not ask
    again on the next call (the Go client ignores ErrAuthNotEnabled too)."""
    not_enabled = b'{"error":"etcdserver: authentication is not enabled","code":9}'
    server.answers = [(412, not_enabled)]
    gateway = EtcdGateway([server.endpoint], username="u", password="p")
    assert gateway.call("kv/range", {}) == {"header": {"revision": "1"}}
    gateway.call("kv/range", {})
    assert server.seen == [("/v3/auth/authenticate", ""), ("/v3/kv/range", ""), ("/v3/kv/range", "")]


UNAVAILABLE = {
    "503-plain": (503, b"no healthy upstream"),
    "502-empty": (502, b""),
    "500-json": (500, b'{"error":"etcdserver: request timed out","code":14}'),
    "no-leader": (503, b'{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}'),
    "learner": (400, b'{"error":"etcdserver: rpc not supported for learner","code":14}'),
}


@pytest.mark.parametrize(("status", "body"), UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_an_unavailable_member_is_failed_over_to_the_next_endpoint(
    server: ScriptedServer, etcd: EtcdServer, status: int, body: bytes
) -> None:
    """A 5xx, or gRPC code 14 UNAVAILABLE (a learner, a member without a leader): this member cannot serve the
    call, the next may. It was an error answer, so a cluster with one such member failed every call listed first."""
    server.answers = [(status, body)]
    gateway = EtcdGateway([server.endpoint, parse_endpoint(etcd.url, tls=False)], timeout=5)
    reply = gateway.call("kv/range", {"key": "cHJvYmU="})
    assert int(reply["header"]["revision"]) >= 1
    assert len(server.seen) == 1
    assert gateway.connections[0].endpoint.port == etcd.port  # the member that answered goes first next time


@pytest.mark.parametrize(("status", "body"), UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_every_member_unavailable_is_code_11_naming_each(server: ScriptedServer, status: int, body: bytes) -> None:
    other = ScriptedServer()
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        server.answers, other.answers = [(status, body)], [(status, body)]
        with pytest.raises(TryAgainLater) as caught:
            EtcdGateway([server.endpoint, other.endpoint]).call("kv/txn", {})
        assert caught.value.code == 11
        assert server.endpoint.url in caught.value.msg and other.endpoint.url in caught.value.msg
        assert f"etcd error {status}" in caught.value.msg
    finally:
        other.shutdown()
        other.server_close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
GARBAGE = {
    "no-status": HEAD[:9] + b"\r\n\r\n",
    "huge-content-length": HEAD + b"Content-Length: 99999999999999999\r\n\r\n{}",
    "short-body": HEAD + b'Content-Length: 200\r\n\r\n{"header":{"revision":"3"},"responses":[',
    "empty-object": HEAD + b"Content-Length: 2\r\n\r\n{}",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
}


@pytest.mark.parametrize("answer", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_from_an_endpoint_is_failed_over_to_a_real_etcd(
    etcd: EtcdServer, etcd_prefix: str, answer: bytes
) -> None:
    """A garbled status line (IndexError), a Content-Length of petabytes (MemoryError), a body cut short, `{}`
    as a transaction's reply (KeyError): each was code 100 or an error with no second endpoint tried. Now the
    next endpoint serves the call."""
    garbage = AnsweringServer(answer)
    try:
        ipam = {"type": "whereabouts", "range": "10.72.0.0/24", "etcd_host": f"{garbage.url},{etcd.url}",
                "etcd_prefix": etcd_prefix}  # fmt: skip
        cfg = parse_ipam(ipam)
        assert IPAMService(open_etcd(cfg.store)).add(cfg, Owner("ctr-1", "net1")) != []
        assert garbage.requests >= 1
        assert [k for k in etcd.dump(etcd_prefix + "/") if "/pools/" in k]  # written through the real one
    finally:
        garbage.close()


@pytest.mark.parametrize("answer", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_from_the_only_endpoint_is_code_11(answer: bytes) -> None:
    garbage = AnsweringServer(answer)
    try:
        cfg = parse_ipam({"type": "whereabouts", "range": "10.72.0.0/24", "etcd_host": garbage.url})
        with pytest.raises(TryAgainLater) as caught:
            IPAMService(open_etcd(cfg.store)).add(cfg, Owner("ctr-1", "net1"))
        assert caught.value.code == 11 and garbage.url in caught.value.msg
    finally:
        garbage.close()


REPLIES = {
    "no-responses": b'{"header":{"revision":"3"}}',
    "no-header-revision": b'{"header":{},"responses":[{"response_range":{}}]}',
    "response-not-a-range": b'{"header":{"revision":"3"},"responses":[{"response_put":{}}]}',
    "key-not-base64": b'{"header":{"revision":"3"},"responses":[{"response_range":{"kvs":[{"key":"%%%"}]}}]}',
    "kvs-not-a-list": b'{"header":{"revision":"3"},"responses":[{"response_range":{"kvs":5}}]}',
}


@pytest.mark.parametrize("body", REPLIES.values(), ids=REPLIES.keys())
def test_an_etcd_reply_without_what_etcd_always_sends_is_code_11(server: ScriptedServer, body: bytes) -> None:
    """An etcd reply (it has its header) to the snapshot's read that lacks its responses, or whose keys are no
    keys of this store: code 11 naming the request, not a KeyError (code 100) in the caller."""
    server.answers = [(200, body)]
    cfg = parse_ipam({"type": "whereabouts", "range": "10.72.0.0/24", "etcd_host": server.endpoint.url})
    store = EtcdStore(EtcdGateway([server.endpoint]), prefix="/p")
    with pytest.raises(TryAgainLater) as caught:
        IPAMService(store).add(cfg, Owner("ctr-1", "net1"))
    assert caught.value.code == 11 and "etcd gave a reply to kv/txn it never gives" in caught.value.msg


def test_a_slow_drip_endpoint_is_given_up_on_at_its_timeout_and_failed_over(etcd: EtcdServer) -> None:
    """A byte a second keeps every read alive: the endpoint's timeout bounds its whole answer, and the next
    endpoint serves the call (it waited for as long as the server kept dripping)."""
    drip = AnsweringServer(HEAD + b"Content-Length: 30\r\n\r\n" + b"{}".ljust(30), drip=0.5, close=False)
    try:
        gateway = EtcdGateway([Endpoint("http", "127.0.0.1", drip.port), parse_endpoint(etcd.url, tls=False)],
                              timeout=2)  # fmt: skip
        started = time.monotonic()
        assert "header" in gateway.call("kv/range", {"key": "cHJvYmU="})
        assert 1.9 < time.monotonic() - started < 3.5
        started = time.monotonic()
        with pytest.raises(TryAgainLater, match="did not send its whole answer in time"):
            EtcdGateway([Endpoint("http", "127.0.0.1", drip.port)], timeout=2).call("kv/range", {})
        assert time.monotonic() - started < 3.5
    finally:
        drip.close()
