"""Where the API server is and how to authenticate: a kubeconfig file, or the in-cluster service account.

The kubeconfig is whatever file a network config names, so it may be any file root can read. Errors name
the file and the key, never what the file says: a parse error gives only a line and column, and a token
with whitespace or control characters inside (a file that holds no token) is refused, never sent.
JSON kubeconfigs (install-cni writes them) are read with json, so a CNI call need not import PyYAML; YAML
ones are read as client-go reads them (go-yaml v2: YAML 1.1 booleans, y and n included).

Credentials remember where they came from and what their files were when read (`origin`, `read_stamp`,
`read_at`): bound service-account tokens expire and the kubelet rewrites the token file, install-cni rewrites
the kubeconfig, so a long-lived client reads them again (`KubeClient.reload`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import time
from collections.abc import Mapping  # (at run time: isinstance checks of the parsed kubeconfig)

from whereabouts.errors import InvalidConfig
from whereabouts.files import read_regular
from whereabouts.kube.transport import Endpoint, TLSSettings, parse_endpoint
from whereabouts.names import is_namespace
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: a CNI process pays for every import
if TYPE_CHECKING:
    from typing import Any, ClassVar

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_NAMESPACE = "kube-system"
MAX_FILE = 4 << 20  # a kubeconfig or token file larger than this is not one (think /dev/zero)


@record(frozen=True)
class Credentials:
    endpoint: Endpoint
    base_path: str  # a server URL may carry a path prefix
    tls: TLSSettings
    namespace: str
    token: str = ""
    basic: str = ""  # base64 user:password
    sources: tuple[str, ...] = ()  # the files read: when one changes, these credentials are stale
    origin: str | None = None  # what load_credentials read (a kubeconfig path, "" in-cluster); None: made in memory
    read_stamp: tuple[tuple[int, int, int], ...] = ()  # the sources when read
    read_at: float = 0.0  # when they were read (time.monotonic)

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What the source files are now (inode, size, modification time): compare to tell a rewrite."""
        return tuple(_stamp(path) for path in self.sources)

    def changed(self) -> bool:
        """Whether a source file was rewritten, replaced or removed since these credentials were read."""
        return bool(self.sources) and self.stamp() != self.read_stamp


