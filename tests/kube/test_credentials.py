"""Kubeconfigs and the service account: a kubeconfig is any file a network config names, so nothing in it
may reach a header unchecked or an error message at all; TLS verification goes off only for a real true;
inline client keys never touch the disk, and the node daemon keeps one connection per server and key."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from etcd_server import TLSMaterial, make_tls
from support import netconf, run_cni
from whereabouts.config import KubernetesSettings
from whereabouts.errors import InvalidConfig
from whereabouts.kube import credentials, transport
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.node.runtime import Lease, StorePool
from whereabouts.store.kubernetes import open_kubernetes

SECRET = "s3cr3t-hunter2"  # what must never show up in an error


def kubeconfig(path: Path, *, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(doc))
    return path


def refused(path: Path) -> str:
    """The message of the code 7 error loading `path` gives."""
    with pytest.raises(InvalidConfig) as error:
        load_credentials(str(path))
    assert error.value.code == 7
    return error.value.msg


# --- tokens: what goes into the Authorization header -------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [f"{SECRET}\r\nX-Evil: 1", f"{SECRET}\nGET /", f"{SECRET} x", f"{SECRET}\tx", f"{SECRET}\x00", f"{SECRET}\u00e4"],
    ids=["crlf", "lf", "space", "tab", "nul", "non-ascii"],
)
def test_an_inline_token_with_whitespace_or_control_characters_is_refused(tmp_path: Path, token: str) -> None:
    path = kubeconfig(tmp_path / "k", user={"token": token})
    message = refused(path)
    assert str(path) in message and "users[].user.token" in message and SECRET not in message


def test_a_token_file_that_is_no_token_file_is_refused_unquoted(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"  # a network config may name any file root can read
    shadow.write_text(f"root:$6${SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    path = kubeconfig(tmp_path / "k", user={"tokenFile": str(shadow)})
    message = refused(path)
    assert str(path) in message and "tokenFile" in message
    assert SECRET not in message and "19000" not in message and "daemon" not in message


def test_a_token_file_is_read_as_client_go_does(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  abc.DEF-_~+/=\n")  # whitespace around is trimmed
    path = kubeconfig(tmp_path / "k", user={"tokenFile": "token"})  # relative to the kubeconfig
    assert load_credentials(str(path)).token == "abc.DEF-_~+/="
    missing = kubeconfig(tmp_path / "m", user={"tokenFile": str(tmp_path / "absent")})
    assert "cannot be read" in refused(missing)
    (tmp_path / "binary").write_bytes(b"\xff\xfe" + SECRET.encode())
    assert SECRET not in refused(kubeconfig(tmp_path / "b", user={"tokenFile": str(tmp_path / "binary")}))


def test_an_in_cluster_token_with_whitespace_inside_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text(f"{SECRET}\nsecond line\n")
    (tmp_path / "namespace").write_text("kube-system\n")
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    with pytest.raises(InvalidConfig) as error:
        load_credentials("")
    assert str(tmp_path / "token") in error.value.msg and SECRET not in error.value.msg
    (tmp_path / "token").write_text(f"{SECRET}\n")
    assert load_credentials("").token == SECRET


# --- errors never quote the file ---------------------------------------------------------------------

UNQUOTED = {
    "yaml-syntax": f"users:\n- name: u\n  user:\n    token: {SECRET}\n   bad: [indent\n",
    "yaml-unclosed-flow": f"password: [{SECRET}\n",
    "yaml-tab": f"a:\n\t{SECRET}: 1\n",
    "json-syntax": f'{{"token": "{SECRET}", bad}}',
    "not-a-mapping": f"- {SECRET}\n",
    "current-context-unknown": f"current-context: {SECRET}\ncontexts: []\n",
    "cluster-unknown": f"current-context: x\ncontexts: [{{name: x, context: {{cluster: {SECRET}}}}}]\n",
    "server-not-a-url": (
        f"current-context: x\ncontexts: [{{name: x, context: {{cluster: c}}}}]\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://{SECRET} x:1'}}}}]\n"
    ),
    "ca-data-not-base64": (
        f"current-context: x\ncontexts: [{{name: x, context: {{cluster: c}}}}]\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://h:1', certificate-authority-data: '{SECRET}!'}}}}]\n"
    ),
    "namespace-not-a-label": (
        f"current-context: x\ncontexts: [{{name: x, context: {{cluster: c, namespace: '{SECRET}/..'}}}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://h:1'}}]\n"
    ),
    "not-utf8": "\udcff" + SECRET,
}


@pytest.mark.parametrize("text", UNQUOTED.values(), ids=UNQUOTED.keys())
def test_errors_never_quote_the_credentials_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    message = refused(path)
    assert str(path) in message and SECRET not in message


def test_a_syntax_error_gives_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(UNQUOTED["yaml-unclosed-flow"])
    assert "line 2 column 1" in refused(path)
    path.write_text(UNQUOTED["json-syntax"])
    assert "line 1 column" in refused(path)


# --- insecure-skip-tls-verify, as client-go reads it -------------------------------------------------

VERIFY, SKIP, REFUSED = "verify", "skip", "refused"
# client-go (1.20) turns a YAML kubeconfig into JSON with sigs.k8s.io/yaml over go-yaml v2, which resolves
# the YAML 1.1 booleans (y/Y/yes/Yes/YES/true/True/TRUE/on/On/ON and their false twins), then decodes that
# JSON into the field, a Go bool: a string or a number there fails to decode, and client-go refuses the
# whole kubeconfig. So do we (code 7): verification is never turned off by anything but a real true.
SPELLINGS = [
    ("true", SKIP),  # YAML boolean
    ("True", SKIP),  # YAML boolean
    ("TRUE", SKIP),  # YAML boolean
    ("yes", SKIP),  # YAML 1.1 boolean: go-yaml v2 resolves it
    ("on", SKIP),  # YAML 1.1 boolean: go-yaml v2 resolves it
    ("y", SKIP),  # go-yaml v2 resolves y/Y too (PyYAML alone would not)
    ("false", VERIFY),  # YAML boolean
    ("no", VERIFY),  # YAML 1.1 false, not the truthy string "no"
    ("off", VERIFY),  # YAML 1.1 false
    ("n", VERIFY),  # go-yaml v2's false
    ("~", VERIFY),  # null: the zero value of a Go bool
    ("absent", VERIFY),  # not set: the zero value
    ('"true"', REFUSED),  # a quoted string: JSON string into a Go bool, client-go cannot load it
    ('"yes"', REFUSED),  # a quoted string likewise
    ("'no'", REFUSED),  # likewise, and truthy as a Python string
    ("1", REFUSED),  # an integer: JSON number into a Go bool, client-go cannot load it
    ("maybe", REFUSED),  # a plain string
]


@pytest.mark.parametrize(("spelling", "outcome"), SPELLINGS, ids=[s for s, _ in SPELLINGS])
def test_insecure_skip_tls_verify_spellings(tmp_path: Path, spelling: str, outcome: str) -> None:
    line = "" if spelling == "absent" else f"    insecure-skip-tls-verify: {spelling}\n"
    path = tmp_path / "k"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n{line}"
        "contexts:\n- name: x\n  context:\n    cluster: c\n"
    )
    if outcome == REFUSED:
        assert "insecure-skip-tls-verify" in refused(path)
    else:
        assert load_credentials(str(path)).tls.verify == (outcome == VERIFY)


@pytest.mark.parametrize(("value", "verify"), [(True, False), (False, True), ("true", None)], ids=str)
def test_insecure_skip_tls_verify_in_json(tmp_path: Path, value: object, verify: bool | None) -> None:
    path = kubeconfig(tmp_path / "k", cluster={"insecure-skip-tls-verify": value})
    if verify is None:
        assert "insecure-skip-tls-verify" in refused(path)
    else:
        assert load_credentials(str(path)).tls.verify is verify


# --- inline client certificates: no key on disk, one kept connection ---------------------------------


class ClientCertServer(ThreadingHTTPServer):
    """HTTPS on loopback that insists on a client certificate signed by the test CA; answers with its CN."""

    daemon_threads = True
    accepted = 0

    def get_request(self) -> tuple[Any, Any]:
        request = super().get_request()
        self.accepted += 1
        return request


class CertHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    status = 200

    def do_GET(self) -> None:
        subject = dict(item[0] for item in self.connection.getpeercert()["subject"])
        body = json.dumps({"cn": subject["commonName"]}).encode()
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def cert_server(pki: TLSMaterial) -> Iterator[ClientCertServer]:
    srv = ClientCertServer(("127.0.0.1", 0), CertHandler)
    srv.status = 200  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def inline_cert_kubeconfig(path: Path, srv: ClientCertServer, pki: TLSMaterial) -> Path:
    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    user = {"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)}
    cluster = {"server": f"https://127.0.0.1:{srv.server_address[1]}", "certificate-authority-data": b64(pki.ca)}
    return kubeconfig(path, cluster=cluster, user=user)


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty temp dir of the test's own, for this process and the plugin it runs."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    monkeypatch.setenv("TMPDIR", str(directory))
    return directory


def one_call(path: Path) -> dict[str, Any]:
    client = KubeClient(load_credentials(str(path)))
    reply = client.get(client.path("ippools", "a"))
    client.close()
    assert reply is not None
    return reply


def test_inline_client_keys_leave_no_files(
    cert_server: ClientCertServer, pki: TLSMaterial, tmp_path: Path, temp_dir: Path
) -> None:
    path = inline_cert_kubeconfig(tmp_path / "k", cert_server, pki)
    for _ in range(5):
        assert one_call(path) == {"cn": "client"}  # the inline certificate was presented
    assert os.listdir(temp_dir) == []


def test_the_node_daemon_keeps_one_store_and_connection_for_one_kubeconfig(
    cert_server: ClientCertServer, pki: TLSMaterial, tmp_path: Path
) -> None:
    """Calls with one kubeconfig share one open store (and its TLS connection) in the daemon's pool; a
    rewritten kubeconfig (install-cni after a token rotation) is read afresh by the next call."""
    path = inline_cert_kubeconfig(tmp_path / "k", cert_server, pki)
    # the stores alone (opened without the watch-fed cache the daemon's pool also keeps per settings, whose
    # watches would hold connections of their own to this server)
    pool, settings = StorePool(opener=open_kubernetes), KubernetesSettings(str(path), str(tmp_path / "locks"))
    stores = []
    for _ in range(5):
        with Lease(pool, settings) as store:
            reply = store.client.get(store.client.path("ippools", "a"))  # type: ignore[attr-defined]
            assert reply == {"cn": "client"}  # the inline certificate was presented
            stores.append(store)
    assert cert_server.accepted == 1 and len(set(map(id, stores))) == 1 and pool.open_count() == 1
    path.write_text(path.read_text() + "\n")  # rewritten: the kept store is stale
    with Lease(pool, settings) as store:
        assert store is not stores[0]
        assert store.client.get(store.client.path("ippools", "a")) == {"cn": "client"}  # type: ignore[attr-defined]
    assert cert_server.accepted == 2 and pool.open_count() == 1
    pool.close()


def test_plugin_calls_with_an_inline_client_key_leave_no_files(
    cert_server: ClientCertServer, pki: TLSMaterial, tmp_path: Path, temp_dir: Path
) -> None:
    cert_server.status = 503  # type: ignore[attr-defined]  # the call fails after the handshake: code 11
    path = inline_cert_kubeconfig(tmp_path / "k", cert_server, pki)
    for n in range(3):
        result = run_cni("ADD", netconf(tmp_path, range="10.91.0.0/24", kubernetes={"kubeconfig": str(path)}))
        assert result.json["code"] == 11 and "503" in result.json["msg"], result.stdout
        assert cert_server.accepted == n + 1
    assert os.listdir(temp_dir) == []


# --- in-cluster credentials: the pod's service account ----------------------------------------------------


@pytest.fixture
def service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A service-account directory as the kubelet mounts it, and the environment of a pod."""
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("sa-token\n")
    (directory / "namespace").write_text("whereabouts\n")
    (directory / "ca.crt").write_text("not read until a connection is made")
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT_DIR", str(directory))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.233.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    return directory


