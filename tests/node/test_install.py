"""install-cni's node files: written whole and with their final mode from their first moment, and a
kubeconfig the plugin reads without PyYAML."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import LocalDatastore, running_daemon, stop_process
from whereabouts.node import install, relay
from whereabouts.node.install import NodeFiles, kubeconfig_text


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual one: a file opened plainly would be readable by all
    yield
    os.umask(previous)


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("first-token\n")
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (directory / "namespace").write_text("kube-system\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.233.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return directory


def node_files(tmp_path: Path, account: Path) -> NodeFiles:
    return NodeFiles(tmp_path / "net.d", account_dir=account, namespace="", node="node-1", cron="30 4 * * *")


def test_the_kubeconfig_is_never_readable_by_others_while_written(
    tmp_path: Path, account: Path, umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int]] = []
    fsync = os.fsync

    def watching_fsync(fd: int) -> None:  # the staging file is complete here, not yet renamed
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_mode & 0o777))
        fsync(fd)

    monkeypatch.setattr(install.os, "fsync", watching_fsync)
    files = node_files(tmp_path, account)
    files.write_all()
    (account / "token").write_text("rotated-token\n")
    assert files.refresh_kubeconfig()
    staged = [mode for name, mode in seen if Path(name).name.startswith(".whereabouts.kubeconfig.")]
    assert staged == [0o600, 0o600]  # the first write and the rotation
    assert files.kubeconfig.stat().st_mode & 0o777 == 0o600
    assert (files.dir / "nodename").stat().st_mode & 0o777 == 0o644


def test_a_link_planted_at_the_staging_path_is_not_written_through(tmp_path: Path, account: Path, umask: None) -> None:
    files = node_files(tmp_path, account)
    files.dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    (files.dir / f".whereabouts.kubeconfig.{os.getpid()}.tmp").symlink_to(elsewhere)
    files.write_all()
    assert elsewhere.read_text() == "untouched"
    assert "first-token" in files.kubeconfig.read_text() and not files.kubeconfig.is_symlink()


def test_the_plugin_reads_the_kubeconfig_without_yaml(tmp_path: Path, account: Path) -> None:
    files = node_files(tmp_path, account)
    files.write_all()
    probe = (
        "import sys\nfrom whereabouts.kube.credentials import load_credentials\n"
        f"c = load_credentials({str(files.kubeconfig)!r})\n"
        "print(c.endpoint.url, c.namespace, c.token, 'yaml' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["https://10.233.0.1:443", "kube-system", "first-token", "False"]


def test_the_kubeconfig_keeps_any_token_text_as_one_string() -> None:
    text = kubeconfig_text(server="https://h:443", ca=b"ca", token="a: b # c", namespace="ns")
    assert json.loads(text)["users"][0]["user"]["token"] == "a: b # c"


def fake_bundle(directory: Path, relay: str | None = None, version: str = "test-bundle") -> Path:
    """A bundle whose `python3.11` runs this test environment's interpreter (the real one is built from an image
    root: tests/realnode), with the compiled `relay` if given: the files install-cni writes are under test."""
    (directory / "bin").mkdir(parents=True)
    (directory / "VERSION").write_text(f"{version}\n")
    python = directory / "bin" / "python3.11"
    python.write_text(f'#!/bin/sh\nshift\nexec {sys.executable} "$@"\n')  # drops the launcher's -IS: site is needed
    python.chmod(0o755)
    if relay:
        shutil.copy(relay, directory / "bin" / "whereabouts-relay")
    return directory


@pytest.mark.parametrize("relay", [False, True], ids=["python-launcher", "compiled-relay"])
@pytest.mark.parametrize("through_daemon", [False, True], ids=["in-process", "node-daemon"])
def test_the_installed_plugin_finds_the_flat_file_in_a_conf_dir_of_any_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, through_daemon: bool, relay: bool, request: pytest.FixtureRequest
) -> None:
    """k3s, OpenShift: a conf dir that is none of the Go plugin's default paths. The executable install-cni
    writes (the launcher, or the compiled relay with its settings) tells the plugin where the flat file is, so a
    config naming only its range works from a pod, served in process or by the node daemon (which gets the
    setting with the call)."""
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)  # patchelf: for the real bundle
    bin_dir, conf_dir, data = tmp_path / "k3s/data/current/bin", tmp_path / "k3s/agent/etc/cni/net.d", tmp_path / "data"
    bin_dir.mkdir(parents=True)
    flat_file = conf_dir / "whereabouts.d" / "whereabouts.conf"
    flat_file.parent.mkdir(parents=True)
    flat_file.write_text(json.dumps({"datastore": "local", "local_data_dir": str(data)}))
    bundle = fake_bundle(tmp_path / "bundle", request.getfixturevalue("compiled_relay") if relay else None)
    install.install_bundle(bundle, bin_dir, log=lambda _: None, flat_file=flat_file)
    assert (bin_dir / "whereabouts").read_bytes().startswith(b"\x7fELF") == relay
    conf = {"cniVersion": "1.0.0", "name": "pods", "ipam": {"type": "whereabouts", "range": "10.97.0.0/29"}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "WHEREABOUTS_"))}
    env |= {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x", "CNI_PATH": "/x",
            "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", "WHEREABOUTS_SOCKET": ""}  # fmt: skip

    def add() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bin_dir / "whereabouts")], input=json.dumps(conf), capture_output=True,
                              text=True, env=env, timeout=60)  # fmt: skip

    if through_daemon:
        env["WHEREABOUTS_SOCKET"] = str(tmp_path / "run" / "plugin.sock")
        with running_daemon(env["WHEREABOUTS_SOCKET"]):
            done = add()
        assert "serving the call in process" not in done.stderr, done.stderr
    else:
        done = add()
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ips"][0]["address"] == "10.97.0.1/29"
    assert LocalDatastore().held(data) == [("10.97.0.1", "c1", "eth0")]


@pytest.mark.parametrize("relay", [False, True], ids=["python-launcher", "compiled-relay"])
def test_uninstall_takes_off_the_node_what_install_cni_and_the_plugin_put_there(
    tmp_path: Path, account: Path, monkeypatch: pytest.MonkeyPatch, relay: bool, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)
    bin_dir, conf_dir, data, run = tmp_path / "bin", tmp_path / "net.d", tmp_path / "data", tmp_path / "run"
    for directory in (bin_dir, conf_dir, data / "locks", run):
        directory.mkdir(parents=True)
    (bin_dir / "bridge").write_text("another plugin")
    (conf_dir / "10-pods.conflist").write_text("{}")
    files = NodeFiles(conf_dir, account_dir=account, namespace="", node="node-1", cron="30 4 * * *")
    files.write_all()
    bundle = fake_bundle(tmp_path / "bundle", request.getfixturevalue("compiled_relay") if relay else None)
    install.install_bundle(bundle, bin_dir, log=lambda _: None, flat_file=files.flat_file)
    assert sorted(os.listdir(bin_dir)) == ["bridge", "whereabouts", *(["whereabouts-python"] if relay else []),
                                           "whereabouts.d"]  # fmt: skip
    (bin_dir / ".whereabouts-python.77.tmp").write_text("left by an install-cni that died")
    (data / "locks" / "10.0.0.0-24.lock").write_text("")
    (data / "whereabouts.db").write_text("a local store: kept")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(run / "plugin.sock"))  # what a daemon killed with -9 leaves
    (run / "fallbacks").write_bytes(b"nu")  # the plugin's calls since (whereabouts.cni.main), not counted yet
    (run / ".fallbacks.counting").write_bytes(b"n")  # and the daemon's, mid-count
    args = ["--uninstall", "--once", f"--cni-bin-dir={bin_dir}", f"--cni-conf-dir={conf_dir}",
            f"--socket={run / 'plugin.sock'}", f"--data-dir={data}"]  # fmt: skip
    assert install.main(args) == 0
    assert sorted(os.listdir(bin_dir)) == ["bridge"]
    assert sorted(os.listdir(conf_dir)) == ["10-pods.conflist"]
    assert not run.exists()
    assert sorted(os.listdir(data)) == ["whereabouts.db"], "the local store stays: containers may hold its addresses"
    assert install.main(args) == 0, "a second run finds nothing to do"


def test_uninstall_leaves_a_whereabouts_plugin_install_cni_did_not_write(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "whereabouts").write_bytes(b"\x7fELF the Go plugin")
    args = ["--uninstall", "--once", f"--cni-bin-dir={bin_dir}", f"--cni-conf-dir={tmp_path / 'net.d'}",
            f"--socket={tmp_path / 'run' / 'plugin.sock'}", f"--data-dir={tmp_path / 'data'}"]  # fmt: skip
    assert install.main(args) == 0
    assert (bin_dir / "whereabouts").read_bytes() == b"\x7fELF the Go plugin"


def test_uninstall_leaves_a_compiled_program_install_cni_did_not_configure(tmp_path: Path, compiled_relay: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(compiled_relay, bin_dir / "whereabouts")  # copied by hand: no note of install-cni's
    args = ["--uninstall", "--once", f"--cni-bin-dir={bin_dir}", f"--cni-conf-dir={tmp_path / 'net.d'}",
            f"--socket={tmp_path / 'run' / 'plugin.sock'}", f"--data-dir={tmp_path / 'data'}"]  # fmt: skip
    assert install.main(args) == 0
    assert (bin_dir / "whereabouts").exists()


def test_the_relay_is_installed_last_beside_the_python_plugin_and_taken_back_with_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled_relay: str
) -> None:
    """The Python plugin is written before the relay that execs it; a bundle without a relay puts the launcher
    back as `whereabouts` and keeps `whereabouts-python` current for a relay still running from before."""
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)
    bin_dir, flat_file = tmp_path / "bin", tmp_path / "net.d" / "whereabouts.d" / "whereabouts.conf"
    bin_dir.mkdir()
    written: list[str] = []
    rename = os.rename
    monkeypatch.setattr(install.os, "rename", lambda a, b: (written.append(Path(b).name), rename(a, b))[1])
    one = fake_bundle(tmp_path / "one", compiled_relay, version="one")
    install.install_bundle(one, bin_dir, log=lambda _: None, flat_file=flat_file)
    assert written == ["INSTALLED", "one", "whereabouts-python", "whereabouts"]  # the bundle's mark, in it, first
    program = (bin_dir / "whereabouts").read_bytes()
    assert relay.note_of(program).startswith(
        "The whereabouts CNI plugin (bundle one), installed by whereabouts-install-cni"
    )
    assert f"WHEREABOUTS_FLAT_FILE={flat_file}\0".encode() in program
    assert relay.configured(Path(compiled_relay).read_bytes(), note=relay.note_of(program),
                            environ={"WHEREABOUTS_FLAT_FILE": str(flat_file)}) == program  # fmt: skip
    launcher = (bin_dir / "whereabouts-python").read_text()
    assert launcher.startswith(f"#!{bin_dir / 'whereabouts.d' / 'one' / 'bin' / 'python3.11'} -IS\n")
    written.clear()
    install.install_bundle(one, bin_dir, log=lambda _: None, flat_file=flat_file)
    assert written == []  # nothing changed: nothing rewritten
    two = fake_bundle(tmp_path / "two", version="two")
    install.install_bundle(two, bin_dir, log=lambda _: None, flat_file=flat_file)
    assert written == ["INSTALLED", "two", "whereabouts-python", "whereabouts"]
    assert (bin_dir / "whereabouts").read_text() == (bin_dir / "whereabouts-python").read_text()
    assert "whereabouts.d/two/bin" in (bin_dir / "whereabouts").read_text()
    assert sorted(os.listdir(bin_dir / "whereabouts.d")) == [".lock", "one", "two"]  # the previous one kept for calls
    three = fake_bundle(tmp_path / "three", compiled_relay, version="three")
    install.install_bundle(three, bin_dir, log=lambda _: None, flat_file=flat_file)
    assert sorted(os.listdir(bin_dir / "whereabouts.d")) == [".lock", "three", "two"]


def test_relay_settings_that_do_not_fit_are_refused(compiled_relay: str) -> None:
    program = Path(compiled_relay).read_bytes()
    with pytest.raises(ValueError, match="do not fit"):
        relay.configured(program, note="n", environ={"WHEREABOUTS_FLAT_FILE": "/x" * 3000})
    with pytest.raises(ValueError, match="not a whereabouts relay"):
        relay.configured(b"\x7fELF another program", note="n")
    assert relay.note_of(program) == "" and relay.note_of(b"#!/bin/sh\n") == ""


INSTALL_CNI = """
import sys
from whereabouts.node import install
install._relocate = lambda staging, final: None  # patchelf: for the real bundle
sys.exit(install.main(sys.argv[1:]))
"""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@contextmanager
def running_install_cni(tmp_path: Path, account: Path, metrics_port: int) -> Iterator[tuple[Path, Path]]:
    """install-cni as the DaemonSet runs it (WHEREABOUTS_METRICS_ADDRESS/_PORT; health on a free port), stopped
    by PID; its log and the CNI bin dir it installed into."""
    bin_dir, conf_dir, sock = tmp_path / "bin", tmp_path / "net.d", tmp_path / "run" / "plugin.sock"
    bin_dir.mkdir()
    log = tmp_path / "install-cni.log"
    args = [f"--bundle={fake_bundle(tmp_path / 'bundle')}", f"--cni-bin-dir={bin_dir}", f"--cni-conf-dir={conf_dir}",
            f"--service-account-dir={account}", f"--socket={sock}", f"--data-dir={tmp_path / 'data'}",
            "--node=node-1", "--no-pod-cleanup", "--health-port=0"]  # fmt: skip
    env = {**os.environ, "WHEREABOUTS_METRICS_ADDRESS": "127.0.0.1", "WHEREABOUTS_METRICS_PORT": str(metrics_port)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", INSTALL_CNI, *args], stderr=out, env=env)
    try:
        deadline = time.monotonic() + 30
        while "node daemon serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield log, bin_dir
    finally:
        stop_process(proc, 10)
    assert proc.returncode == 0 and not sock.exists(), log.read_text()


def ports(log: Path) -> dict[str, int]:
    """install-cni's endpoints, as it logs them."""
    return {kind: int(port) for kind, port in re.findall(r"(health|metrics) on 127\.0\.0\.1:(\d+)", log.read_text())}


