"""The node daemon's metrics, scraped over HTTP from a real `whereabouts-node` serving real calls on its socket
(read back with prometheus_client's own parser): calls by verb and code, latencies, group-commit sizes,
declines, the executable's fallback bytes (counted once, across restarts), store errors, and labels that
hostile callers cannot multiply."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import whereabouts.cni.main as cni_main
import whereabouts.node.metrics as node_metrics
from etcd_server import EtcdServer
from support import netconf, run_cni, running_daemon
from whereabouts.controller.metrics import Registry
from whereabouts.node.daemon import MAX_REQUEST, start_serving
from whereabouts.node.metrics import TAKEN, VERBS

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Daemon:
    def __init__(self, sock: str, port: int) -> None:
        self.sock, self.port = sock, port

    def scrape(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def env(self) -> dict[str, str]:
        return {"WHEREABOUTS_SOCKET": self.sock}


@contextmanager
def metrics_daemon(tmp_path: Path, name: str = "run") -> Iterator[Daemon]:
    """whereabouts-node with its metrics on a free loopback port (read from its log)."""
    sock, log = str(tmp_path / name / "plugin.sock"), tmp_path / f"{name}-{time.monotonic_ns()}.log"
    with running_daemon(sock, log=log, args=("--metrics-address", "127.0.0.1", "--metrics-port", "0")):
        deadline = time.monotonic() + 20
        while not (found := re.search(r"metrics on 127\.0\.0\.1:(\d+)", log.read_text())):
            assert time.monotonic() < deadline, "whereabouts-node did not say where its metrics are"
            time.sleep(0.05)
        yield Daemon(sock, int(found.group(1)))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample, labels in samples if sample == name]


def test_calls_are_counted_by_verb_and_code_with_their_latency(tmp_path: Path) -> None:
    conf = netconf(tmp_path, range="10.94.0.0/29")
    with metrics_daemon(tmp_path) as daemon:
        assert run_cni("ADD", conf, container_id="m1", env=daemon.env()).returncode == 0
        assert run_cni("ADD", conf, container_id="m2", env=daemon.env()).returncode == 0
        failed = run_cni("ADD", netconf(tmp_path, range="10.94.0.0/33"), container_id="m3", env=daemon.env())
        assert failed.returncode == 1 and failed.json["code"] == 7, failed.stdout
        assert run_cni("DEL", conf, container_id="m1", env=daemon.env()).returncode == 0
        found = daemon.scrape()
        # each counted in when taken, out once answered
        wait_until(lambda: value(daemon.scrape(), "whereabouts_node_calls_in_flight") == 0, "none in flight")
    calls = "whereabouts_node_calls_total"
    assert value(found, calls, verb="ADD", code="0") == 2
    assert value(found, calls, verb="ADD", code="7") == 1
    assert value(found, calls, verb="DEL", code="0") == 1
    duration = "whereabouts_node_call_duration_seconds"
    assert value(found, f"{duration}_count", verb="ADD") == 3
    assert value(found, f"{duration}_count", verb="DEL") == 1
    add_buckets = [labels for labels in series(found, f"{duration}_bucket") if labels["verb"] == "ADD"]
    buckets = {labels["le"]: value(found, f"{duration}_bucket", **labels) for labels in add_buckets}
    assert buckets["+Inf"] == 3 and "0.005" in buckets and buckets["60.0"] == 3
    assert 0 < value(found, f"{duration}_sum", verb="ADD") < 60
    assert value(found, "whereabouts_node_open_stores") >= 1  # the local store, kept for the next call


def test_a_burst_of_adds_is_served_in_group_commit_rounds_whose_sizes_are_counted(tmp_path: Path) -> None:
    """The first ADD of the burst is held up by the store's write lock (taken here): the others arrive in the
    meantime and wait for the next round, which serves them together."""
    conf, calls = netconf(tmp_path, range="10.94.1.0/24"), 20
    with metrics_daemon(tmp_path) as daemon:
        assert run_cni("ADD", conf, container_id="g-first", env=daemon.env()).returncode == 0  # makes the store
        with closing(sqlite3.connect(tmp_path / "whereabouts.db", isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock: the daemon's first round waits for it
            with ThreadPoolExecutor(max_workers=calls) as pool:
                burst = [
                    pool.submit(run_cni, "ADD", conf, container_id=f"g{n}", env=daemon.env()) for n in range(calls)
                ]
                wait_until(lambda: value(daemon.scrape(), "whereabouts_node_calls_in_flight") == calls, "all in")
                time.sleep(0.5)  # for each to reach its group's queue
                db.execute("ROLLBACK")
                results = [call.result() for call in burst]
        assert all(r.returncode == 0 for r in results), [r.stdout for r in results if r.returncode][:2]
        found = daemon.scrape()
    size = "whereabouts_node_batch_size"
    rounds, requests = value(found, f"{size}_count", verb="ADD"), value(found, f"{size}_sum", verb="ADD")
    assert requests == calls + 1, "every ADD went through a round"
    assert value(found, f"{size}_bucket", verb="ADD", le="64.0") == rounds
    assert value(found, f"{size}_bucket", verb="ADD", le="4.0") < rounds, "a round served more than 4 ADDs"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def test_a_request_over_the_size_limit_is_declined_and_counted(tmp_path: Path) -> None:
    with metrics_daemon(tmp_path) as daemon:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as caller:
            caller.connect(daemon.sock)
            caller.sendall((MAX_REQUEST + 1).to_bytes(4, "big"))  # an environment larger than the daemon takes
            caller.settimeout(10)
            assert caller.recv(1) == b"R"
        found = daemon.scrape()  # counted before the answer was sent
    assert value(found, "whereabouts_node_fallbacks_total", reason="size") == 1
    assert series(found, "whereabouts_node_calls_total") == [], "a declined call is no call served"


def test_a_call_whose_flat_file_the_caller_sees_apart_is_declined_and_counted(tmp_path: Path) -> None:
    """The caller answers the daemon's question about the flat file with another file than the daemon's: the
    call is handed back, counted under `files`."""
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "local", "local_data_dir": str(tmp_path)}))
    env = "\0".join(f"{k}={v}" for k, v in {**CALL, "WHEREABOUTS_FLAT_FILE": str(flat)}.items()).encode()
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "whereabouts", "range": "10.94.5.0/24"}})
    with metrics_daemon(tmp_path) as daemon:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as caller:
            caller.connect(daemon.sock)
            caller.settimeout(10)
            caller.sendall(len(env).to_bytes(4, "big") + env + len(stdin).to_bytes(4, "big") + stdin.encode())
            assert caller.recv(1) == b"S"
            asked = caller.recv(int.from_bytes(caller.recv(4), "big"))
            assert asked == str(flat).encode()
            caller.sendall(b"s" + (4).to_bytes(4, "big") + b"1:99")  # another file than the daemon's
            reason = b"".join(iter(lambda: caller.recv(4096), b""))
        found = daemon.scrape()
    assert reason.startswith(b"R") and b"not the same file" in reason, reason
    assert value(found, "whereabouts_node_fallbacks_total", reason="files") == 1
    assert series(found, "whereabouts_node_calls_total") == [], "a declined call is no call served"


CALL = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x", "CNI_PATH": "/x"}


def fallbacks(daemon: Daemon) -> dict[str, float]:
    found = daemon.scrape()
    return {labels["reason"]: value(found, "whereabouts_node_fallbacks_total", **labels)
            for labels in series(found, "whereabouts_node_fallbacks_total")}  # fmt: skip


def test_fallbacks_while_no_daemon_listens_are_counted_once_when_it_is_back(tmp_path: Path) -> None:
    run_dir, conf = tmp_path / "run", netconf(tmp_path, range="10.94.2.0/24")
    env = {"WHEREABOUTS_SOCKET": str(run_dir / "plugin.sock")}
    assert run_cni("ADD", conf, container_id="f0", env=env).returncode == 0
    assert not run_dir.exists(), "no directory, no daemon installed: nothing is written, nothing made"
    run_dir.mkdir()
    for n in range(3):  # the daemon stopped: its directory is there, its socket not
        assert run_cni("ADD", conf, container_id=f"f{n + 1}", env=env).returncode == 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(env["WHEREABOUTS_SOCKET"])  # a socket nobody listens on: a daemon killed with SIGKILL
    assert run_cni("ADD", conf, container_id="f4", env=env).returncode == 0
    assert (run_dir / "fallbacks").read_bytes() == b"nnnu"
    assert (run_dir / "fallbacks").stat().st_mode & 0o777 == 0o600
    with metrics_daemon(tmp_path) as daemon:
        counted = fallbacks(daemon)
        assert not (run_dir / "fallbacks").exists(), "consumed"
        assert run_cni("ADD", conf, container_id="f5", env=env).returncode == 0  # served by the daemon: no byte
        again = fallbacks(daemon)
    assert (counted["stopped"], counted["unreachable"], counted["died"], counted["busy"]) == (3, 1, 0, 0)
    assert again == counted
    (run_dir / "fallbacks").write_bytes(b"n")  # one more while it was away
    with metrics_daemon(tmp_path) as daemon:
        assert fallbacks(daemon)["stopped"] == 1, "what the first daemon counted is not counted again"


def test_a_file_left_mid_count_is_counted_once_and_unknown_bytes_are_counted_as_such(tmp_path: Path) -> None:
    """A daemon that died between renaming the file and removing it had not counted it: the next one does;
    bytes the executable does not write (a newer relay's) count as unknown."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / TAKEN).write_bytes(b"dd")
    (run_dir / "fallbacks").write_bytes(b"bz")
    with metrics_daemon(tmp_path) as daemon:
        counted = fallbacks(daemon)
        assert sorted(os.listdir(run_dir)) == ["plugin.sock"]
    assert (counted["died"], counted["busy"], counted["unknown"], counted["stopped"]) == (2, 1, 1, 0)


def test_the_relay_writes_one_byte_per_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """d: the daemon went away mid-call; b: it did not answer in time (answered code 11, not served)."""
    record = tmp_path / "fallbacks"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "d.sock"))
    listener.listen(4)
    held: list[socket.socket] = []

    def accept(close: bool) -> None:
        conn, _ = listener.accept()
        conn.recv(10)
        if close:
            conn.close()
        else:
            held.append(conn)

    for close, expected in ((True, b"d"), (False, b"db")):
        thread = threading.Thread(target=accept, args=(close,))
        thread.start()
        monkeypatch.setattr(cni_main, "ANSWER_WAIT", 1)
        answer = cni_main.relay(str(tmp_path / "d.sock"), {"CNI_COMMAND": "ADD"}, b"{}")
        thread.join()
        if close:
            assert isinstance(answer, str) and "went away" in answer, answer  # then served in process
        else:
            assert isinstance(answer, tuple) and json.loads(answer[1])["code"] == 11, answer  # not served
        assert record.read_bytes() == expected
    for conn in [*held, listener]:
        conn.close()
    record.unlink()
    record.symlink_to(tmp_path / "elsewhere")
    assert cni_main.relay(str(tmp_path / "gone.sock"), {}, b"{}") == ""  # never written through a link
    assert not (tmp_path / "elsewhere").exists()