def test_in_cluster_credentials_come_from_the_service_account(service_account: Path) -> None:
    found = load_credentials("")
    assert found.endpoint == transport.Endpoint("https", "10.233.0.1", 6443)
    assert found.base_path == "" and found.namespace == "whereabouts"
    assert found.token == "sa-token" and found.basic == ""
    assert found.tls == transport.TLSSettings(ca_file=str(service_account / "ca.crt"))  # verified, by the pod's CA


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("10.233.0.1", None, transport.Endpoint("https", "10.233.0.1", 443)),  # the port defaults to 443
        ("fd00:233::1", "443", transport.Endpoint("https", "fd00:233::1", 443)),  # an IPv6 service address
        ("kubernetes.default.svc", "6443", transport.Endpoint("https", "kubernetes.default.svc", 6443)),
    ],
    ids=["default-port", "ipv6", "name"],
)
def test_in_cluster_endpoint(
    service_account: Path, monkeypatch: pytest.MonkeyPatch, host: str, port: str | None, expected: transport.Endpoint
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    if port is None:
        monkeypatch.delenv("KUBERNETES_SERVICE_PORT")
    else:
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    assert load_credentials("").endpoint == expected


@pytest.mark.parametrize("namespace_file", ["absent", "", "\n"], ids=["absent", "empty", "blank"])
def test_in_cluster_namespace_defaults_to_kube_system(service_account: Path, namespace_file: str) -> None:
    if namespace_file == "absent":
        (service_account / "namespace").unlink()
    else:
        (service_account / "namespace").write_text(namespace_file)
    assert load_credentials("").namespace == "kube-system"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"namespace": f"{SECRET}/../x"}, "namespace"),  # no namespace name, and never quoted
        ({"port": "https"}, "KUBERNETES_SERVICE_HOST/PORT"),
        ({"port": "70000"}, "KUBERNETES_SERVICE_HOST/PORT"),
        ({"host": "10.0.0.1 x"}, "KUBERNETES_SERVICE_HOST/PORT"),
    ],
    ids=["namespace", "port-name", "port-out-of-range", "host-with-space"],
)
def test_in_cluster_settings_that_are_wrong_are_code_7(
    service_account: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, str], named: str
) -> None:
    if "namespace" in change:
        (service_account / "namespace").write_text(change["namespace"])
    if "port" in change:
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", change["port"])
    if "host" in change:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", change["host"])
    with pytest.raises(InvalidConfig) as error:
        load_credentials("")
    assert error.value.code == 7 and named in error.value.msg and SECRET not in error.value.msg


