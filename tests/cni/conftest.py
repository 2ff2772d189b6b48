"""Every CNI-level test runs once per datastore in DATASTORES and once per way a call is served: in process
(the Python executable alone) and through the node daemon as the DaemonSet runs it (the compiled relay, built
for the session, hands the call over; tests/node/test_daemon.py covers the Python relay). A `local_only` test
runs on the local store alone; an `in_process_only` test is about the executable itself. WHEREABOUTS_TEST_SERVED
runs the suite served those ways alone (standin: through the stand-in daemon the plugin starts when no node
daemon listens).

A datastore is one entry here: a name and how to build it from the test's fixtures (fetched lazily, so a run
of the local cases alone never starts a server). WHEREABOUTS_TEST_DATASTORES (comma-separated names) runs the
suite on those alone, OPTIONAL ones included (kubernetes-nomirror: kubernetes.ippool_mirror false).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from datastores import EtcdDatastore, KubernetesDatastore, UnmirroredKubernetesDatastore

from support import (
    PLUGIN,
    Datastore,
    LocalDatastore,
    running_daemon,
    served_through,
    stop_standin,
    using_datastore,
)

DATASTORES: dict[str, Callable[[pytest.FixtureRequest], Datastore]] = {
    "local": lambda request: LocalDatastore(),
    "etcd": lambda request: EtcdDatastore(request.getfixturevalue("etcd"), request.getfixturevalue("etcd_prefix")),
    "kubernetes": lambda request: KubernetesDatastore(
        request.getfixturevalue("kube"),
        request.getfixturevalue("kube_namespace"),
        request.getfixturevalue("plugin_kubeconfig"),
    ),
}
OPTIONAL: dict[str, Callable[[pytest.FixtureRequest], Datastore]] = {
    "kubernetes-nomirror": lambda request: UnmirroredKubernetesDatastore(
        request.getfixturevalue("kube"),
        request.getfixturevalue("kube_namespace"),
        request.getfixturevalue("plugin_kubeconfig"),
    ),
}
# a run on chosen datastores (kubernetes-nomirror, say); `local_only` cases run on the local one whatever is chosen
CHOSEN = [name for name in os.environ.get("WHEREABOUTS_TEST_DATASTORES", "").split(",") if name] or list(DATASTORES)
DATASTORES = {**DATASTORES, **OPTIONAL}
# the ways a call is served; WHEREABOUTS_TEST_SERVED (comma-separated) chooses among them and "standin" (no node
# daemon: the stand-in the plugin starts serves, whereabouts.cni.main)
CHOSEN_WAYS = os.environ.get("WHEREABOUTS_TEST_SERVED", "")
SERVED = tuple(way for way in CHOSEN_WAYS.split(",") if way) or ("in-process", "daemon")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = ["local"] if metafunc.definition.get_closest_marker("local_only") else CHOSEN
        metafunc.parametrize("backend", names, indirect=True)
    if "served" in metafunc.fixturenames:
        in_process_only = metafunc.definition.get_closest_marker("in_process_only")
        ways = [way for way in SERVED if way == "in-process"] if in_process_only else SERVED
        metafunc.parametrize("served", ways, indirect=True)


@pytest.fixture(scope="session")
def node_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One node daemon for the session's daemon-served cases; its socket."""
    sock = str(tmp_path_factory.mktemp("node-daemon") / "plugin.sock")
    with running_daemon(sock):
        yield sock


@pytest.fixture(scope="session")
def standin_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A node daemon's socket nobody listens on, for the stand-in the session's calls start (stopped by its
    pid at the end)."""
    sock = tmp_path_factory.mktemp("stand-in") / "plugin.sock"
    yield str(sock)
    stop_standin(sock, 10)  # SIGKILL after 10 s: it may be closing stores on servers stopped before it


@pytest.fixture(autouse=True)
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """How `run_cni` has this test's calls served."""
    if request.param == "daemon":
        sock, plugin = request.getfixturevalue("node_daemon"), request.getfixturevalue("compiled_relay")
    elif request.param == "standin":
        sock, plugin = request.getfixturevalue("standin_socket"), request.getfixturevalue("compiled_relay")
        monkeypatch.setenv("WHEREABOUTS_STANDIN", "300")
    else:
        sock, plugin = "", PLUGIN
    with served_through(sock, plugin):
        yield request.param


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest, served: str) -> Iterator[Datastore]:
    """The datastore `netconf` and `held` target for this test."""
    with using_datastore(DATASTORES[request.param](request)) as store:
        yield store
