"""Shared fixtures: real etcd servers for the session (started on free loopback ports, stopped by PID)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from etcd_server import EtcdServer, make_tls

ETCD_USER, ETCD_PASSWORD, AUTH_PREFIX = "ipam", "ipam-secret", "/wa-auth/"


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