@pytest.mark.parametrize("missing", ["host", "token"], ids=["no-service-host", "no-token"])
def test_no_kubeconfig_outside_a_pod_is_code_7(
    service_account: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    if missing == "host":
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    else:
        (service_account / "token").unlink()
    with pytest.raises(InvalidConfig) as error:
        load_credentials("")
    assert error.value.code == 7 and "not running in a pod" in error.value.msg


# --- kubeconfig: server, namespace, authentication -------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "endpoint", "base_path"),
    [
        ("https://127.0.0.1:6443", transport.Endpoint("https", "127.0.0.1", 6443), ""),
        ("https://kube.example", transport.Endpoint("https", "kube.example", 443), ""),
        ("http://kube.example", transport.Endpoint("http", "kube.example", 80), ""),
        ("https://kube.example/", transport.Endpoint("https", "kube.example", 443), ""),
        (
            "https://rancher.example/k8s/clusters/c-1",
            transport.Endpoint("https", "rancher.example", 443),
            "/k8s/clusters/c-1",
        ),
        ("https://[fd00::1]:6443/prefix/", transport.Endpoint("https", "fd00::1", 6443), "/prefix"),
    ],
    ids=["host-port", "https-default-port", "http-default-port", "trailing-slash", "path-prefix", "ipv6-prefix"],
)
def test_the_server_url_gives_endpoint_and_base_path(
    tmp_path: Path, server: str, endpoint: transport.Endpoint, base_path: str
) -> None:
    found = load_credentials(str(kubeconfig(tmp_path / "k", cluster={"server": server})))
    assert (found.endpoint, found.base_path) == (endpoint, base_path)


