"""What serving CNI calls keeps between them, passed explicitly to `cni.call.handle`.

In process (one call, then the process ends) a throwaway `Runtime()`: it opens the call's store and closes
it after. In the node daemon, one `Runtime` for the process: its `StorePool` keeps stores open between calls
(their server connections, an etcd login, a parsed kubeconfig, an open SQLite file), keyed by the datastore
settings; its `Batcher` lets concurrent ADDs and DELs of one network share a decision and a commit; and each
call gets a view with its `Peer`, the process that handed the call over.
"""

from __future__ import annotations

from whereabouts.errors import TryAgainLater, WhereaboutsError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from whereabouts.config import StoreSettings
    from whereabouts.kube.credentials import Credentials
    from whereabouts.node.batch import Attachments, Batcher
    from whereabouts.storage import Store

    T = TypeVar("T")

SHARED_IDLE = 120.0  # seconds a shared part (a watch-fed cache) is kept without a call asking for it
IDLE_PER_SETTINGS = 16  # stores kept open per datastore settings (a burst opens more; they close after)
IDLE_STORES = 64  # stores kept open across all settings (each holds descriptors): the least recently used go


class ServeInProcess(Exception):
    """The daemon declines the call: the caller serves it itself (never a CNI error). `reason` names why in
    the daemon's metrics (a few fixed words)."""

    def __init__(self, msg: str, reason: str) -> None:
        super().__init__(msg)
        self.reason = reason


class Peer:
    """The caller on the other end of the daemon's socket: `identity(path)` is its `path_identity(path)`
    (see whereabouts.cni.main)."""

    def identity(self, path: str) -> str:
        raise NotImplementedError

    def here(self) -> bool:
        """Whether the caller still waits for the answer (one that hung up, killed or given up, does not: what
        is committed for it then is an address nobody will use or release)."""
        return True


