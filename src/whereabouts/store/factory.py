"""Pick and open the configured datastore, importing only its backend."""

from __future__ import annotations

from whereabouts.errors import InvalidConfig

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from whereabouts.config import IPAMConfig
    from whereabouts.store.base import Store


def open_store(cfg: IPAMConfig) -> Store:
    if cfg.datastore == "local":
        from whereabouts.store.local import LocalStore

        return LocalStore(cfg.local_data_dir)
    if cfg.datastore == "etcd":
        from whereabouts.store.etcd import open_etcd

        return open_etcd(cfg)
    if cfg.datastore == "kubernetes":
        from whereabouts.store.kubernetes import open_kubernetes

        return open_kubernetes(cfg)
    raise InvalidConfig(f"invalid datastore {cfg.datastore!r}")
