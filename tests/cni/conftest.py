"""Every CNI-level test runs once per datastore in DATASTORES; a `local_only` test runs on the local store alone.

A datastore is one entry here: a name and how to build it from the test's fixtures (fetched lazily, so a run
of the local cases alone never starts a server).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from datastores import EtcdDatastore, KubernetesDatastore

from support import Datastore, LocalDatastore, using_datastore

DATASTORES: dict[str, Callable[[pytest.FixtureRequest], Datastore]] = {
    "local": lambda request: LocalDatastore(),
    "etcd": lambda request: EtcdDatastore(request.getfixturevalue("etcd"), request.getfixturevalue("etcd_prefix")),
    "kubernetes": lambda request: KubernetesDatastore(
        request.getfixturevalue("kube"),
        request.getfixturevalue("kube_namespace"),
        request.getfixturevalue("plugin_kubeconfig"),
    ),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = ["local"] if metafunc.definition.get_closest_marker("local_only") else list(DATASTORES)
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[Datastore]:
    """The datastore `netconf` and `held` target for this test."""
    with using_datastore(DATASTORES[request.param](request)) as store:
        yield store
