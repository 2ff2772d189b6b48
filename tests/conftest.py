"""Shared fixtures: real etcd servers for the session (started on free loopback ports, stopped by PID)."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from etcd_server import AUTH_PREFIX, ETCD_PASSWORD, ETCD_USER, EtcdServer, make_tls
from kube_server import KubeAPIServer, kube_tools
from support import build_relay

# Property tests: the same examples on every run (derandomized, so CI cannot flake on a new one), no example
# database, no per-example deadline (the machine may be busy). Hypothesis still caches some data of its own:
# outside the repository.
settings.register_profile("whereabouts", derandomize=True, database=None, deadline=None)
settings.load_profile("whereabouts")
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "whereabouts-py-hypothesis"))


@pytest.fixture(scope="session")
def compiled_relay(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The compiled relay, built from this tree for the session, with the Python plugin beside it."""
    return build_relay(tmp_path_factory.mktemp("relay"))


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    base = tmp_path_factory.mktemp("etcd-tls")
    server = EtcdServer(base / "data", tls=make_tls(base / "pki")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def etcd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd-auth") / "data").start()
    server.enable_auth(user=ETCD_USER, password=ETCD_PASSWORD, prefix=AUTH_PREFIX)
    yield server
    server.stop()


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix of its own per test, so tests sharing the session's etcd never see each other's pools."""
    return f"/wa-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A real kube-apiserver with the CRDs and RBAC from deploy/ applied by kubectl."""
    yield from _running_kube(tmp_path_factory.mktemp("kube"))


@pytest.fixture(scope="module")
def own_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A kube-apiserver of the module's own, as `kube`: for tests that stop it or remove a CRD."""
    yield from _running_kube(tmp_path_factory.mktemp("own-kube"))


def _running_kube(base: Path) -> Iterator[KubeAPIServer]:
    server = KubeAPIServer(base, kube_tools())
    try:
        server.start()
        server.install_whereabouts()
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube_namespace(kube: KubeAPIServer) -> str:
    """A namespace of its own per test, the plugin's ClusterRole bound in it."""
    return kube.namespace_for_plugin(f"wa-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def plugin_kubeconfig(kube: KubeAPIServer, kube_namespace: str, tmp_path: Path) -> Path:
    """The plugin's kubeconfig: the kube-system/whereabouts service account, pools in the test's namespace.
    JSON, as install-cni writes it on a node (YAML kubeconfigs have tests of their own)."""
    path = tmp_path / "plugin.kubeconfig"
    return kube.kubeconfig(path, token=kube.plugin_token, namespace=kube_namespace, as_json=True)
