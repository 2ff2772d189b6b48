"""A real etcd (Debian's etcd-server) for the tests: free loopback ports, a temp data dir, stopped by PID.

Three flavours: plain HTTP; TLS with client-certificate authentication (certificates made with openssl);
and HTTP with etcd's own authentication enabled (root user, a role on the whereabouts prefix, a user).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from support import stop_process

# the etcd_auth server's user (read-write on AUTH_PREFIX only)
ETCD_USER, ETCD_PASSWORD, AUTH_PREFIX = "ipam", "ipam-secret", "/wa-auth/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TLSMaterial:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls(directory: Path) -> TLSMaterial:
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    paths = {}
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        key, csr, cert, extfile = (directory / f"{name}{suffix}" for suffix in ("-key.pem", ".csr", ".pem", ".ext"))
        extfile.write_text(ext + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
                "-days", "2", "-extfile", str(extfile), "-out", str(cert))  # fmt: skip
        paths[name] = (cert, key)
    return TLSMaterial(ca, *paths["server"], *paths["client"])


@dataclass
class EtcdServer:
    data_dir: Path
    tls: TLSMaterial | None = None
    port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> EtcdServer:
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = ["etcd", "--name", "test", "--data-dir", str(self.data_dir), "--listen-client-urls", self.url,
               "--advertise-client-urls", self.url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"test={peer}", "--logger", "zap", "--log-level", "error"]  # fmt: skip
        if self.tls:
            cmd += ["--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                    "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth"]  # fmt: skip
        log = open(self.data_dir.parent / f"etcd-{self.port}.log", "ab")  # noqa: SIM115 - lives as long as etcd
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "etcd exited; see its log beside the data dir"
            try:
                self.call("kv/range", {"key": base64.b64encode(b"probe").decode()})
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"etcd on {self.url} not ready")

    def call(self, path: str, body: dict, token: str = "") -> dict:
        """A plain HTTP client, independent of the plugin's own, for setting up and inspecting etcd."""
        request = urllib.request.Request(f"{self.url}/v3/{path}", data=json.dumps(body).encode(), method="POST")
        if token:
            request.add_header("Authorization", token)
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        with urllib.request.urlopen(request, timeout=5, context=context) as reply:
            return json.loads(reply.read())

    def dump(self, prefix: str, token: str = "") -> dict[str, dict]:
        """Every key under `prefix` with its JSON value."""
        key = prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])
        reply = self.call("kv/range", {"key": _b64(key), "range_end": _b64(end)}, token)
        return {
            base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
            for kv in reply.get("kvs", [])
        }

    def enable_auth(self, *, user: str, password: str, prefix: str) -> None:
        """root user, a role with read-write on `prefix`, a user holding that role; then auth on."""
        self.call("auth/user/add", {"name": "root", "password": "rootpw"})
        self.call("auth/role/add", {"name": "root"})
        self.call("auth/user/grant", {"user": "root", "role": "root"})
        self.call("auth/role/add", {"name": "ipam"})
        end = prefix.encode()[:-1] + bytes([prefix.encode()[-1] + 1])
        perm = {"permType": "READWRITE", "key": _b64(prefix.encode()), "range_end": _b64(end)}
        self.call("auth/role/grant", {"name": "ipam", "perm": perm})
        self.call("auth/user/add", {"name": user, "password": password})
        self.call("auth/user/grant", {"user": user, "role": "ipam"})
        self.call("auth/enable", {})

    def root_token(self) -> str:
        return self.call("auth/authenticate", {"name": "root", "password": "rootpw"})["token"]

    def stop(self) -> None:
        stop_process(self.proc, 10)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