def test_requests_go_under_the_base_path(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k", cluster={"server": "https://h/k8s/clusters/c-1"})
    client = KubeClient(load_credentials(str(path)))
    assert client.path("ippools", "a") == (
        "/k8s/clusters/c-1/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/ns/ippools/a"
    )
    client.close()


@pytest.mark.parametrize(
    "server",
    ["", "https://h/a b", "https://h/a?b=c", "https://h/a#frag", "ftp://h", "https://h:0",
     "https://h/\u00e4", 6443],
    ids=["empty", "space", "query", "fragment", "ftp", "port-zero", "non-ascii-path", "a-number"],
)  # fmt: skip
def test_a_server_that_is_no_url_is_code_7(tmp_path: Path, server: object) -> None:
    assert "clusters[].cluster.server" in refused(kubeconfig(tmp_path / "k", cluster={"server": server}))


def test_the_namespace_defaults_to_kube_system(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k")
    doc = json.loads(path.read_text())
    del doc["contexts"][0]["context"]["namespace"]
    path.write_text(json.dumps(doc))
    assert load_credentials(str(path)).namespace == "kube-system"


@pytest.mark.parametrize("namespace", ["Upper", "a.b", "-a", "a" * 64, "a/b"], ids=repr)
def test_a_namespace_that_is_no_dns_label_is_code_7(tmp_path: Path, namespace: str) -> None:
    path = kubeconfig(tmp_path / "k")
    doc = json.loads(path.read_text())
    doc["contexts"][0]["context"]["namespace"] = namespace
    path.write_text(json.dumps(doc))
    assert "contexts[].context.namespace" in refused(path)


def test_client_certificate_files_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    user = {"client-certificate": "pki/client.crt", "client-key": "/etc/abs/client.key"}
    found = load_credentials(str(kubeconfig(tmp_path / "k", cluster={"certificate-authority": "ca.crt"}, user=user)))
    assert found.tls == transport.TLSSettings(
        ca_file=str(tmp_path / "ca.crt"), cert_file=str(tmp_path / "pki/client.crt"), key_file="/etc/abs/client.key"
    )


def test_client_certificate_data_is_kept_as_pem_bytes_not_files(tmp_path: Path) -> None:
    cert, key, ca = b"-----BEGIN CERTIFICATE-----\nabc\n", b"-----BEGIN PRIVATE KEY-----\nxyz\n", "-----BEGIN CA-----\n"
    user = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }
    cluster = {"certificate-authority-data": base64.b64encode(ca.encode()).decode()}
    found = load_credentials(str(kubeconfig(tmp_path / "k", cluster=cluster, user=user)))
    assert found.tls == transport.TLSSettings(ca_data=ca, cert_data=cert, key_data=key)


@pytest.mark.parametrize(
    "user, key",
    [
        ({"client-certificate-data": f"{SECRET}!"}, "users[].user.client-certificate-data"),
        ({"client-key-data": [SECRET]}, "users[].user.client-key-data"),
        ({"username": ["admin"], "password": SECRET}, "users[].user.username/password"),
        ({"username": "admin", "password": 1234}, "users[].user.username/password"),
    ],
    ids=["cert-data-not-base64", "key-data-not-a-string", "username-not-a-string", "password-not-a-string"],
)
def test_user_fields_of_the_wrong_form_are_code_7_naming_the_key(tmp_path: Path, user: dict, key: str) -> None:
    message = refused(kubeconfig(tmp_path / "k", user=user))
    assert key in message and SECRET not in message


@pytest.mark.parametrize(
    "user, token, basic",
    [
        ({}, "", ""),  # no authentication: a client certificate, or an anonymous API server
        ({"token": "abc"}, "abc", ""),
        ({"username": "admin", "password": "pw:with:colons"}, "", base64.b64encode(b"admin:pw:with:colons").decode()),
        ({"username": "admin"}, "", base64.b64encode(b"admin:").decode()),
    ],
    ids=["none", "token", "basic", "basic-no-password"],
)
def test_authentication_of_the_user(tmp_path: Path, user: dict, token: str, basic: str) -> None:
    found = load_credentials(str(kubeconfig(tmp_path / "k", user=user)))
    assert (found.token, found.basic) == (token, basic)


def test_an_inline_token_wins_over_a_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    found = load_credentials(str(kubeconfig(tmp_path / "k", user={"token": "inline", "tokenFile": "token"})))
    assert found.token == "inline"


def test_a_context_without_user_sends_no_credentials(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k", user={"token": "abc"})
    doc = json.loads(path.read_text())
    del doc["contexts"][0]["context"]["user"]
    path.write_text(json.dumps(doc))
    assert load_credentials(str(path)).token == ""


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda doc: doc.pop("current-context"), "current-context"),
        (lambda doc: doc.update({"contexts": "x"}), "current-context"),
        (lambda doc: doc["contexts"][0]["context"].update({"cluster": "other"}), "contexts[].context.cluster"),
        (lambda doc: doc["contexts"][0]["context"].update({"user": "other"}), "contexts[].context.user"),
        (lambda doc: doc["users"][0].update({"user": "a string"}), "contexts[].context.user"),
        (lambda doc: doc["clusters"][0]["cluster"].pop("server"), "clusters[].cluster.server"),
    ],
    ids=["no-current-context", "contexts-not-a-list", "unknown-cluster", "unknown-user", "user-not-a-mapping",
         "no-server"],
)  # fmt: skip
def test_a_kubeconfig_that_names_no_usable_entry_is_code_7(tmp_path: Path, edit: Any, key: str) -> None:
    path = kubeconfig(tmp_path / "k")
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    assert key in refused(path)