def add_through_installed_plugin(bin_dir: Path, data: Path) -> None:
    """An ADD by the plugin install-cni installed, its launcher's settings alone telling it where the daemon is."""
    ipam = {"type": "whereabouts", "range": "10.97.1.0/29", "datastore": "local", "local_data_dir": str(data)}
    conf = {"cniVersion": "1.0.0", "name": "pods", "ipam": ipam}
    call = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "WHEREABOUTS_"))}
    call |= {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x", "CNI_PATH": "/x"}
    done = subprocess.run([str(bin_dir / "whereabouts")], input=json.dumps(conf), capture_output=True, text=True,
                          env=call, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "in process" not in done.stderr, done.stdout + done.stderr  # the daemon's


ADD_SERVED = ("whereabouts_node_calls_total", (("code", "0"), ("verb", "ADD")))


def test_install_cni_serves_the_node_daemons_metrics_on_the_metrics_port(tmp_path: Path, account: Path) -> None:
    """The node daemon's metrics beside install-cni's own, on the metrics port for Prometheus; health stays on
    127.0.0.1 and serves them too; the plugin it installs finds the daemon."""
    with running_install_cni(tmp_path, account, metrics_port=0) as (log, bin_dir):
        endpoints = ports(log)
        assert set(endpoints) == {"health", "metrics"} and endpoints["health"] != endpoints["metrics"]
        add_through_installed_plugin(bin_dir, tmp_path / "data")
        found = scrape(endpoints["metrics"])
        assert found[ADD_SERVED] == 1
        assert found[("whereabouts_ready", ())] == 1
        assert scrape(endpoints["health"])[ADD_SERVED] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoints['health']}/healthz", timeout=10) as reply:
            assert reply.status == 200


def test_a_metrics_port_taken_leaves_the_node_daemon_serving(tmp_path: Path, account: Path) -> None:
    """Another program on the node holds the port: install-cni says so and goes on (a CNI plugin must not wait
    on a metrics port); /metrics stays on the health endpoint."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with running_install_cni(tmp_path, account, metrics_port=taken.getsockname()[1]) as (log, bin_dir):
            assert f"cannot serve metrics on 127.0.0.1:{taken.getsockname()[1]}" in log.read_text()
            add_through_installed_plugin(bin_dir, tmp_path / "data")
            assert scrape(ports(log)["health"])[ADD_SERVED] == 1


def test_without_the_node_daemon_the_plugin_never_looks_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-node-daemon: the launcher tells the plugin so; a call then leaves no fallback byte in the run
    directory (which the DaemonSet's mount keeps), where nobody would ever count them."""
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)
    bin_dir, run, data = tmp_path / "bin", tmp_path / "run", tmp_path / "data"
    bin_dir.mkdir()
    run.mkdir()
    ipam = {"type": "whereabouts", "range": "10.97.2.0/29", "datastore": "local", "local_data_dir": str(data)}
    conf = {"cniVersion": "1.0.0", "name": "pods", "ipam": ipam}
    call = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "WHEREABOUTS_"))}
    call |= {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x", "CNI_PATH": "/x"}
    bundle = fake_bundle(tmp_path / "bundle")
    for socket_path, recorded in ((str(run / "plugin.sock"), b"n"), ("", b"n")):  # the daemon's, then none
        install.install_bundle(bundle, bin_dir, log=lambda _: None, socket_path=socket_path)
        done = subprocess.run([str(bin_dir / "whereabouts")], input=json.dumps(conf), capture_output=True,
                              text=True, env=call, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert (run / "fallbacks").read_bytes() == recorded


RACER = """
import os, sys, time
from pathlib import Path
from whereabouts.node import install
os.getpid = lambda: 1  # as in the DaemonSet's container: each install-cni is its own PID namespace's first process
install._relocate = lambda staging, final: time.sleep(0.2)  # patchelf's time: the other copy goes on meanwhile
bundle, bin_dir, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
install.install_bundle(bundle, bin_dir, flat_file=bin_dir / "whereabouts.conf", socket_path="")
"""


def many_file_bundle(directory: Path, version: str = "many") -> Path:
    """A bundle that is the plugin's only source of whereabouts (as the real one is), with a standard library's
    worth of other files: a copy missing any of them is not a working plugin."""
    bundle = fake_bundle(directory, version=version)
    lib = bundle / "lib" / "python3.11"
    shutil.copytree(Path(install.__file__).parents[1], lib / "whereabouts",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for i in range(20):
        (lib / f"pkg{i:02d}").mkdir()
        for j in range(50):
            (lib / f"pkg{i:02d}" / f"m{j}.py").write_bytes(os.urandom(2048))
    python = bundle / "bin" / "python3.11"
    python.write_text(f'#!/bin/sh\nshift\nPYTHONPATH="$(dirname "$0")/../lib/python3.11" exec {sys.executable} "$@"\n')
    return bundle


def files_of(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def plugin_version(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "WHEREABOUTS_"))}
    return subprocess.run([str(bin_dir / "whereabouts")], input='{"cniVersion": "1.0.0"}', capture_output=True,
                          text=True, env={**env, "CNI_COMMAND": "VERSION"}, timeout=60)  # fmt: skip


@pytest.mark.parametrize("offset", [0.0, 0.05, 0.15])
def test_two_install_cni_with_the_same_pid_at_once_install_one_complete_bundle(tmp_path: Path, offset: float) -> None:
    """Two install-cni on one node (two DaemonSets, a second copy), each PID 1 in its container: the bundle
    installed is complete and the plugin works, whichever starts first. Staging names made from the PID had
    each delete the other's copy under way, and the first rename published a half-made bundle for good."""
    bundle, bin_dir = many_file_bundle(tmp_path / "bundle"), tmp_path / "bin"
    bin_dir.mkdir()
    start = time.time() + 1.5  # both started and imported by then
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(bundle), str(bin_dir), str(start + delay)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
              for delay in (0.0, offset)]  # fmt: skip
    try:
        outputs = [racer.communicate(timeout=120)[0].decode() for racer in racers]
    finally:
        for racer in racers:
            stop_process(racer, 10)
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    home = bin_dir / "whereabouts.d"
    assert files_of(home / "many") == files_of(bundle) | {"INSTALLED"}
    assert (home / "many").stat().st_mode & 0o777 == bundle.stat().st_mode & 0o777 == 0o755
    assert sorted(os.listdir(home)) == [".lock", "many"], "no staging copy left"
    done = plugin_version(bin_dir)
    assert done.returncode == 0 and "supportedVersions" in done.stdout, done.stdout + done.stderr


def test_an_incomplete_bundle_found_installed_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle published half-made (by an install-cni before this one, or copied by hand) is not trusted for
    being there: the next install-cni replaces it, and the plugin works again."""
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)
    bundle, bin_dir, logged = many_file_bundle(tmp_path / "bundle"), tmp_path / "bin", []
    bin_dir.mkdir()
    install.install_bundle(bundle, bin_dir, log=logged.append, socket_path="")
    installed = bin_dir / "whereabouts.d" / "many"
    (installed / "INSTALLED").unlink(missing_ok=True)
    shutil.rmtree(installed / "lib" / "python3.11" / "whereabouts" / "cni")
    assert plugin_version(bin_dir).returncode != 0
    install.install_bundle(bundle, bin_dir, log=logged.append, socket_path="")
    assert f"install-cni: replaced the incomplete bundle {installed}" in logged
    assert files_of(installed) == files_of(bundle) | {"INSTALLED"}
    assert plugin_version(bin_dir).returncode == 0
    assert sorted(os.listdir(bin_dir / "whereabouts.d")) == [".lock", "many"]


def test_only_staging_leftovers_older_than_a_live_install_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staging copy or file may be another install-cni's work in progress: removed only once untouched for
    minutes (its writer died)."""
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)
    bundle, bin_dir = fake_bundle(tmp_path / "bundle"), tmp_path / "bin"
    (bin_dir / "whereabouts.d" / ".test-bundle.x1y2z3ab.tmp" / "bin").mkdir(parents=True)
    (bin_dir / ".whereabouts.q9r8s7tu.tmp").write_text("a launcher half-written")
    leftovers = sorted(p for p in (*bin_dir.iterdir(), *(bin_dir / "whereabouts.d").iterdir()) if p.name[0] == ".")
    install.install_bundle(bundle, bin_dir, log=lambda _: None, socket_path="")
    assert all(p.exists() for p in leftovers), "may be a live writer's"
    later = time.time() + install.STALE + 1
    monkeypatch.setattr(install.time, "time", lambda: later)
    install.install_bundle(bundle, bin_dir, log=lambda _: None, socket_path="")
    assert not any(p.exists() for p in leftovers)


