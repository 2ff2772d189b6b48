"""What serving a CNI call may use beyond the call itself.

In process (one call, then the process ends) a throwaway `Runtime()`; in the node daemon, one per call that
shares the process's batcher, plus a `Peer`: the process that handed the call over, which the daemon asks
what it sees before serving a local-store call.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from whereabouts.batch import Batcher


class ServeInProcess(Exception):
    """The daemon declines the call: the caller serves it itself (never a CNI error)."""


class Peer:
    """The caller on the other end of the daemon's socket: `identity(path)` is its `path_identity(path)`
    (see whereabouts.cni.main)."""

    def identity(self, path: str) -> str:
        raise NotImplementedError


class Runtime:
    def __init__(self, *, batcher: Batcher | None = None, peer: Peer | None = None) -> None:
        self.batcher = batcher  # concurrent ADDs/DELs of one network share a decision and a commit
        self.peer = peer  # None: in process, the caller itself

    def require_same_local_dir(self, path: str) -> None:
        """Serve a local-store call only on the caller's own database: a daemon in another mount namespace,
        or whose directory was replaced, would otherwise hand out addresses from a second store."""
        if self.peer is None:
            return
        from whereabouts.cni.main import path_identity

        mine = path_identity(path)
        theirs = self.peer.identity(path)
        if not mine or mine != theirs:
            raise ServeInProcess(f"local_data_dir {path} is not the same directory for the daemon and the caller")
