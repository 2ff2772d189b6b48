"""A per-node, per-pool file lock: calls on one node take turns writing a pool; nodes never wait on each other.

Not a cluster-wide lock. Its only job is to keep one node's concurrent calls from all writing the same
Kubernetes object at the same instant, where each loser costs the API server a full retried write; the
decision and its safety still rest on the store's own guarded writes. If the lock directory cannot be
used, calls go ahead unlocked (slower under contention, never less safe).
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress


@contextmanager
def node_locks(directory: str, names: Sequence[str], timeout: float) -> Iterator[None]:
    fds: list[int] = []
    try:
        for name in sorted(set(names)):  # one order everywhere: no deadlock between calls locking two pools
            fd = _open(directory, name)
            if fd is not None:
                _acquire(fd, timeout)
                fds.append(fd)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock


def _open(directory: str, name: str) -> int | None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return os.open(os.path.join(directory, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None


def _acquire(fd: int, timeout: float) -> None:
    """Block until locked, or give up after `timeout` and go on unlocked."""
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGALRM, _expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            with suppress(_Expired):
                fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.002)


class _Expired(Exception):
    pass


def _expire(signum: int, frame: object) -> None:
    raise _Expired
