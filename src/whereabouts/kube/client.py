"""A thin REST client for the API server: JSON objects in and out, errors mapped in one place.

Every failure to get an answer (connection refused, timeout, TLS) and every unexpected status becomes
APIError, a TryAgainLater (code 11) naming the request; 404 and 409 are normal outcomes that callers branch on.
A 404 says "not there" only when the API server said it (a metav1 Status, reason NotFound; for `get(...,
named=True)`, one whose details name the very object asked for): a proxy or a wrong server path that answers 404
to everything says nothing of the object, and taking it for "gone" would free a live pod's addresses.

The credentials' files are followed, as client-go follows them: looked at (a stat) at most every CHECK
seconds and read again when they changed, and at least every REREAD seconds; a 401 reads them again at once
and, if that gave other credentials, the request is made once more. A bound service-account token expires
and the kubelet rewrites its file; install-cni rewrites the kubeconfig: a client living for months follows.
"""

from __future__ import annotations

import json
import time

from whereabouts.errors import InvalidConfig, TryAgainLater
from whereabouts.kube.credentials import Credentials, load_credentials
from whereabouts.kube.resources import GROUP, VERSION
from whereabouts.kube.transport import HTTPConnection, Response
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: a CNI process pays for every import
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

CHECK = 1.0  # seconds between looks at the credentials' files (one stat each)
REREAD = 60.0  # seconds: the files are read again at least this often, changed or not (client-go's period)
MAX_BODY = 1 << 30  # bytes of one answer: a list of a large cluster's reservations or pods, unpaged, fits


class APIError(TryAgainLater):
    """The API server could not be reached (`status` 0) or answered `status` to a request on `path`. Callers
    that must tell an outage from a missing CRD (404 on a collection) or refused credentials look at both."""

    def __init__(self, msg: str, *, status: int = 0, path: str = "") -> None:
        super().__init__(msg)
        self.status, self.path = status, path


class Conflict(Exception):
    """The write lost a race: 409 (stale resourceVersion, or the object already exists), or a JSON patch
    whose `test` guard failed (the value it was written against changed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "Conflict", "AlreadyExists" or "TestFailed"


class Expired(Exception):
    """A watch's resourceVersion is too old for the API server (410 Gone): list again."""


