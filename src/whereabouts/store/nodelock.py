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
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the CNI process starts on every call)
if TYPE_CHECKING:
    from collections.abc import Sequence


class node_locks:
    """`with node_locks(directory, names, timeout)`: the pools' node-local locks, taken in one order, released
    on exit. (A class, not `contextlib.contextmanager`: the CNI process pays for every import.)"""

    __slots__ = ("directory", "fds", "names", "timeout")

    def __init__(self, directory: str, names: Sequence[str], timeout: float) -> None:
        self.directory, self.names, self.timeout = directory, names, timeout
        self.fds: list[int] = []

    def __enter__(self) -> None:
        try:
            for name in sorted(set(self.names)):  # one order everywhere: no deadlock between calls locking two
                fd = _open(self.directory, name)
                if fd is not None:
                    self.fds.append(fd)
                    _acquire(fd, self.timeout)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        fds, self.fds = self.fds, []
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
    try:
        previous = signal.signal(signal.SIGALRM, _expire)
        main_thread = True
    except ValueError:  # not the main thread (the node daemon's calls): poll below
        main_thread = False
    if main_thread:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except _Expired:
            pass
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
