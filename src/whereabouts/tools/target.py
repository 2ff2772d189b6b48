"""What the tools work on: the datastore, found the way the plugin finds it, the network configs that give its
pools their ranges, and the Kubernetes API (pods, NADs, node slices) where there is one.

The datastore, first found wins:
    --local-data-dir DIR / --etcd URLS                     that store
    --config FILE / --nad [NS/]NAME                        the network config's, merged with the flat file as the
                                                           plugin merges it (a NAD naming none: kubernetes)
    --kubeconfig PATH                                      kubernetes
    the flat file (--configuration-path, else the plugin's default paths), if it names a datastore
    $KUBECONFIG or ~/.kube/config                          kubernetes
The Kubernetes API is read with the operator's kubeconfig (kubectl's: `--kubeconfig`, $KUBECONFIG,
~/.kube/config), else the one the config names. With the kubernetes datastore it always is; beside etcd or the
local store only when `--kubeconfig` is given (then pods are judged alive or gone there too).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from whereabouts.config import (
    EtcdSettings,
    IPAMConfig,
    KubernetesSettings,
    LocalSettings,
    StoreSettings,
    named_store,
    parse_ipam,
    read_flat_file,
)
from whereabouts.errors import InvalidConfig, WhereaboutsError
from whereabouts.tools.errors import BadInput, ToolError
from whereabouts.tools.kubeconfig import load, operator_kubeconfig
from whereabouts.tools.view import printable_lines

if TYPE_CHECKING:
    import argparse
    from typing import Protocol

    from whereabouts.inventory import Inventory
    from whereabouts.kube.client import KubeClient
    from whereabouts.storage import Store

    class ToolStore(Store, Inventory, Protocol):
        """What every store is: what the service needs, and what the tools read besides."""


NAD_PATH = ("network-attachment-definitions", "k8s.cni.cncf.io", "v1")


@dataclass(frozen=True)
class NetworkConfig:
    source: str  # "NAD <ns>/<name>" or the file's path
    cfg: IPAMConfig


@dataclass
class Target:
    settings: StoreSettings
    configs: list[NetworkConfig]
    kubeconfig: str | None  # None: no Kubernetes API to ask; "": in-cluster
    context: str = ""
    pool_namespace: str = ""
    pods_namespace: str = "default"  # the kubeconfig context's, for pod names given without one
    notes: list[str] = field(default_factory=list)  # what could not be read, for stderr
    pool_namespace_from: str = ""  # what chose the pools' namespace (for messages)
    nads_unread: str = ""  # why the NADs could not be listed ("": read, or not asked): networks are unknown
    _store: ToolStore | None = None
    _kube: KubeClient | None = None

    @property
    def datastore(self) -> str:
        return self.settings.kind

    def store(self, *, create: bool = False) -> ToolStore:
        """The store, opened once (Store and whereabouts.inventory.Inventory); `create`: a local store may be
        made where there is none (an import's target), else it must exist."""
        if self._store is None:
            self._store = _open(self.settings, self, create=create)
        return self._store

    def kube(self) -> KubeClient | None:
        """A client in the pools' namespace; None where there is no Kubernetes API to ask."""
        if self._kube is None and self.kubeconfig is not None:
            from whereabouts.kube.client import KubeClient

            credentials, self.pods_namespace = load(self.kubeconfig, self.context)
            self._kube = KubeClient(credentials, timeout=30.0)
            plugin = _plugin_namespace(self.settings, self.kubeconfig)
            self._kube.namespace = self.pool_namespace or plugin or credentials.namespace
            self.pool_namespace_from = ("--pool-namespace" if self.pool_namespace else
                                        "the plugin's kubeconfig" if plugin else "the kubeconfig context")  # fmt: skip
        return self._kube

    def networks(self) -> set[str]:
        return {c.cfg.network_name for c in self.configs}

    def close(self) -> None:
        for opened in (self._store, self._kube):
            if opened is not None:
                opened.close()


def resolve(args: argparse.Namespace) -> Target:
    operator = operator_kubeconfig(args.kubeconfig)
    named = _named_configs(args, operator)
    settings = _flag_settings(args) or (named[0][1] if named else None)
    if settings is None and args.kubeconfig:
        settings = KubernetesSettings(operator)
    settings = settings or _flat_file_settings(args.configuration_path)
    if settings is None and operator:
        settings = KubernetesSettings(operator)
    if settings is None:
        raise BadInput(
            "no datastore: give --kubeconfig, --etcd URLS, --local-data-dir DIR, --config FILE or --nad NAME "
            "(no flat file names one, and there is no $KUBECONFIG or ~/.kube/config)"
        )
    kubeconfig: str | None = None
    if isinstance(settings, KubernetesSettings):
        kubeconfig = operator or settings.kubeconfig
    elif args.kubeconfig:
        kubeconfig = operator
    target = Target(settings, [c for c, _ in named], kubeconfig, args.context, args.pool_namespace)
    if not named and target.kube() is not None:
        target.configs = _nad_configs(target)
    return target


def _flag_settings(args: argparse.Namespace) -> StoreSettings | None:
    if args.local_data_dir:
        return LocalSettings(os.path.abspath(args.local_data_dir))
    if args.etcd:
        endpoints = tuple(e.strip() for e in args.etcd.split(",") if e.strip())
        if not endpoints:
            raise BadInput(f"--etcd {args.etcd!r} names no endpoint: expected URLS, comma-separated")
        return EtcdSettings(endpoints, prefix=args.etcd_prefix)
    return None


def _named_configs(args: argparse.Namespace, operator: str) -> list[tuple[NetworkConfig, StoreSettings]]:
    if args.config:
        return [_file_config(args.config, args.configuration_path)]
    if args.nad:
        return [_nad_config(args, operator)]
    return []


def read_json(path: str, what: str) -> Any:
    """The JSON document in `path`; BadInput naming `what` when it cannot be read or parsed."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except OSError as exc:
        raise BadInput(f"cannot read {what}: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the decoder goes
        raise BadInput(f"{what} is not JSON: {exc}") from None


def _file_config(path: str, configuration_path: str) -> tuple[NetworkConfig, StoreSettings]:
    netconf = read_json(path, f"network config {path}")
    found = _whereabouts_ipam(netconf)
    if found is None:
        raise BadInput(f"network config {path} has no whereabouts ipam (a plugin with ipam.type whereabouts)")
    cfg, settings = _parsed(found, netconf, configuration_path, where=path)
    return NetworkConfig(os.path.abspath(path), cfg), settings or cfg.store


def _nad_config(args: argparse.Namespace, operator: str) -> tuple[NetworkConfig, StoreSettings]:
    credentials, namespace = load(operator, args.context)
    from whereabouts.kube.client import KubeClient

    nad_namespace, _, name = args.nad.rpartition("/")
    nad_namespace = nad_namespace or args.namespace or namespace
    client = KubeClient(credentials)
    try:
        obj = client.get(client.resource(NAD_PATH[0], name, group=NAD_PATH[1], version=NAD_PATH[2],
                                         namespace=nad_namespace))  # fmt: skip
    finally:
        client.close()
    if obj is None:
        raise BadInput(f"NetworkAttachmentDefinition {nad_namespace}/{name} not found")
    config = _nad_json(obj)
    found = _whereabouts_ipam(config) if config is not None else None
    if found is None:
        raise BadInput(f"NetworkAttachmentDefinition {nad_namespace}/{name} has no whereabouts ipam in spec.config")
    cfg, settings = _parsed(found, config or {}, args.configuration_path, where=f"NAD {nad_namespace}/{name}")
    return NetworkConfig(f"NAD {nad_namespace}/{name}", cfg), settings or KubernetesSettings(operator)


def _parsed(
    found: tuple[str, Mapping[str, Any]], netconf: Mapping[str, Any], configuration_path: str, *, where: str
) -> tuple[IPAMConfig, StoreSettings | None]:
    """The config as the plugin reads it (the flat file under it) and the datastore it names, if any."""
    name, ipam = found
    try:
        flat, _ = read_flat_file(configuration_path or ipam.get("configuration_path"))
        merged = {**flat, **ipam}
        named = named_store(merged)
        cfg = parse_ipam(merged if named else {**merged, "datastore": "kubernetes"}, name,
                         netconf.get("allowPersistentIPs"))  # fmt: skip
    except WhereaboutsError as exc:
        raise BadInput(f"{where}: {exc.msg}") from None
    return cfg, named


def _flat_file_settings(configuration_path: str) -> StoreSettings | None:
    try:
        flat, _ = read_flat_file(configuration_path or None)
        return named_store(flat)
    except WhereaboutsError as exc:
        raise BadInput(exc.msg) from None


def _nad_configs(target: Target) -> list[NetworkConfig]:
    """Every NAD's whereabouts config (cluster-wide); none when NADs cannot be listed (said in the notes)."""
    client = target.kube()
    assert client is not None
    try:
        items = client.list(client.resource(NAD_PATH[0], group=NAD_PATH[1], version=NAD_PATH[2]))
    except WhereaboutsError as exc:
        target.nads_unread = exc.msg
        target.notes.append(f"NetworkAttachmentDefinitions not read, pools shown by their CIDR alone: {exc.msg}")
        return []
    configs = []
    for obj in sorted(items, key=lambda o: o.get("metadata", {}).get("creationTimestamp", "")):
        meta = obj.get("metadata", {})
        where = f"NAD {meta.get('namespace', '')}/{meta.get('name', '')}"
        config = _nad_json(obj)
        found = _whereabouts_ipam(config) if config is not None else None
        if found is None:
            continue
        try:
            cfg, _ = _parsed(found, config or {}, "/nonexistent", where=where)  # NADs lean on nodes' flat files
        except BadInput as exc:
            target.notes.append(f"{exc.message}: ignored")
            continue
        configs.append(NetworkConfig(where, cfg))
    return configs


def _nad_json(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    from whereabouts.controller.nads import nad_config

    try:
        config = nad_config(obj)
    except InvalidConfig:
        return None
    return config if isinstance(config, dict) else None


def _whereabouts_ipam(config: object) -> tuple[str, Mapping[str, Any]] | None:
    from whereabouts.controller.nads import whereabouts_ipam

    return whereabouts_ipam(config) if isinstance(config, Mapping) else None


def _plugin_namespace(settings: StoreSettings, operator: str) -> str:
    """The namespace of the kubeconfig the config names (the plugin's, on a node), if readable: its pools. Not the
    operator's own kubeconfig: its namespace is the context's (the one `--context` chooses)."""
    if not isinstance(settings, KubernetesSettings) or not settings.kubeconfig or settings.kubeconfig == operator:
        return ""
    try:
        from whereabouts.kube.credentials import load_credentials

        return load_credentials(settings.kubeconfig).namespace
    except WhereaboutsError:
        return ""


def _open(settings: StoreSettings, target: Target, *, create: bool) -> ToolStore:
    """The store as the plugin opens it; the local store only where one exists (the tools never make one), the
    Kubernetes store with the operator's credentials and without the node's lock directory."""
    try:
        if isinstance(settings, LocalSettings):
            from whereabouts.store.local import DB_NAME, LocalStore

            if not create and not os.path.exists(os.path.join(settings.data_dir, DB_NAME)):
                raise BadInput(f"no local datastore in {settings.data_dir} ({DB_NAME} is missing)")
            return LocalStore(settings.data_dir)
        if isinstance(settings, EtcdSettings):
            from whereabouts.store.etcd import open_etcd

            return open_etcd(settings)
        from whereabouts.store.kubernetes import KubernetesStore

        client = target.kube()
        assert client is not None
        return KubernetesStore(client, mirror=getattr(settings, "ippool_mirror", True))
    except WhereaboutsError as exc:
        raise ToolError(exc.msg) from None


def require_networks(target: Target, what: str) -> None:
    """Refuse a write (`what`) when the NADs could not be listed: the API that answered so cannot be trusted to say
    a pod is gone either, and without the networks' names a pool's network is a guess."""
    if target.nads_unread:
        raise ToolError(
            f"{what} refused, nothing changed: the NetworkAttachmentDefinitions could not be listed "
            f"({target.nads_unread}); check --kubeconfig/--context, or name the network with --nad or --config"
        )


def warn(notes: list[str]) -> None:
    for note in notes:
        print(printable_lines(f"kubectl-whereabouts: {note}"), file=sys.stderr)
