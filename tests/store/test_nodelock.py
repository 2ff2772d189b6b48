"""The per-node, per-pool file lock (whereabouts.store.nodelock): calls on one node take turns on a pool, a
wait ends at its timeout (going ahead unlocked), and nothing stays locked or changed after the call."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from whereabouts.store.nodelock import node_locks

HOLD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from whereabouts.store.nodelock import node_locks
with node_locks(sys.argv[2], ["pool-a"], timeout=5):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def holder(directory: Path, seconds: float) -> subprocess.Popen[str]:
    """Another call on this node holding pool-a's lock for `seconds`."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, src, str(directory), str(seconds)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_call_waits_for_the_other_to_finish_with_the_pool(tmp_path: Path) -> None:
    other = holder(tmp_path, 0.5)
    started = time.monotonic()
    with node_locks(str(tmp_path), ["pool-a"], timeout=10):
        waited = time.monotonic() - started
    assert 0.2 < waited < 5  # until the other let go (it holds the lock for 0.5 s)
    other.wait()


def test_a_wait_ends_at_its_timeout_and_goes_on_unlocked_and_the_alarm_is_restored(tmp_path: Path) -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGALRM, mine)
    other = holder(tmp_path, 5)
    try:
        started = time.monotonic()
        with node_locks(str(tmp_path), ["pool-a"], timeout=0.3):
            assert 0.2 < time.monotonic() - started < 3  # went ahead without the lock
        assert signal.getsignal(signal.SIGALRM) is mine
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        other.kill()
        other.wait()
        signal.signal(signal.SIGALRM, previous)


def test_off_the_main_thread_the_wait_polls_until_its_timeout(tmp_path: Path) -> None:
    other = holder(tmp_path, 5)
    took: list[float] = []

    def call() -> None:
        started = time.monotonic()
        with node_locks(str(tmp_path), ["pool-a"], timeout=0.3):
            took.append(time.monotonic() - started)

    try:
        thread = threading.Thread(target=call)
        thread.start()
        thread.join(10)
        assert len(took) == 1 and 0.2 < took[0] < 3
    finally:
        other.kill()
        other.wait()


def test_the_locks_are_released_when_the_call_ends_or_fails(tmp_path: Path) -> None:
    with node_locks(str(tmp_path), ["pool-b", "pool-a", "pool-b"], timeout=1):
        pass
    with pytest.raises(RuntimeError), node_locks(str(tmp_path), ["pool-a"], timeout=1):
        raise RuntimeError("the call failed")
    for name in ("pool-a", "pool-b"):  # another can take each at once
        fd = os.open(tmp_path / f"{name}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_a_directory_that_cannot_be_used_means_no_lock_not_a_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with node_locks(str(blocker / "locks"), ["pool-a"], timeout=1):
        pass
