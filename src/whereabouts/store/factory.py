"""Open the store that parsed datastore settings name, importing only its backend."""

from __future__ import annotations

from whereabouts.config import EtcdSettings, LocalSettings  # loaded already: the settings come from it

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from whereabouts.config import StoreSettings
    from whereabouts.storage import Store

    Keep = Callable[[StoreSettings, Callable[[], Any], Callable[[Any], bool]], Any]


def open_store(settings: StoreSettings, *, keep: Keep | None = None) -> Store:
    """`keep(settings, make, fits)`: where a long-running process keeps what the stores of one settings share
    (the node daemon's StorePool; made again when the one kept no longer `fits`); None in a CNI process, which
    opens one store and ends."""
    if isinstance(settings, LocalSettings):
        from whereabouts.store.local import LocalStore

        return LocalStore(settings.data_dir)
    if isinstance(settings, EtcdSettings):
        from whereabouts.store.etcd import open_etcd

        return open_etcd(settings)
    from whereabouts.store.kubernetes import open_kubernetes

    return open_kubernetes(settings, keep=keep)
