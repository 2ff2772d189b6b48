"""The node daemon: calls handed over on its socket are served as in process; without it, nothing changes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import whereabouts.cni.main as cni_main
from support import netconf, run_cni, running_daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    sock = str(tmp_path / "run" / "plugin.sock")
    with running_daemon(sock) as proc:
        yield proc, sock


def test_calls_through_the_daemon_match_in_process(daemon: tuple, tmp_path: Path) -> None:
    _, sock = daemon
    conf = netconf(tmp_path, range="10.95.0.0/29", gateway="10.95.0.1")
    via = run_cni("ADD", conf, container_id="d1", env={"WHEREABOUTS_SOCKET": sock})
    direct = run_cni("ADD", conf, container_id="d2")
    assert via.returncode == direct.returncode == 0
    assert via.json == {"cniVersion": "1.0.0", "ips": [{"address": "10.95.0.2/29", "gateway": "10.95.0.1"}]}
    assert direct.addresses() == ["10.95.0.3/29"]  # one store, whichever process wrote it
    error = run_cni("ADD", b"{nope", env={"WHEREABOUTS_SOCKET": sock})
    assert error.returncode == 1 and error.json["code"] == 6
    assert run_cni("DEL", conf, container_id="d1", env={"WHEREABOUTS_SOCKET": sock}).returncode == 0
    assert run_cni("ADD", conf, container_id="d3").addresses() == ["10.95.0.2/29"]


def test_the_daemon_does_the_work(daemon: tuple, tmp_path: Path) -> None:
    """With the daemon's socket, the plugin process never loads the IPAM code: proven by breaking it."""
    _, sock = daemon
    conf = netconf(tmp_path, range="10.95.1.0/29")
    broken = tmp_path / "broken"
    (broken / "whereabouts" / "cni").mkdir(parents=True)
    (broken / "whereabouts" / "__init__.py").write_text("")
    (broken / "whereabouts" / "cni" / "__init__.py").write_text("")
    (broken / "whereabouts" / "cni" / "main.py").write_text(Path(cni_main.__file__).read_text())
    (broken / "whereabouts" / "cni" / "call.py").write_text("raise ImportError('in-process path used')\n")
    env = {"PYTHONPATH": str(broken)}
    assert run_cni("ADD", conf, container_id="x", env={**env, "WHEREABOUTS_SOCKET": sock}).addresses() == [
        "10.95.1.1/29"
    ]
    assert run_cni("ADD", conf, container_id="y", env={**env, "WHEREABOUTS_SOCKET": ""}).returncode != 0


def test_burst_through_the_daemon_and_no_leaked_descriptors(daemon: tuple, tmp_path: Path) -> None:
    proc, sock = daemon
    conf = netconf(tmp_path, range="10.95.2.0/24")
    env = {"WHEREABOUTS_SOCKET": sock}
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda n: run_cni("ADD", conf, container_id=f"b{n}", env=env), range(120)))
    assert all(r.returncode == 0 for r in results)
    assert sorted(r.addresses()[0] for r in results) == sorted(f"10.95.2.{n}/24" for n in range(1, 121))
    with ThreadPoolExecutor(max_workers=40) as pool:
        assert all(
            r.returncode == 0
            for r in pool.map(lambda n: run_cni("DEL", conf, container_id=f"b{n}", env=env), range(120))
        )
    assert len(os.listdir(f"/proc/{proc.pid}/fd")) < 20  # every call's store was closed


def test_daemon_gone_mid_burst_calls_still_succeed(daemon: tuple, tmp_path: Path) -> None:
    proc, sock = daemon
    conf = netconf(tmp_path, range="10.95.3.0/24")
    env = {"WHEREABOUTS_SOCKET": sock}

    def add(n: int):
        if n == 30:
            proc.kill()  # SIGKILL: the socket file stays behind, nobody answers it
        return run_cni("ADD", conf, container_id=f"g{n}", env=env)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(add, range(80)))
    assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:2]
    addresses = [r.addresses()[0] for r in results]
    assert len(set(addresses)) == 80