class StorePool:
    """Open stores by datastore settings. A call leases one (an idle one, else a new one) and gives it back;
    one that failed, or whose sources changed (a kubeconfig or token rewritten, a database file replaced:
    `Store.reusable`), is closed, and the next call opens it afresh, reloading its credentials. `on_error`
    hears of each store that failed, or could not be opened, and why (the daemon's metrics).

    Open stores hold file descriptors, and settings are many when networks differ by a data directory: at
    most IDLE_STORES are kept idle in all, what no call used for SHARED_IDLE seconds is closed by `sweep`
    (the daemon runs it between accepts, so it runs when no call can start either), and `shed` closes every
    idle store at once (the daemon ran out of descriptors)."""

    def __init__(
        self,
        opener: Callable[[StoreSettings], Store] | None = None,
        on_error: Callable[[StoreSettings, BaseException], None] | None = None,
    ) -> None:
        import threading  # the daemon's alone: a CNI process never makes a pool

        self.opener, self.on_error = opener, on_error
        self.idle: dict[StoreSettings, list[Store]] = {}
        self.shared: dict[StoreSettings, object] = {}  # what the stores of one settings share (store.factory)
        self.used: dict[StoreSettings, float] = {}  # when a call last asked for it
        self.leased = 0  # stores serving a call right now
        self.lock = threading.Lock()

    def lease(self, settings: StoreSettings) -> Store:
        """An idle store still fit to serve (checked now: its files may have changed while it waited), else
        a new one."""
        import time

        with self.lock:
            self.used[settings] = time.monotonic()
        self.sweep()
        while True:
            with self.lock:
                kept = self.idle.get(settings)
                store = kept.pop() if kept else None
            if store is None:
                store = self._open(settings)
            elif not store.reusable():
                store.close()
                continue
            with self.lock:
                self.leased += 1
            return store

    def _open(self, settings: StoreSettings) -> Store:
        try:
            return _open(settings, self.opener, self)
        except Exception as exc:
            if not _expected(exc):
                self.failed(settings, exc)
            raise

    def failed(self, settings: StoreSettings, exc: BaseException) -> None:
        """A store of `settings` failed with `exc` (it is closed, not kept)."""
        if self.on_error is not None:
            self.on_error(settings, exc)

    def warm(self, settings: StoreSettings) -> None:
        """Open a store of `settings` (and what its stores share) ahead of the first call."""
        store = self.lease(settings)
        self.give_back(settings, store, failed=False)

    def give_back(self, settings: StoreSettings, store: Store, *, failed: bool) -> None:
        with self.lock:
            self.leased -= 1
        if failed or not store.reusable():
            store.close()
            return
        with self.lock:
            kept = self.idle.setdefault(settings, [])
            if len(kept) >= IDLE_PER_SETTINGS:
                surplus = [store]
            else:
                kept.append(store)
                surplus = self._over_cap()
        for store in surplus:
            store.close()

    def _over_cap(self) -> list[Store]:
        """Idle stores beyond IDLE_STORES, taken from the least recently used settings (the lock held)."""
        count = sum(len(kept) for kept in self.idle.values())
        surplus: list[Store] = []
        if count <= IDLE_STORES:
            return surplus
        for settings in sorted(self.idle, key=lambda s: self.used.get(s, 0.0)):
            kept = self.idle[settings]
            while kept and count > IDLE_STORES:
                surplus.append(kept.pop())
                count -= 1
        return surplus

    def shed(self) -> None:
        """Close every idle store now: the process is out of file descriptors, and they are only a cache."""
        with self.lock:
            stores = [store for kept in self.idle.values() for store in kept]
            self.idle.clear()
        for store in stores:
            store.close()

    def open_count(self) -> int:
        """Stores open now: serving a call, or kept for the next one."""
        with self.lock:
            return self.leased + sum(len(kept) for kept in self.idle.values())

    def keep(self, settings: StoreSettings, make: Callable[[], T], fits: Callable[[T], bool] | None = None) -> T:
        """The one part every store of `settings` shares (the Kubernetes store's watch-fed cache), made by the
        first that asks; made again when the one kept no longer `fits` the store asking (the files the settings
        name were rewritten to say something it cannot follow: a kubeconfig's namespace), the old one closed."""
        with self.lock:
            stale = self.shared.get(settings)
            if stale is not None and fits is not None and not fits(stale):  # type: ignore[arg-type]
                del self.shared[settings]
                _close_beside([stale])
            if settings not in self.shared:
                self.shared[settings] = make()
            kept: T = self.shared[settings]  # type: ignore[assignment]  # made by `make` for these settings
            return kept

    def sweep(self) -> None:
        """Shared parts no call used for SHARED_IDLE seconds are closed, with the idle stores of their
        settings (settings come and go over months: a kubeconfig moved, a network removed), and made again
        by the next call that needs them."""
        import time

        now = time.monotonic()
        with self.lock:
            idle = [s for s, used in self.used.items() if now - used > SHARED_IDLE]
            parts = [self.shared.pop(s) for s in idle if s in self.shared]
            stores = [store for s in idle for store in self.idle.pop(s, [])]
            for s in idle:
                del self.used[s]
        for store in stores:
            store.close()
        if parts:
            _close_beside(parts)

    def close(self) -> None:
        with self.lock:
            stores = [store for kept in self.idle.values() for store in kept]
            shared, self.shared = list(self.shared.values()), {}
            self.used.clear()
            self.idle.clear()
        for store in stores:
            store.close()
        _close_all(shared)


def _close_all(parts: list[object]) -> None:
    for part in parts:
        _close(part)


def _close_beside(parts: list[object]) -> None:
    """Close `parts` on a thread of their own (a watch-fed cache flushes its mirror and hands its pools back:
    not on a call's time)."""
    import threading

    threading.Thread(target=_close_all, args=(parts,), name="close idle stores", daemon=True).start()


def _close(part: object) -> None:
    close = getattr(part, "close", None)
    if close is not None:
        close()


def _open(settings: StoreSettings, opener: Callable[[StoreSettings], Store] | None, pool: StorePool | None) -> Store:
    if opener is not None:
        return opener(settings)
    from whereabouts.store.factory import open_store  # imports only the configured backend

    return open_store(settings, keep=pool.keep if pool is not None else None)


class Lease:
    """`with runtime.store(settings) as store`: leased from the pool (or opened for this call alone), given
    back (or closed) after; an exception marks it failed. A class, not `contextlib.contextmanager`: the CNI
    process would pay for importing contextlib."""

    __slots__ = ("pool", "settings", "store")

    def __init__(self, pool: StorePool | None, settings: StoreSettings) -> None:
        self.pool, self.settings = pool, settings
        self.store: Store | None = None

    def __enter__(self) -> Store:
        self.store = self.pool.lease(self.settings) if self.pool else _open(self.settings, None, None)
        return self.store

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        assert self.store is not None
        if self.pool is None:
            self.store.close()
            return
        failed = kind is not None and not _expected(exc)
        if failed:
            assert exc is not None
            self.pool.failed(self.settings, exc)
        self.pool.give_back(self.settings, self.store, failed=failed)


