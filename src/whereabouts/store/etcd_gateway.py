"""A minimal client for etcd v3's JSON gateway (`POST /v3/...`).

Why not a client library: the maintained Python clients speak gRPC, whose import alone costs more than a
whole CNI call here. This rides on `store.http` (sockets, json, and ssl for https endpoints only). It fails
over across the configured endpoints, authenticates with username/password (a token, renewed when etcd says
it expired), and maps every network failure to TryAgainLater (code 11) within `timeout` seconds per endpoint.
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
            if index:  # this endpoint answered: try it first next time
                self.connections.insert(0, self.connections.pop(index))
            if response.status != 200:
                raise EtcdError(response.status, _error_message(response.body))
            return _json_object(response.status, response.body)
        if unusable and not errors:  # the config's TLS files, not the servers: no retry mends them
            raise InvalidConfig(f"etcd: {unusable[0]} (etcd_ca_cert_file, etcd_cert_file, etcd_key_file)")
        raise TryAgainLater(f"etcd unreachable ({'; '.join(errors + unusable)})") from failure

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def _json_object(status: int, body: bytes) -> dict[str, Any]:
    """A success answer's JSON object. Anything else (a proxy's page, a cut-off body) is an error answer:
    the callers read fields of an object."""
    try:
        reply = json.loads(body) if body else {}
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise EtcdError(status, f"the answer is not a JSON object: {_error_message(body)[:200]}")
    return reply


def _error_message(body: bytes) -> str:
    try:
        reply = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    if isinstance(reply, dict):
        return str(reply.get("error") or reply.get("message") or reply)
    return str(reply)