def test_two_writers_of_one_file_each_publish_a_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second writer of the same file (the same PID, in another container) starting while the first is
    writing: each publishes its own whole file; neither takes away or publishes the other's staging file."""
    path, sync, nested = tmp_path / "whereabouts", os.fsync, []

    def fsync_with_a_second_writer(fd: int) -> None:  # the first writer's file written, not yet renamed
        if not nested:
            nested.append("started")
            nested.append(install._write_atomically(path, b"B" * 100_000, mode=0o755, log=lambda _: None))
        sync(fd)

    monkeypatch.setattr(install.os, "fsync", fsync_with_a_second_writer)
    assert install._write_atomically(path, b"A" * 100_000, mode=0o755, log=lambda _: None)
    assert nested == ["started", True]
    assert path.read_bytes() == b"A" * 100_000, "the last renamed, whole"
    assert os.listdir(tmp_path) == ["whereabouts"]


def test_a_symlinked_files_directory_is_refused_by_install_and_uninstall(
    tmp_path: Path, account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`<conf dir>/whereabouts.d` a link elsewhere: install-cni would write the token there, the uninstall
    delete there. Both refuse, saying why, and touch nothing, the bin dir included."""
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)
    bin_dir, conf_dir, elsewhere = tmp_path / "bin", tmp_path / "net.d", tmp_path / "elsewhere"
    for directory in (bin_dir, conf_dir, elsewhere):
        directory.mkdir()
    (elsewhere / "nodename").write_text("theirs")
    (elsewhere / ".their-work.tmp").write_text("theirs")
    (conf_dir / "whereabouts.d").symlink_to(elsewhere)
    common = [f"--cni-bin-dir={bin_dir}", f"--cni-conf-dir={conf_dir}", f"--socket={tmp_path / 'run' / 'p.sock'}",
              f"--data-dir={tmp_path / 'data'}", "--once"]  # fmt: skip
    install_args = [f"--bundle={fake_bundle(tmp_path / 'bundle')}", f"--service-account-dir={account}", *common]
    for args in (install_args, ["--uninstall", *common]):
        with pytest.raises(SystemExit, match=f"{conf_dir / 'whereabouts.d'} is a symbolic link"):
            install.main(args)
        assert sorted(os.listdir(elsewhere)) == [".their-work.tmp", "nodename"]
        assert (elsewhere / "nodename").read_text() == "theirs"
        assert os.listdir(bin_dir) == []


def test_uninstall_removes_its_own_staging_files_only(tmp_path: Path, account: Path) -> None:
    files = node_files(tmp_path, account)
    files.write_all()
    (files.dir / ".whereabouts.kubeconfig.k2j4h6g8.tmp").write_text("left by an install-cni that died")
    (files.dir / ".another-tool.tmp").write_text("not ours")
    args = ["--uninstall", "--once", f"--cni-bin-dir={tmp_path / 'bin'}", f"--cni-conf-dir={tmp_path / 'net.d'}",
            f"--socket={tmp_path / 'run' / 'plugin.sock'}", f"--data-dir={tmp_path / 'data'}"]  # fmt: skip
    assert install.main(args) == 0
    assert os.listdir(files.dir) == [".another-tool.tmp"]


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "yes", "Yes", "on", " true "])
def test_uninstall_is_asked_by_any_true_value(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHEREABOUTS_UNINSTALL", value)
    assert install.parser().parse_args([]).uninstall is True


@pytest.mark.parametrize("value", ["", "0", "false", "False", "NO", "off"])
def test_install_is_asked_by_any_false_value(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHEREABOUTS_UNINSTALL", value)
    assert install.parser().parse_args([]).uninstall is False


@pytest.mark.parametrize("value", ["ture", "2", "uninstall", "y es"])
def test_a_value_neither_true_nor_false_stops_install_cni(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rather than install when the operator misspelt asking for the uninstall."""
    monkeypatch.setenv("WHEREABOUTS_UNINSTALL", value)
    with pytest.raises(SystemExit, match=f"WHEREABOUTS_UNINSTALL={value!r} is neither true nor false"):
        install.main(["--once"])


def account_of(tmp_path: Path, name: str, token: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return directory


def token_in(files: NodeFiles) -> str:
    return str(json.loads(files.kubeconfig.read_text())["users"][0]["user"]["token"])


def test_the_pod_that_stays_puts_its_own_token_back(tmp_path: Path, account: Path) -> None:
    """Two pods on a node (a surge update, a second DaemonSet) each write the kubeconfig with their own token
    when they find another in it. The one that wrote last may be deleted next, and its bound token then stops
    working: the pod that stays must put its own back at its next check, not wait for its own token to rotate
    (an hour) with every call on the node refused meanwhile."""
    old, new = (NodeFiles(tmp_path / "net.d", account_dir=account_of(tmp_path, name, f"{name}-token"),
                          namespace="kube-system", node="node-1", cron="30 4 * * *")
                for name in ("old", "new"))  # fmt: skip
    old.write_all()
    new.write_all()
    (old.account_dir / "token").write_text("old-rotated")
    assert old.refresh_kubeconfig() and token_in(old) == "old-rotated"  # the old pod's kubelet refreshed it
    assert new.refresh_kubeconfig() and token_in(new) == "new-token"  # the old pod is gone: one check puts it back
    assert new.kubeconfig.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("relay", [False, True], ids=["python-launcher", "compiled-relay"])
def test_the_installed_plugin_is_told_how_long_a_stand_in_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relay: bool, request: pytest.FixtureRequest
) -> None:
    """--stand-in SECONDS (default 60) reaches the plugin as WHEREABOUTS_STANDIN, in the launcher and in the
    compiled relay's settings; 0, or no node daemon, tells it nothing (no stand-in is ever started)."""
    monkeypatch.setattr(install, "_relocate", lambda staging, final: None)
    bundle = fake_bundle(tmp_path / "bundle", request.getfixturevalue("compiled_relay") if relay else None)
    assert install.parser().parse_args([]).stand_in == 60
    monkeypatch.setenv("WHEREABOUTS_STANDIN", "15")
    assert install.parser().parse_args([]).stand_in == 15
    for n, (socket_path, stand_in, told) in enumerate(
        [("/run/w/plugin.sock", 60, True), ("/run/w/plugin.sock", 0, False), ("", 60, False)]
    ):
        bin_dir = tmp_path / f"bin-{n}"
        bin_dir.mkdir()
        install.install_bundle(bundle, bin_dir, log=lambda _: None, socket_path=socket_path, stand_in=stand_in)
        launcher = (bin_dir / ("whereabouts-python" if relay else "whereabouts")).read_text()
        assert ("os.environ.setdefault('WHEREABOUTS_STANDIN', '60')" in launcher) == told
        if relay:
            assert (b"\0WHEREABOUTS_STANDIN=60\0" in (bin_dir / "whereabouts").read_bytes()) == told


@pytest.mark.parametrize("value", ["sixty", "-1", "1.5", "6 0"])
def test_a_stand_in_time_that_is_no_whole_number_stops_install_cni_saying_so(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WHEREABOUTS_STANDIN", value)
    with pytest.raises(SystemExit, match=r"WHEREABOUTS_STANDIN=.* is not a whole number of seconds"):
        install.parser()