def _expected(exc: BaseException | None) -> bool:
    """A CNI error the call ends with (an exhausted range, a taken address) leaves the store as good as
    before; anything else (an unreachable server, a bug) may not."""
    return isinstance(exc, WhereaboutsError) and not isinstance(exc, TryAgainLater)


class Runtime:
    def __init__(
        self,
        *,
        batcher: Batcher | None = None,
        stores: StorePool | None = None,
        peer: Peer | None = None,
        attachments: Attachments | None = None,
    ) -> None:
        self.batcher = batcher  # concurrent ADDs/DELs of one network share a decision and a commit
        self.stores = stores  # None: each call opens its store and closes it
        self.peer = peer  # None: in process, the caller itself
        self.attachments = attachments  # the daemon's: one call at a time per attachment

    def for_peer(self, peer: Peer) -> Runtime:
        """The view one call of the daemon gets: the process's batcher, stores and attachments, and its caller."""
        return Runtime(batcher=self.batcher, stores=self.stores, peer=peer, attachments=self.attachments)

    def store(self, settings: StoreSettings) -> Lease:
        return Lease(self.stores, settings)

    def require_same_local_dir(self, path: str) -> None:
        """Serve a local-store call only on the caller's own database: a daemon in another mount namespace,
        or whose directory was replaced, would otherwise hand out addresses from a second store."""
        if self.peer is None:
            return
        from whereabouts.cni.main import path_identity

        mine = path_identity(path)
        theirs = self.peer.identity(path)
        if not mine or mine != theirs:
            why = f"local_data_dir {path} is not the same directory for the daemon and the caller"
            raise ServeInProcess(why, "local_dir")

    def require_same_kubeconfig_files(self, kubeconfig: str) -> None:
        """The files a kubeconfig names (a token file, the CA, a client certificate and key), read on connect:
        the same for the daemon and its caller (same_file), or the call is declined (the daemon would
        authenticate with its own service account's token where the caller has none, say). The kubeconfig
        itself is checked with the config (config.load_ipam)."""
        if self.peer is None:
            return
        for key, path in _kubeconfig_files(kubeconfig):
            self.same_file(path, f"kubernetes.kubeconfig's {key}", False)

    def same_file(self, path: str, key: str, created: bool) -> bool:
        """Whether there is a file at `path`, when the daemon and its caller see alike there: one and the same
        file (for a symlink: and the same file at its end, as the daemon resolves it), or nothing for either
        (for a file the call may create, `created`: nothing in one and the same directory). Otherwise the call
        is declined: read in the daemon's view, it would take another config, other credentials or another log
        than in the caller's (a missing flat file, say, is the local store instead of the one it names).
        One question to the caller per path, two for a symlink."""
        import os

        alike = self._alike(path, created)
        if alike and os.path.islink(path):
            alike = self._alike(os.path.realpath(path), created)
        if alike is None:
            why = f"{key} {path} is not the same file for the daemon and the caller"
            raise ServeInProcess(why, "files")
        return alike

    def _alike(self, path: str, created: bool) -> bool | None:
        """True: one file for both; False: none for either; None: the views differ. An identity naming a rest
        after the ancestor's "device:inode" says that the path itself is missing (see path_identity): two such
        differ whenever the ancestors do (a container's own /etc and the host's), yet both mean "no file"."""
        from whereabouts.cni.main import path_identity

        assert self.peer is not None
        mine, theirs = path_identity(path), self.peer.identity(path)
        missing = "/" in mine
        if not mine or not theirs or ("/" in theirs) != missing:
            return None
        if missing and not created:
            return False
        return None if mine != theirs else not missing


_KUBECONFIGS: dict[str, Credentials] = {}  # kubeconfig path -> its credentials as last read


def _kubeconfig_files(kubeconfig: str) -> tuple[tuple[str, str], ...]:
    """The files `kubeconfig` names (kube.credentials.referenced_files), read again only when it (or its token
    file) changed (Credentials.changed)."""
    from whereabouts.kube.credentials import load_credentials, referenced_files

    credentials = _KUBECONFIGS.get(kubeconfig)
    if credentials is None or credentials.changed():
        credentials = load_credentials(kubeconfig)
        if len(_KUBECONFIGS) >= 64:  # (kubeconfigs a node's configs name: a few)
            _KUBECONFIGS.clear()
        _KUBECONFIGS[kubeconfig] = credentials
    return referenced_files(credentials)