def test_store_errors_are_counted_by_datastore_and_error(tmp_path: Path, etcd_prefix: str) -> None:
    server = EtcdServer(tmp_path / "etcd-data").start()
    conf = netconf(tmp_path, range="10.94.3.0/24", etcd_host=server.url, etcd_prefix=etcd_prefix)
    try:
        with metrics_daemon(tmp_path) as daemon:
            assert run_cni("ADD", conf, container_id="e1", env=daemon.env()).returncode == 0
            server.stop()
            failed = run_cni("ADD", conf, container_id="e2", env=daemon.env())
            found = daemon.scrape()
    finally:
        server.stop()
    assert failed.returncode == 1 and failed.json["code"] == 11, failed.stdout
    errors = series(found, "whereabouts_node_store_errors_total")
    assert errors and {labels["datastore"] for labels in errors} == {"etcd"}, errors
    assert sum(value(found, "whereabouts_node_store_errors_total", **labels) for labels in errors) >= 1
    assert value(found, "whereabouts_node_calls_total", verb="ADD", code="11") == 1


def raw_call(sock: str, environ: dict[str, str], stdin: bytes) -> bytes:
    """One call in the wire format (whereabouts.cni.main), without a CNI process: its answer frame."""
    env = "\0".join(f"{k}={v}" for k, v in environ.items()).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as caller:
        caller.connect(sock)
        caller.sendall(len(env).to_bytes(4, "big") + env + len(stdin).to_bytes(4, "big") + stdin)
        caller.settimeout(10)
        chunks = []
        while chunk := caller.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_hostile_verbs_do_not_grow_the_series(tmp_path: Path) -> None:
    stdin = json.dumps(netconf(tmp_path, range="10.94.4.0/24")).encode()
    with metrics_daemon(tmp_path) as daemon:
        for n in range(200):
            environ = {"CNI_COMMAND": f"EVIL-{n}", "CNI_CONTAINERID": "h", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x",
                       "CNI_PATH": "/x"}  # fmt: skip
            answer = raw_call(daemon.sock, environ, stdin)
            assert answer[:5] == b"W\x00\x00\x00\x01" and json.loads(answer[5:])["code"] == 4
        found = daemon.scrape()
    calls = series(found, "whereabouts_node_calls_total")
    assert calls == [{"verb": "other", "code": "4"}]
    assert value(found, "whereabouts_node_calls_total", verb="other", code="4") == 200
    assert {labels["verb"] for labels in series(found, "whereabouts_node_call_duration_seconds_count")} <= {
        *VERBS,
        "other",
    }


def test_the_file_is_consumed_every_so_often_even_when_nobody_scrapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose metrics nobody scrapes: the file stays a few bytes long all the same."""
    monkeypatch.setattr(node_metrics, "TAKE_EVERY", 0.2)
    registry = Registry()
    server = start_serving(str(tmp_path / "run" / "plugin.sock"), quiet=True, registry=registry)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fallbacks = registry.metrics["whereabouts_node_fallbacks_total"]
    try:
        for n in range(1, 4):
            (tmp_path / "run" / "fallbacks").write_bytes(b"u")  # as the executable appends it
            wait_until(lambda: not (tmp_path / "run" / "fallbacks").exists(), "the file consumed")
            # read without a scrape: counted by the daemon's own loop
            wait_until(lambda n=n: fallbacks.value(reason="unreachable") == n, f"{n} counted")
    finally:
        server.shutdown()
        server.server_close()