def _stamp(path: str) -> tuple[int, int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def load_credentials(kubeconfig: str) -> Credentials:
    """From the kubeconfig file if one is configured, else from the pod's service account."""
    credentials = _from_kubeconfig(kubeconfig) if kubeconfig else _in_cluster()
    # stamped after reading: a rewrite in between is caught by the periodic re-read (KubeClient.REREAD)
    c = credentials
    return Credentials(c.endpoint, c.base_path, c.tls, c.namespace, c.token, c.basic, c.sources, origin=kubeconfig,
                       read_stamp=c.stamp(), read_at=time.monotonic())  # fmt: skip


def referenced_files(credentials: Credentials) -> tuple[tuple[str, str], ...]:
    """(key, path) of the files besides the kubeconfig that the credentials are read from or load on connect."""
    tls = credentials.tls
    named = [("users[].user.tokenFile", path) for path in credentials.sources[1:]]
    named += [("clusters[].cluster.certificate-authority", tls.ca_file),
              ("users[].user.client-certificate", tls.cert_file),
              ("users[].user.client-key", tls.key_file)]  # fmt: skip
    return tuple((key, path) for key, path in named if path)


def _invalid(path: str, key: str, problem: str) -> InvalidConfig:
    return InvalidConfig(f"invalid kubernetes.kubeconfig {path!r}: {key} {problem}")


def _in_cluster() -> Credentials:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = os.path.join(SERVICE_ACCOUNT_DIR, "token")
    if not host or not os.path.exists(token_file):
        raise InvalidConfig(
            "invalid kubernetes.kubeconfig '': no kubeconfig set and not running in a pod "
            "(KUBERNETES_SERVICE_HOST and a service-account token are missing)"
        )
    namespace_file = os.path.join(SERVICE_ACCOUNT_DIR, "namespace")
    namespace = _read_text("", namespace_file, namespace_file, missing="").strip() or DEFAULT_NAMESPACE
    if not is_namespace(namespace):
        raise _invalid("", namespace_file, "holds no namespace name (a DNS-1123 label)")
    try:
        endpoint = parse_endpoint(f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}", tls=True)
    except ValueError:
        raise _invalid("", "KUBERNETES_SERVICE_HOST/PORT", "is no host and port") from None
    token = _read_text("", f"service-account token {token_file}", token_file, missing="").strip()
    return Credentials(
        endpoint=endpoint,
        base_path="",
        tls=TLSSettings(ca_file=os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt")),
        namespace=namespace,
        token=_checked_token("", f"service-account token {token_file}", token) if token else "",
        sources=(token_file,),
    )


def _from_kubeconfig(path: str) -> Credentials:
    doc = _parse(path)
    context = _entry(doc, "contexts", doc.get("current-context"), "context")
    if context is None:
        raise _invalid(path, "current-context", "names no usable entry of contexts")
    cluster = _entry(doc, "clusters", context.get("cluster"), "cluster")
    if cluster is None:
        raise _invalid(path, "contexts[].context.cluster", "names no usable entry of clusters")
    user = _entry(doc, "users", context.get("user"), "user") if context.get("user") else {}
    if user is None:
        raise _invalid(path, "contexts[].context.user", "names no usable entry of users")
    namespace = context.get("namespace") or DEFAULT_NAMESPACE
    if not is_namespace(namespace):
        raise _invalid(path, "contexts[].context.namespace", "is no namespace name (a DNS-1123 label)")
    endpoint, base_path = _server(path, cluster.get("server"))
    base = os.path.dirname(os.path.abspath(path))
    return Credentials(
        endpoint=endpoint,
        base_path=base_path,
        tls=_tls(path, cluster, user, base),
        namespace=namespace,
        token=_token(path, user, base),
        basic=_basic(path, user),
        sources=(path, *([_path(user["tokenFile"], base)] if user.get("tokenFile") and not user.get("token") else [])),
    )


def _parse(path: str) -> Mapping[str, Any]:
    text = _read_text(path, "the file", path)
    try:
        doc = _decode(text)
    except ValueError as exc:  # the position only: the text around it may be a secret
        raise InvalidConfig(f"invalid kubernetes.kubeconfig {path!r}: not YAML or JSON ({exc})") from None
    if not isinstance(doc, Mapping):
        raise InvalidConfig(f"invalid kubernetes.kubeconfig {path!r}: expected a mapping")
    return doc


def _decode(text: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {exc.lineno} column {exc.colno}") from None
    import yaml  # only for YAML kubeconfigs: install-cni writes JSON

    try:
        return yaml.load(text, Loader=_yaml_loader())  # a safe loader: see _yaml_loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ValueError(f"line {mark.line + 1} column {mark.column + 1}" if mark else "no position") from None


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's safe loader (libyaml's when there) with go-yaml v2's booleans: client-go reads kubeconfigs
    with go-yaml v2, which takes y/Y/n/N as booleans too (PyYAML has the other YAML 1.1 ones)."""
    import re

    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    # A base chosen at run time (CSafeLoader exists only when PyYAML was built with libyaml) is not a type
    # to mypy: it cannot check the subclass (callers get Any from this function anyway).
    class KubeconfigLoader(base):  # type: ignore[misc, valid-type]
        bool_values: ClassVar[dict[str, bool]] = {**base.bool_values, "y": True, "n": False}

    KubeconfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile("^(?:y|Y|n|N)$"), list("yYnN"))
    return KubeconfigLoader


def _entry(doc: Mapping[str, Any], section: str, name: object, field: str) -> Mapping[str, Any] | None:
    """The `field` mapping of the `section` entry called `name`; None if there is none."""
    entries = doc.get(section)
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            value = entry.get(field) or {}
            return value if isinstance(value, Mapping) else None
    return None


def _server(path: str, server: object) -> tuple[Endpoint, str]:
    """The endpoint and the URL's path prefix (empty, or '/prefix')."""
    key = "clusters[].cluster.server"
    if not isinstance(server, str) or not server:
        raise _invalid(path, key, "is missing")
    prefix = server.partition("://")[2].partition("/")[2].rstrip("/")
    if not (prefix.isascii() and prefix.isprintable()) or any(c in prefix for c in " ?#"):
        raise _invalid(path, key, "has a path that is no URL path")
    try:
        endpoint = parse_endpoint(server, tls=True, default_port=443 if server.startswith("https") else 80)
    except ValueError:
        raise _invalid(path, key, "is no http(s) URL") from None
    return endpoint, "/" + prefix if prefix else ""


def _tls(path: str, cluster: Mapping[str, Any], user: Mapping[str, Any], base: str) -> TLSSettings:
    skip = cluster.get("insecure-skip-tls-verify")
    if skip is not None and not isinstance(skip, bool):  # client-go cannot load such a kubeconfig either
        raise _invalid(path, "clusters[].cluster.insecure-skip-tls-verify", "is neither true nor false")
    ca_data = _data(path, cluster, "certificate-authority-data", "clusters[].cluster.")
    try:
        ca_pem = ca_data.decode("ascii")
    except UnicodeDecodeError:
        raise _invalid(path, "clusters[].cluster.certificate-authority-data", "is no PEM certificate") from None
    return TLSSettings(
        ca_file=_path(cluster.get("certificate-authority"), base),
        ca_data=ca_pem,
        cert_file=_path(user.get("client-certificate"), base),
        key_file=_path(user.get("client-key"), base),
        cert_data=_data(path, user, "client-certificate-data", "users[].user."),
        key_data=_data(path, user, "client-key-data", "users[].user."),
        verify=skip is not True,
    )


def _data(path: str, section: Mapping[str, Any], key: str, where: str) -> bytes:
    """A base64 `*-data` field's bytes (PEM), b"" when absent."""
    value = section.get(key)
    if not value:
        return b""
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value)
    except (ValueError, binascii.Error):
        raise _invalid(path, where + key, "is not base64") from None


def _token(path: str, user: Mapping[str, Any], base: str) -> str:
    if user.get("token"):
        return _checked_token(path, "users[].user.token", user["token"])
    if user.get("tokenFile"):
        file = _path(user["tokenFile"], base)
        token = _read_text(path, "users[].user.tokenFile", file).strip()  # as client-go: whitespace around
        return _checked_token(path, "users[].user.tokenFile", token)
    return ""


def _checked_token(path: str, key: str, token: object) -> str:
    """A bearer token goes into a header: whitespace or control characters inside would end it early."""
    if not isinstance(token, str) or not token or not (token.isascii() and token.isprintable()) or " " in token:
        raise _invalid(path, key, "holds no bearer token (whitespace, control or non-ASCII characters inside)")
    return token


def _basic(path: str, user: Mapping[str, Any]) -> str:
    username, password = user.get("username"), user.get("password", "")
    if not username:
        return ""
    if not isinstance(username, str) or not isinstance(password, str):
        raise _invalid(path, "users[].user.username/password", "is not a string")
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _path(value: object, base: str) -> str:
    if not value:
        return ""
    return str(value) if os.path.isabs(str(value)) else os.path.join(base, str(value))


def _read_text(path: str, key: str, file: str, *, missing: str | None = None) -> str:
    """A small UTF-8 file's text; `missing` if it cannot be read (if given).
    Errors name `key` of the kubeconfig `path`, never the file's content."""
    try:
        data = read_regular(file, MAX_FILE + 1)
    except OSError as exc:
        if missing is not None:
            return missing
        raise _invalid(path, key, f"cannot be read: {exc.strerror}") from None
    if len(data) > MAX_FILE:
        raise _invalid(path, key, f"is larger than {MAX_FILE >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid(path, key, "is not UTF-8 text") from None
