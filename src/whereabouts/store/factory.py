"""Open the store that parsed datastore settings name, importing only its backend."""

from __future__ import annotations

from whereabouts.config import EtcdSettings, LocalSettings  # loaded already: the settings come from it

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from whereabouts.config import StoreSettings
    from whereabouts.storage import Store


def open_store(settings: StoreSettings) -> Store:
    if isinstance(settings, LocalSettings):
        from whereabouts.store.local import LocalStore

        return LocalStore(settings.data_dir)
    if isinstance(settings, EtcdSettings):
        from whereabouts.store.etcd import open_etcd

        return open_etcd(settings)
    from whereabouts.store.kubernetes import open_kubernetes

    return open_kubernetes(settings)