def test_a_kubeconfig_larger_than_any_kubeconfig_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"#" * (credentials.MAX_FILE + 1))
    assert "larger than" in refused(path)


@pytest.mark.parametrize("which", ["kubeconfig", "tokenFile", "certificate-authority"])
def test_a_kubeconfig_file_that_is_a_fifo_is_code_7_not_a_call_that_never_ends(tmp_path: Path, which: str) -> None:
    """A FIFO blocked the call in open() for good, a device was opened by the plugin as root: the kubeconfig
    and the files it names must be regular files (read with a limit, as the flat file is)."""
    fifo, token = tmp_path / "fifo", tmp_path / "token"
    os.mkfifo(fifo)
    token.write_text("t")
    with socket.socket() as listener:  # (the CA is loaded after the TCP connect)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        cluster = {"server": f"https://127.0.0.1:{listener.getsockname()[1]}"}
        if which == "certificate-authority":
            cluster["certificate-authority"] = str(fifo)
        user = {"tokenFile": str(fifo if which == "tokenFile" else token)}
        config = fifo if which == "kubeconfig" else kubeconfig(tmp_path / "k", cluster=cluster, user=user)
        conf = netconf(tmp_path, range="10.91.0.0/24", kubernetes={"kubeconfig": str(config)})
        result = run_cni("ADD", conf, timeout=20)
    assert result.json["code"] in (7, 11) and "not a regular file" in result.json["msg"], result.stdout