@record(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


class KubeClient:
    def __init__(self, credentials: Credentials, *, timeout: float = 10.0) -> None:
        self.credentials = credentials
        self.namespace = credentials.namespace  # fixed for the client's life, whatever a re-read says
        self.timeout = timeout
        self.conn = HTTPConnection(credentials.endpoint, tls=credentials.tls, timeout=timeout, max_body=MAX_BODY)
        self.headers = _headers(credentials)
        self.requests = 0
        self.checked_at = -CHECK  # the first request looks: the credentials given may be old already
        self.reload_error = ""  # why the last re-read failed ("" if it did not)
        self.streams: set[HTTPConnection] = set()  # the watches' connections open now (see `interrupt`)
        self.interrupted = False

    def reload(self) -> bool:
        """Read the credentials' files again; True when that changed what is sent (the token, the server).
        A file that cannot be read or parsed now (being rewritten?) leaves the credentials as they were."""
        if self.credentials.origin is None:
            return False  # made in memory: nothing to read
        try:
            fresh = load_credentials(self.credentials.origin)
        except InvalidConfig as exc:
            self.reload_error = exc.msg
            return False
        self.reload_error = ""
        old, self.credentials = self.credentials, fresh
        if (fresh.endpoint, fresh.tls) != (old.endpoint, old.tls):
            self.conn.close()
            self.conn = HTTPConnection(fresh.endpoint, tls=fresh.tls, timeout=self.timeout, max_body=MAX_BODY)
        self.headers = _headers(fresh)
        return _sent(fresh) != _sent(old)

    def _follow_files(self) -> None:
        """Before a request: read the credentials again when their files changed, or every REREAD seconds."""
        now = time.monotonic()
        if now - self.checked_at < CHECK:
            return
        self.checked_at = now
        if self.credentials.changed() or now - self.credentials.read_at >= REREAD:
            self.reload()

    def path(self, plural: str, name: str = "", *, group: str = GROUP, version: str = VERSION) -> str:
        """A whereabouts resource in the pools' namespace."""
        return self.resource(plural, name, group=group, version=version, namespace=self.namespace)

    def resource(
        self, plural: str, name: str = "", *, group: str = "", version: str = "v1", namespace: str = ""
    ) -> str:
        """Any resource: `group` "" is the core API; `namespace` "" is cluster-scoped (or, for a list of a
        namespaced resource, every namespace). Every segment is percent-encoded: a name can never end the
        request line or climb to another API path."""
        api = f"/apis/{_segment(group)}/{_segment(version)}" if group else f"/api/{_segment(version)}"
        scope = f"/namespaces/{_segment(namespace)}" if namespace else ""
        base = f"{self.credentials.base_path}{api}{scope}/{_segment(plural)}"
        return f"{base}/{_segment(name)}" if name else base

    def list_with_version(self, path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        """The items and the list's resourceVersion (where a watch resumes from)."""
        reply = self._ok(self._send("GET", path + _query(params)), "LIST", path)
        return reply.get("items", []), reply.get("metadata", {}).get("resourceVersion", "")

    def watch(self, path: str, resource_version: str, *, timeout: int = 300, **params: str) -> Iterator[Event]:
        """Events after `resource_version` until the server ends the watch (`timeout` seconds). Raises
        Expired when that version is too old (410 Gone): list again, then watch from the new version."""
        query = _query({**params, "watch": "true", "resourceVersion": resource_version,
                        "timeoutSeconds": str(timeout), "allowWatchBookmarks": "true"})  # fmt: skip
        self._follow_files()
        conn: HTTPConnection | None = None
        try:
            conn, lines = self._stream(path + query, timeout + 30)
            for line in lines:
                if conn.last_status >= 300:
                    message = f"kubernetes API refused WATCH {path}: {conn.last_status} {line[:200]!r}"
                    raise APIError(message + self._why_refused(conn.last_status), status=conn.last_status, path=path)
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    code = event.get("object", {}).get("code")
                    if code == 410:
                        raise Expired(resource_version)
                    raise APIError(f"kubernetes API ended WATCH {path}: {event.get('object')}", status=500, path=path)
                yield Event(event["type"], event["object"])
        except (OSError, ValueError) as exc:
            raise APIError(f"kubernetes API {self.credentials.endpoint.url} WATCH {path}: {exc}", path=path) from exc
        finally:
            if conn is not None:
                self._end_stream(conn)

    def _stream(self, target: str, timeout: float) -> tuple[HTTPConnection, Iterable[bytes]]:
        """A watch request's connection and its lines; refused with 401, made once more if reading the
        credentials again changed them."""
        for attempt in (1, 2):
            conn = HTTPConnection(
                self.credentials.endpoint, tls=self.credentials.tls, timeout=timeout, max_body=MAX_BODY
            )
            self.streams.add(conn)
            if self.interrupted:  # (after adding it: `interrupt` either sees it, or is seen here)
                conn.interrupt()
            self.requests += 1
            try:
                lines = conn.stream(target, self.headers)
                first = next(lines, b"")
            except BaseException:
                self._end_stream(conn)
                raise
            if conn.last_status == 401 and attempt == 1 and self.reload():
                self._end_stream(conn)
                continue
            break
        return conn, _chain(first, lines)

    def _end_stream(self, conn: HTTPConnection) -> None:
        self.streams.discard(conn)
        conn.close()

    def interrupt(self) -> None:
        """From another thread: end this client's watches, those being read now and any begun after (a
        stopping informer's thread waits in one for up to a minute); their readers see them fail."""
        self.interrupted = True
        for conn in list(self.streams):
            conn.interrupt()

    def get(self, path: str, *, named: bool = False) -> dict[str, Any] | None:
        """The object, None when the API server says there is none. `named`: only when its answer names this
        object (details kind and name), as a pod's does; not the answer for a kind it does not serve."""
        response = self._send("GET", path)
        return None if self._absent(response, "GET", path, named=named) else self._ok(response, "GET", path)

    def list(self, path: str, label_selector: str = "", *, cached: bool = False) -> list[dict[str, Any]]:
        """`cached`: served from the API server's watch cache (resourceVersion=0), not a quorum read."""
        params = {"labelSelector": label_selector, "resourceVersion": "0" if cached else ""}
        return self.list_with_version(path, **params)[0]

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._ok(self._send("POST", path, obj), "POST", path)

    def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._ok(self._send("PUT", path, obj), "PUT", path)

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """An RFC 7386 JSON merge patch (for metadata, status, and objects whose fields are not contended)."""
        response = self._send("PATCH", path, body, content_type="application/merge-patch+json")
        return self._ok(response, "PATCH", path)

    def merge_patch_existing(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A merge patch of an object that may not exist: None on 404."""
        response = self._send("PATCH", path, body, content_type="application/merge-patch+json")
        return None if self._absent(response, "PATCH", path) else self._ok(response, "PATCH", path)

    def patch(self, path: str, operations: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """An RFC 6902 JSON patch, applied by the API server atomically to the object's current state."""
        patched = self.patch_existing(path, operations)
        if patched is None:
            raise TryAgainLater(f"kubernetes API: PATCH {path}: 404 not found")
        return patched

    def patch_existing(self, path: str, operations: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """`patch` of an object that may not exist: None on 404."""
        response = self._send("PATCH", path, operations, content_type="application/json-patch+json")
        if self._absent(response, "PATCH", path):
            return None
        if response.status == 422 and not _status(response).get("details", {}).get("causes"):
            raise Conflict("TestFailed")  # a `test` operation failed: no field-level causes, unlike validation
        return self._ok(response, "PATCH", path)

    def delete(self, path: str, resource_version: str = "") -> bool:
        """False when there was nothing to delete."""
        body = {"preconditions": {"resourceVersion": resource_version}} if resource_version else None
        response = self._send("DELETE", path, body)
        if self._absent(response, "DELETE", path):
            return False
        self._ok(response, "DELETE", path)
        return True

    def _send(self, method: str, path: str, body: object = None, content_type: str = "") -> Response:
        self._follow_files()
        response = self._exchange(method, path, body, content_type)
        if response.status == 401 and self.reload():  # once: the credentials read again may be refused too
            response = self._exchange(method, path, body, content_type)
        return response

    def _exchange(self, method: str, path: str, body: object, content_type: str) -> Response:
        self.requests += 1
        headers = {**self.headers, "Content-Type": content_type} if content_type else self.headers
        try:
            return self.conn.request(method, path, body, headers)
        except (OSError, ValueError) as exc:
            self.conn.close()
            reason = f"{method} {path}: {exc or type(exc).__name__}"
            url = self.credentials.endpoint.url
            raise APIError(f"kubernetes API {url} unreachable ({reason})", path=path) from exc

    def _ok(self, response: Response, method: str, path: str) -> dict[str, Any]:
        if response.status == 409:
            raise Conflict(_status(response).get("reason", "Conflict"))
        if response.status >= 300:
            status = _status(response)
            message = status.get("message") or response.body[:200].decode(errors="replace")
            message = f"kubernetes API refused {method} {path}: {response.status} {message}"
            raise APIError(message + self._why_refused(response.status), status=response.status, path=path)
        obj: dict[str, Any] = response.json()  # every call above answers with an object
        return obj

    def _absent(self, response: Response, method: str, path: str, *, named: bool = False) -> bool:
        """Whether the API server said the object at `path` does not exist; APIError for a 404 it did not give
        (any other status: False, for `_ok` to judge)."""
        if response.status != 404:
            return False
        if not _not_found(_status(response), path, named=named):
            self._ok(response, method, path)  # raises: a 404 that says nothing of the object
        return True

    def _why_refused(self, status: int) -> str:
        if status != 401 or not self.reload_error:
            return ""
        return f" (the credentials could not be read again: {self.reload_error})"

    def close(self) -> None:
        self.conn.close()


def _headers(credentials: Credentials) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "whereabouts-py"}
    if credentials.token:
        headers["Authorization"] = f"Bearer {credentials.token}"
    elif credentials.basic:
        headers["Authorization"] = f"Basic {credentials.basic}"
    return headers


def _sent(credentials: Credentials) -> tuple[object, ...]:
    """What of the credentials reaches the server: a re-read that changed none of it changes nothing."""
    return credentials.endpoint, credentials.tls, credentials.token, credentials.basic


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _status(response: Response) -> dict[str, Any]:
    try:
        status = json.loads(response.body)
        return status if isinstance(status, dict) else {}
    except ValueError:
        return {}


def _not_found(status: dict[str, Any], path: str, *, named: bool) -> bool:
    """A metav1 Status saying NotFound; `named`: whose details name the resource and the object `path` ends with
    (the API server's answer for an object of a kind it serves, not for a path or a kind it does not know)."""
    if status.get("kind") != "Status" or status.get("reason") != "NotFound":
        return False
    if not named:
        return True
    details = status.get("details")
    segments = path.partition("?")[0].rsplit("/", 2)
    if not isinstance(details, dict) or len(segments) != 3:
        return False
    return details.get("kind") == segments[1] and _quote(str(details.get("name") or "")) == segments[2] != ""


def _query(params: dict[str, str]) -> str:
    pairs = [f"{key}={_quote(value)}" for key, value in params.items() if value]
    return "?" + "&".join(pairs) if pairs else ""


def _segment(text: str) -> str:
    """One path segment, percent-encoded. What the API server takes for no name at all (its path segment
    rule: not '.' or '..', no '/' or '%', which it would decode back into path syntax) is never sent."""
    if text in (".", "..") or "/" in text or "%" in text:
        raise InvalidConfig(f"invalid Kubernetes object name {text[:300]!r}: cannot be a path segment")
    return _quote(text)


_UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")


def _quote(text: str) -> str:
    """RFC 3986 percent-encoding of the UTF-8 bytes: only unreserved characters stay as they are."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())
