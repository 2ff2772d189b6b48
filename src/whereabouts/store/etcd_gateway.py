"""A minimal client for etcd v3's JSON gateway (`POST /v3/...`).

Why not a client library: the maintained Python clients speak gRPC, whose import alone costs more than a
whole CNI call here. This rides on `kube.transport` (sockets, json, and ssl for https endpoints only). It fails
over across the configured endpoints, authenticates with username/password (a token, renewed when etcd says
it expired), and maps every network failure to TryAgainLater (code 11) within `timeout` seconds per endpoint.

What counts as an endpoint's failure, tried again on the next endpoint: no connection, no whole answer in time,
an answer that is no HTTP or too big, a 5xx or gRPC code 14 (UNAVAILABLE: a learner, a member without a leader,
a proxy without a backend), or a success that is no etcd reply (a JSON object with its `header`). When every
endpoint failed, TryAgainLater naming each. Resending a write to the next member is safe: every transaction
the store sends is guarded by compares, so one that the first member did apply after all fails its compares
and is decided again from a fresh read. Any other error answer (a compare's, a permission's) is etcd's
verdict, which another member would give as well: EtcdError, not failed over.

Authentication as the Go plugin's etcd client does it: only with both a username and a password, and an etcd
that says authentication is not enabled is then used without a token.
"""

from __future__ import annotations

import base64
import json

from whereabouts.errors import InvalidConfig, TryAgainLater
from whereabouts.kube.transport import Endpoint, HTTPConnection, TLSFileError, TLSSettings, parse_endpoint

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EtcdError", "EtcdGateway", "b64", "parse_endpoint", "unb64"]


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


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
        tls: TLSSettings | None = None,
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
    ) -> None:
        self.connections = [HTTPConnection(e, tls=tls, timeout=timeout) for e in endpoints]
        self.username, self.password = username, password
        self._token = ""
        self._auth_off = False  # etcd said authentication is not enabled: calls go without a token

    @property
    def authenticates(self) -> bool:
        """As the Go plugin: a username alone (or a password alone) is no credential, and is not sent."""
        return bool(self.username and self.password)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v3/<path>; authenticates first when a username and a password are configured."""
        if self.authenticates and not self._token and not self._auth_off:
            self._authenticate()
        try:
            return self._call_any(path, body)
        except EtcdError as exc:
            # an expired or revoked token, or authentication turned on since it said off: authenticate, once
            if self.authenticates and ("token" in exc.message or (self._auth_off and "user name" in exc.message)):
                self._auth_off = False
                self._authenticate()
                return self._call_any(path, body)
            raise

    def _authenticate(self) -> None:
        self._token = ""
        try:
            reply = self._call_any("auth/authenticate", {"name": self.username, "password": self.password})
        except EtcdError as exc:
            if "authentication is not enabled" not in exc.message:
                raise
            self._auth_off = True  # (etcd's ErrAuthNotEnabled: its Go client goes on without a token too)
            return
        self._token = str(reply.get("token", ""))

    def _call_any(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors, unusable = [], []
        failure: BaseException | None = None  # (the last: a daemon out of descriptors sees it in the chain)
        headers = {"Authorization": self._token} if self._token else {}
        for index, conn in enumerate(self.connections):
            try:
                response = conn.request("POST", f"/v3/{path}", body, headers)
            except TLSFileError as exc:
                unusable.append(str(exc))
                continue
            except (OSError, ValueError) as exc:
                conn.close()
                errors.append(f"{conn.endpoint.url}: {exc or type(exc).__name__}")
                failure = exc
                continue
            if response.status != 200:
                error = EtcdError(response.status, _error_message(response.body))
                if not _unavailable(response.status, response.body):
                    raise error
                errors.append(f"{conn.endpoint.url}: {error}")  # this member cannot serve it: the next may
                continue
            reply = _etcd_reply(response.body)
            if reply is None:
                conn.close()  # whatever answers there is no etcd member
                errors.append(f"{conn.endpoint.url}: no etcd reply: {_error_message(response.body)[:200]!r}")
                continue
            if index:  # this endpoint answered: try it first next time
                self.connections.insert(0, self.connections.pop(index))
            return reply
        if unusable and not errors:  # the config's TLS files, not the servers: no retry mends them
            raise InvalidConfig(f"etcd: {unusable[0]} (etcd_ca_cert_file, etcd_cert_file, etcd_key_file)")
        raise TryAgainLater(f"etcd unreachable ({'; '.join(errors + unusable)})") from failure

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def _unavailable(status: int, body: bytes) -> bool:
    """An error answer this member gives but another may not: a 5xx (an overloaded member, a proxy without a
    backend), or gRPC's code 14 UNAVAILABLE (a learner, no leader, a request that timed out in raft)."""
    if status >= 500:
        return True
    try:
        reply = json.loads(body)
    except ValueError:
        return False
    return isinstance(reply, dict) and reply.get("code") == 14


def _etcd_reply(body: bytes) -> dict[str, Any] | None:
    """A success answer's JSON object, which every etcd reply is, with its `header`; None for anything else
    (a proxy's page, a cut-off body, `{}`): the callers read fields of an etcd reply."""
    try:
        reply = json.loads(body)
    except ValueError:
        return None
    if not isinstance(reply, dict) or not isinstance(reply.get("header"), dict):
        return None
    return reply


def _error_message(body: bytes) -> str:
    try:
        reply = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    if isinstance(reply, dict):
        return str(reply.get("error") or reply.get("message") or reply)
    return str(reply)
