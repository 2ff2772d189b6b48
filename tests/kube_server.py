"""A real kube-apiserver (1.20.2, built by scripts/kube-tools.sh) on a real etcd, for the tests.

Started on free loopback ports with temp dirs and stopped by PID. Token authentication: an admin in
system:masters, and the plugin as the `kube-system/whereabouts` service account, so the RBAC manifests in
deploy/ are what grants it access. An audit log records every request, so tests can count them.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from etcd_server import EtcdServer, TLSMaterial, free_port, make_tls
from support import stop_process

REPO = Path(__file__).resolve().parent.parent
PLUGIN_USER = "system:serviceaccount:kube-system:whereabouts"
CONTROLLER_USER = "system:serviceaccount:kube-system:whereabouts-controller"
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""


def write_token(path: Path, token: str) -> None:
    """A projected token file as the kubelet's atomic writer updates it: the new file in one step (another
    inode)."""
    staging = path.with_name(path.name + ".new")
    staging.write_text(token)
    staging.replace(path)


def rewrite_token_in_place(path: Path, token: str) -> None:
    """The same inode, size and modification time (as a filesystem with coarse timestamps may show a
    rewrite): only reading the file again tells the new token."""
    before = os.stat(path)
    data = token.encode().ljust(before.st_size, b"\n")  # whitespace around a token is stripped
    assert len(data) == before.st_size, "tokens of one account from mint_token have one length"
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def kube_tools() -> Path:
    out = subprocess.run(["bash", str(REPO / "scripts/kube-tools.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class KubeAPIServer:
    base: Path
    tools: Path
    port: int = field(default_factory=free_port)
    etcd: EtcdServer | None = None
    tls: TLSMaterial | None = None
    proc: subprocess.Popen[bytes] | None = None
    admin_token: str = "admin-token-for-tests"
    plugin_token: str = "plugin-token-for-tests"
    controller_token: str = "controller-token-for-tests"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return self.base / "audit.log"

    def start(self) -> KubeAPIServer:
        self.base.mkdir(parents=True, exist_ok=True)
        self.etcd = self.etcd or EtcdServer(self.base / "etcd").start()
        self.tls = self.tls or make_tls(self.base / "pki")
        sa_key = self.base / "sa.key"
        if not sa_key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        tokens = self.base / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f'{self.plugin_token},{PLUGIN_USER},plugin-uid,"system:serviceaccounts,system:serviceaccounts:kube-system"\n'
            f"{self.controller_token},{CONTROLLER_USER},controller-uid,"
            '"system:serviceaccounts,system:serviceaccounts:kube-system"\n'
        )
        (self.base / "audit-policy.yaml").write_text(AUDIT_POLICY)
        cmd = [str(self.tools / "kube-apiserver"), f"--etcd-servers={self.etcd.url}", "--insecure-port=0",
               f"--secure-port={self.port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
               f"--tls-cert-file={self.tls.server_cert}", f"--tls-private-key-file={self.tls.server_key}",
               f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
               f"--service-account-key-file={sa_key}", f"--service-account-signing-key-file={sa_key}",
               "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
               "--service-cluster-ip-range=10.233.0.0/24", "--allow-privileged=true",
               f"--audit-policy-file={self.base / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
               f"--cert-dir={self.base / 'certs'}", "--v=0"]  # fmt: skip
        log = open(self.base / "kube-apiserver.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"kube-apiserver exited: {self.base}"
            try:
                if self.request("GET", "/readyz") == "ok":
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise TimeoutError("kube-apiserver not ready")

    def request(self, method: str, path: str, body: object = None, token: str = "") -> object:
        """An HTTP client of the tests' own (not the plugin's), as the admin unless `token` says otherwise."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls else None
        with urllib.request.urlopen(req, timeout=10, context=context) as reply:
            raw = reply.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    def request_patch(self, path: str, body: object) -> object:
        """A JSON merge patch, as the admin (for status subresources and annotations)."""
        assert self.tls is not None
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="PATCH")
        req.add_header("Authorization", f"Bearer {self.admin_token}")
        req.add_header("Content-Type", "application/merge-patch+json")
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        with urllib.request.urlopen(req, timeout=10, context=context) as reply:
            return json.loads(reply.read())

    def kubeconfig(
        self, path: Path, *, token: str = "", namespace: str = "kube-system", as_json: bool = False,
        token_file: Path | None = None,
    ) -> Path:  # fmt: skip
        """A YAML kubeconfig, written the way kubectl and the Go installer write them; `as_json`: the same
        as JSON, the way install-cni writes it (a CNI call then reads it without importing PyYAML).
        `token_file`: the user's `tokenFile` (a projected service-account token) instead of a token."""
        assert self.tls is not None
        user = f"tokenFile: {token_file}" if token_file else f"token: {token}"
        if as_json:
            cluster = {"server": self.url, "certificate-authority": str(self.tls.ca)}
            doc = {
                "apiVersion": "v1", "kind": "Config", "current-context": "c",
                "clusters": [{"name": "test", "cluster": cluster}],
                "users": [{"name": "u", "user": {"tokenFile": str(token_file)} if token_file else {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "test", "user": "u", "namespace": namespace}}],
            }  # fmt: skip
            path.write_text(json.dumps(doc))
            return path
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.url}\n    certificate-authority: {self.tls.ca}\n"
            f"users:\n- name: u\n  user:\n    {user}\n"
            f"contexts:\n- name: c\n  context:\n    cluster: test\n    user: u\n    namespace: {namespace}\n"
            "current-context: c\npreferences: {}\n"
        )
        return path

    def mint_token(self, account: str, *, namespace: str = "kube-system") -> tuple[str, str]:
        """A bound service-account token, as the kubelet gets one for a projected token volume (TokenRequest),
        bound to a Secret of its own so that `revoke` can make the server refuse it. The account must exist
        (deploy/'s RBAC creates whereabouts and whereabouts-controller). Returns (token, the Secret's name)."""
        secret = f"token-{uuid.uuid4().hex[:12]}"  # one length for every token: see write_token_keeping_stamp
        created = self.request("POST", f"/api/v1/namespaces/{namespace}/secrets", {"metadata": {"name": secret}})
        assert isinstance(created, dict)
        bound = {"kind": "Secret", "apiVersion": "v1", "name": secret, "uid": created["metadata"]["uid"]}
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 3600, "boundObjectRef": bound}}  # fmt: skip
        reply = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request)
        assert isinstance(reply, dict)
        return reply["status"]["token"], secret

    def revoke(self, token: str, secret: str, *, namespace: str = "kube-system", timeout: float = 60) -> None:
        """Delete the token's Secret and wait until the server refuses the token (401): its authenticator
        keeps a token it accepted for 10 s."""
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/secrets/{secret}")
        deadline = time.monotonic() + timeout
        while self.accepts(token):
            assert time.monotonic() < deadline, "the revoked token is still accepted"
            time.sleep(0.5)

    def accepts(self, token: str) -> bool:
        try:
            self.request("GET", "/api", token=token)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return False
            raise
        return True

    def kubectl(self, *args: str) -> str:
        config = self.kubeconfig(self.base / "admin.kubeconfig", token=self.admin_token)
        out = subprocess.run(
            [str(self.tools / "kubectl"), f"--kubeconfig={config}", *args], check=True, capture_output=True, text=True
        )
        return out.stdout

    def install_whereabouts(self) -> None:
        """Apply the CRDs and RBAC from deploy/ with kubectl, and wait for the CRDs to be served."""
        self.kubectl("apply", "-f", str(REPO / "deploy/base/crds"))
        self.kubectl("apply", "-f", str(REPO / "deploy/base/rbac/plugin.yaml"))
        self.kubectl("apply", "-f", str(REPO / "deploy/base/rbac/controller.yaml"))
        self.kubectl("apply", "-f", str(REPO / "tests/manifests"))  # Multus's NAD CRD and the IPAMClaim CRD
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def namespace_for_plugin(self, name: str) -> str:
        """A namespace of its own for one test, where the plugin's ClusterRole is bound as in deploy/."""
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        binding = {
            "metadata": {"name": "whereabouts-plugin", "namespace": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "whereabouts-plugin"},
            "subjects": [{"kind": "ServiceAccount", "name": "whereabouts", "namespace": "kube-system"}],
        }
        self.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings", binding)
        controller = {
            "metadata": {"name": "whereabouts-controller-pools", "namespace": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "whereabouts-controller-pools"},
            "subjects": [{"kind": "ServiceAccount", "name": "whereabouts-controller", "namespace": "kube-system"}],
        }  # fmt: skip
        self.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings", controller)
        return name

    def objects(self, namespace: str, plural: str) -> dict[str, dict]:
        """name -> object, for the whereabouts custom resources in `namespace`."""
        reply = self.request("GET", f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{namespace}/{plural}")
        assert isinstance(reply, dict)
        return {item["metadata"]["name"]: item for item in reply["items"]}

    def mirrored_pools(self, namespace: str, wait: float = 15.0) -> dict[str, dict]:
        """The IPPools once their entries hold every reservation's attachment, retained where it is (through a
        node daemon the pools are written a moment after the reservations: store.kubecache); as they are after
        `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            pools = self.objects(namespace, "ippools")
            entries = {(e.get("id"), e.get("ifname"), bool(e.get("retained"))) for pool in pools.values()
                       for e in (pool.get("spec", {}).get("allocations") or {}).values()}  # fmt: skip
            reserved = {(o["spec"].get("containerid"), o["spec"].get("ifname"), o["spec"].get("state") == "retained")
                        for o in self.objects(namespace, "overlappingrangeipreservations").values()}  # fmt: skip
            if reserved <= entries or time.monotonic() > deadline:
                return pools
            time.sleep(0.1)

    def audited(self, user: str = PLUGIN_USER, *, namespace: str = "") -> list[dict]:
        """Every completed request `user` made so far, from the audit log; with `namespace`, not those in
        other tests' namespaces (`wa-...`: the session's node daemon keeps watching them meanwhile)."""
        events = []
        if self.audit_log.exists():
            for line in self.audit_log.read_text().splitlines():
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete" and event.get("user", {}).get("username") == user:
                    elsewhere = event.get("objectRef", {}).get("namespace", "")
                    if not namespace or not elsewhere.startswith("wa-") or elsewhere == namespace:
                        events.append(event)
        return events

    def stop_apiserver(self) -> None:
        """Stop the API server alone (its etcd keeps the data); `start` brings it back on the same port."""
        stop_process(self.proc, 15)
        self.proc = None

    def stop(self) -> None:
        stop_process(self.proc, 15)
        if self.etcd:
            self.etcd.stop()
