"""Where the API server is and how to authenticate: a kubeconfig file, or the in-cluster service account."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from whereabouts.errors import InvalidConfig
from whereabouts.store.http import Endpoint, TLSSettings, parse_endpoint

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class Credentials:
    endpoint: Endpoint
    base_path: str  # a server URL may carry a path prefix
    tls: TLSSettings
    namespace: str
    token: str = ""
    basic: str = ""  # base64 user:password


def load_credentials(kubeconfig: str) -> Credentials:
    """From the kubeconfig file if one is configured, else from the pod's service account."""
    return _from_kubeconfig(kubeconfig) if kubeconfig else _in_cluster()


def _in_cluster() -> Credentials:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = os.path.join(SERVICE_ACCOUNT_DIR, "token")
    if not host or not os.path.exists(token_file):
        raise InvalidConfig(
            "invalid kubernetes.kubeconfig '': no kubeconfig set and not running in a pod "
            "(KUBERNETES_SERVICE_HOST and a service-account token are missing)"
        )
    namespace = _read(os.path.join(SERVICE_ACCOUNT_DIR, "namespace"), DEFAULT_NAMESPACE)
    return Credentials(
        endpoint=parse_endpoint(f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}", tls=True),
        base_path="",
        tls=TLSSettings(ca_file=os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt")),
        namespace=namespace,
        token=_read(token_file, ""),
    )


def _from_kubeconfig(path: str) -> Credentials:
    doc = _parse(path)
    try:
        context = _named(doc, "contexts", doc.get("current-context"), "context")
        cluster = _named(doc, "clusters", context.get("cluster"), "cluster")
        user = _named(doc, "users", context.get("user"), "user") if context.get("user") else {}
        server = str(cluster["server"])
        base_path = server.partition("://")[2].partition("/")[2]
        endpoint = parse_endpoint(server, tls=True, default_port=443 if server.startswith("https") else 80)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidConfig(f"invalid kubernetes.kubeconfig {path!r}: {exc!r}") from None
    base = os.path.dirname(os.path.abspath(path))
    return Credentials(
        endpoint=endpoint,
        base_path=("/" + base_path.rstrip("/")) if base_path else "",
        tls=_tls(cluster, user, base),
        namespace=str(context.get("namespace") or DEFAULT_NAMESPACE),
        token=_token(user, base),
        basic=_basic(user),
    )


def _parse(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise InvalidConfig(f"invalid kubernetes.kubeconfig {path!r}: {exc.strerror}") from None
    try:
        doc = _yaml(text)
    except ValueError as exc:
        raise InvalidConfig(f"invalid kubernetes.kubeconfig {path!r}: not YAML or JSON ({exc})") from None
    if not isinstance(doc, Mapping):
        raise InvalidConfig(f"invalid kubernetes.kubeconfig {path!r}: expected a mapping")
    return doc


def _yaml(text: str) -> Any:
    if text.lstrip().startswith("{"):
        return json.loads(text)
    from whereabouts.kube import miniyaml

    try:
        return miniyaml.loads(text)
    except miniyaml.Unsupported:
        import yaml  # the full parser, for kubeconfigs using YAML features the small one skips

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(str(exc)) from None


def _named(doc: Mapping[str, Any], section: str, name: object, field: str) -> Mapping[str, Any]:
    for entry in doc.get(section) or []:
        if entry.get("name") == name:
            return entry.get(field) or {}
    raise KeyError(f"{section[:-1]} {name!r} not found")


def _tls(cluster: Mapping[str, Any], user: Mapping[str, Any], base: str) -> TLSSettings:
    cert_file, key_file = _path(user.get("client-certificate"), base), _path(user.get("client-key"), base)
    if user.get("client-certificate-data"):
        cert_file = _private_copy(base64.b64decode(user["client-certificate-data"]))
        key_file = _private_copy(base64.b64decode(user.get("client-key-data", "")))
    ca_data = cluster.get("certificate-authority-data")
    return TLSSettings(
        ca_file=_path(cluster.get("certificate-authority"), base),
        ca_data=base64.b64decode(ca_data).decode() if ca_data else "",
        cert_file=cert_file,
        key_file=key_file,
        verify=not cluster.get("insecure-skip-tls-verify", False),
    )


def _token(user: Mapping[str, Any], base: str) -> str:
    if user.get("token"):
        return str(user["token"])
    token_file = _path(user.get("tokenFile"), base)
    return _read(token_file, "") if token_file else ""


def _basic(user: Mapping[str, Any]) -> str:
    if not user.get("username"):
        return ""
    return base64.b64encode(f"{user['username']}:{user.get('password', '')}".encode()).decode()


def _path(value: object, base: str) -> str:
    if not value:
        return ""
    return str(value) if os.path.isabs(str(value)) else os.path.join(base, str(value))


def _read(path: str, default: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return default


def _private_copy(data: bytes) -> str:
    """ssl loads client certificates only from files: write inline ones to a private file (removed at exit)."""
    import atexit
    import tempfile

    fd, path = tempfile.mkstemp(prefix="whereabouts-", suffix=".pem")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return path
