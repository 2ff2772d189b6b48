"""The network config, parsed once into frozen canonical values. Nothing downstream re-validates.

Sources, lowest priority first: the flat file (`configuration_path`, else the one install-cni wrote, then the
Go plugin's default paths), the inline `ipam` object, then per-call settings (`runtimeConfig`, `args`,
`CNI_ARGS`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from whereabouts.errors import InvalidConfig, TryAgainLater, shown
from whereabouts.files import NotRegular, out_of_descriptors, read_regular
from whereabouts.model import Address
from whereabouts.ranges import IPRange, as_go_reads, format_ip, parse_ip, parse_net, parse_range, parse_request
from whereabouts.record import record
from whereabouts.sticky import DEFAULT_RETENTION, FixedReservation, parse_mode, parse_reservations, parse_retention

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    # (path, key, created) -> whether the file exists: the node daemon's check that its caller sees the same file
    # there (see Runtime.same_file); it declines the call otherwise. `created`: a file the call may create.
    SameFile = Callable[[str, str, bool], bool]

FLAT_FILE_PATHS = (  # the Go plugin's, in its order
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
)
FLAT_FILE_NAME = "whereabouts.conf"
# The flat file install-cni wrote, wherever the node keeps its CNI config: the launcher it installs sets this in
# the call's environment (which the node daemon receives with the call), and the plugin looks there first.
FLAT_FILE_ENV = "WHEREABOUTS_FLAT_FILE"
DEFAULT_LOCAL_DATA_DIR = "/var/lib/cni/whereabouts"
DATASTORES = ("local", "etcd", "kubernetes")
MAX_ETCD_NETWORK_NAME = 253  # as long as a Kubernetes object name: a network name that moves to that datastore
# Keys only the Go implementation used: accepted so old configs keep working, and ignored.
LOG_LEVELS = ("debug", "verbose", "error", "panic")  # the Go plugin's names, lowest first
IGNORED_KEYS = ("leader_lease_duration", "leader_renew_deadline", "leader_retry_period", "sleep_for_race")
MAX_FILE = 1 << 20  # bytes of a flat file or a nodename file: a few hundred are usual


@record(frozen=True)
class LocalSettings:
    """The embedded store: a SQLite file in `data_dir` (absolute)."""

    data_dir: str = DEFAULT_LOCAL_DATA_DIR
    kind = "local"


@record(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...]
    username: str = ""
    password: str = ""
    key_file: str = ""
    cert_file: str = ""
    ca_cert_file: str = ""
    prefix: str = ""
    kind = "etcd"


@record(frozen=True)
class KubernetesSettings:
    """The Kubernetes store: a kubeconfig (absolute; "": the pod's service account), and the node-local
    directory where this node's calls take turns per pool (see whereabouts.store.nodelock). `ippool_mirror`
    (kubernetes.ippool_mirror, default true): whether the IPPools are kept in the Go plugin's format beside the
    per-address reservations (the record); false once no Go plugin remains (docs/operators.md, "The IPPool
    mirror"): nothing is written to or read from the IPPools."""

    kubeconfig: str = ""
    lock_dir: str = ""
    ippool_mirror: bool = True
    kind = "kubernetes"


StoreSettings = LocalSettings | EtcdSettings | KubernetesSettings


@record(frozen=True)
class StaticAddress:
    address: str  # "10.1.0.5/24"
    version: int
    gateway: str = ""


@record(frozen=True)
class Route:
    """A route of the result: `dst` and `gw` as written (their IP version known), and any further keys the
    CNI spec has for routes (mtu, priority, table, ...) kept as JSON text, passed through."""

    dst: str
    version: int
    gw: str = ""
    extra: str = ""  # JSON object text, "" for none

    def as_result(self) -> dict[str, Any]:
        written: dict[str, Any] = json.loads(self.extra) if self.extra else {}
        written["dst"] = self.dst
        if self.gw:
            written["gw"] = self.gw
        return written


@record(frozen=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def as_result(self) -> dict[str, Any]:
        written: dict[str, Any] = {}
        for key in ("nameservers", "domain", "search", "options"):
            value = getattr(self, key)
            if value:
                written[key] = list(value) if isinstance(value, tuple) else value
        return written


@record(frozen=True)
class IPAMConfig:
    """The ipam config as canonical, frozen, hashable values (two calls of one network compare equal)."""

    ranges: tuple[IPRange, ...]
    network_name: str = ""
    overlapping: bool = True
    gateway: Address | None = None
    routes: tuple[Route, ...] = ()
    dns: DNS | None = None
    addresses: tuple[StaticAddress, ...] = ()
    store: StoreSettings = LocalSettings()
    slice_prefix: int = 0  # node_slice_size as a prefix length; 0: no node slices
    log_file: str = ""
    log_level: str = ""
    reconciler_cron_expression: str = ""
    configuration_path: str = ""
    netconf_name: str = ""  # the network config's top-level `name`: names the NodeSlicePool without network_name
    sticky: str = ""  # what addresses stick to: "pod", "mac", "claim" or "" (see whereabouts.sticky)
    sticky_retention: int = DEFAULT_RETENTION  # seconds a pod's or MAC's address waits after its last DEL
    reservations: tuple[FixedReservation, ...] = ()  # addresses only one pod or MAC ever gets
    warnings: tuple[str, ...] = ()  # what the config says that the Go plugin reads its own way, and how it is read

    @property
    def datastore(self) -> str:
        return self.store.kind

    @property
    def node_slice_size(self) -> str:
        """As the NodeSlicePool writes it ('/26'); "" without node slices."""
        return f"/{self.slice_prefix}" if self.slice_prefix else ""

    def gateway_for(self, version: int) -> str:
        gateway = self.gateway
        return format_ip(gateway.version, gateway.value) if gateway and gateway.version == version else ""


def load_ipam(
    ipam: Mapping[str, Any],
    netconf_name: object = "",
    *,
    on_kubernetes: bool = False,
    persistent: object = None,
    flat_file: str = "",
    same_file: SameFile | None = None,
) -> IPAMConfig:
    """Merge the flat file under the inline `ipam` object, then parse and validate: what a CNI call runs on.

    `flat_file`: where install-cni wrote the flat file (FLAT_FILE_ENV of the call), looked at before the Go
    plugin's default paths when the config names no `configuration_path`.
    `same_file`: in the node daemon, asked about every file the call reads (the flat file's candidates as they
    are looked at, the kubeconfig, the etcd TLS files, log_file) before it is used.
    `on_kubernetes`: the call comes from a pod (K8S_POD_NAMESPACE in CNI_ARGS). There a node-local store
    would hand the same addresses out on every node, so a config naming no datastore is refused rather than
    served from the local default (the Go plugin fails closed too)."""
    if not isinstance(ipam, Mapping):
        raise InvalidConfig("invalid ipam: expected a JSON object")
    if netconf_name is not None and not isinstance(netconf_name, str):  # (GC goes by it: never read as "")
        raise InvalidConfig(f"invalid name {shown(netconf_name)}: expected a string")
    flat, looked_at = read_flat_file(ipam.get("configuration_path"), installed=flat_file, same_file=same_file)
    merged = {**flat, **ipam}
    if on_kubernetes and not _names_datastore(merged):
        raise InvalidConfig(
            "invalid datastore: none configured for a Kubernetes pod (K8S_POD_NAMESPACE in CNI_ARGS), and a "
            "node-local store would give the same addresses to pods on other nodes. Looked for the flat file at "
            f"{', '.join(looked_at)}: {'found, but it names no datastore' if flat else 'not found'}. Set "
            "kubernetes.kubeconfig or etcd_host (install-cni writes the flat file), or datastore: local to "
            "use a store of this node alone."
        )
    cfg = parse_ipam(merged, netconf_name if isinstance(netconf_name, str) else "", persistent)
    if isinstance(cfg.store, KubernetesSettings) and not cfg.store.kubeconfig:
        # An empty kubeconfig means "the pod's service account" to the controllers. A CNI call runs on the node,
        # in no pod: served in process it would find none, served by the node daemon it would find the daemon's
        # own. One answer whoever serves the call: refused.
        raise InvalidConfig(
            "invalid kubernetes.kubeconfig '': the kubernetes datastore needs a kubeconfig on the node (the "
            "plugin runs outside any pod). Looked for the flat file install-cni writes, which names one, at "
            f"{', '.join(looked_at)}: {'found, but it names none' if flat else 'not found'}"
        )
    if same_file is not None:
        for key, path in _named_files(cfg):
            same_file(path, key, key == "log_file")
    return cfg


def _named_files(cfg: IPAMConfig) -> tuple[tuple[str, str], ...]:
    """The files besides the flat file that a call reads (the local store's directory is checked apart)."""
    store = cfg.store
    named = [("log_file", cfg.log_file)]
    if isinstance(store, KubernetesSettings):
        named.append(("kubernetes.kubeconfig", store.kubeconfig))
    elif isinstance(store, EtcdSettings):
        named += [("etcd_ca_cert_file", store.ca_cert_file), ("etcd_cert_file", store.cert_file),
                  ("etcd_key_file", store.key_file)]  # fmt: skip
    return tuple((key, path) for key, path in named if path)


def named_store(raw: Mapping[str, Any]) -> StoreSettings | None:
    """The datastore a flat file or an ipam object names, None when it names none (the operator's tools: the
    plugin itself falls back to the local store, or refuses on Kubernetes)."""
    return _store(raw) if _names_datastore(raw) else None


def _names_datastore(raw: Mapping[str, Any]) -> bool:
    kube = raw.get("kubernetes")
    return bool(raw.get("datastore") or raw.get("etcd_host") or (isinstance(kube, Mapping) and kube.get("kubeconfig")))


def read_flat_file(
    configured: object, *, installed: str = "", same_file: SameFile | None = None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The flat file's keys (empty when there is none) and the paths looked at: `configured` (the
    `configuration_path` key) alone if set, else `installed` (where install-cni wrote it) and the Go plugin's
    default paths, in that order. `same_file`: see load_ipam."""
    if configured is not None and not isinstance(configured, str):
        raise InvalidConfig(f"invalid configuration_path {shown(configured)}: expected a path")
    key = "configuration_path" if configured else "flat file"
    if configured:
        _check_path(configured, "configuration_path")
        path = os.path.join(configured, FLAT_FILE_NAME) if os.path.isdir(configured) else configured
        if same_file is not None and path != configured:
            same_file(configured, key, False)  # the same directory for the caller, or the call is declined
        candidates: tuple[str, ...] = (path,)
    elif installed and os.path.isabs(installed):
        candidates = (installed, *(path for path in FLAT_FILE_PATHS if path != installed))
    else:
        candidates = FLAT_FILE_PATHS
    for path in candidates:
        if same_file is not None and not same_file(path, key, False):
            continue
        text = read_config_file(path, key)
        if text is None:
            continue  # a missing flat file is not an error
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidConfig(f"invalid flat file {path}: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidConfig(f"invalid flat file {path}: expected a JSON object")
        return data, candidates
    return {}, candidates


def read_config_file(path: str, key: str, limit: int = MAX_FILE) -> bytes | None:
    """The bytes of the regular file at `path` (a symlink to one is followed), None if there is nothing there.
    Anything else is refused (code 7, naming `key`): a FIFO would block the call, a device could be read without
    end or act on being opened (never opened: whereabouts.files), a larger file is no config."""

    def refused(why: str) -> InvalidConfig:
        return InvalidConfig(f"invalid {key} {path}: {why}")

    try:
        data = read_regular(path, limit + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotRegular:
        raise refused("not a regular file") from None
    except OSError as exc:
        if out_of_descriptors(exc):  # the file may be fine: code 11 (the node daemon, seeing the cause, declines)
            raise TryAgainLater(f"cannot read config files: {exc.strerror}") from exc
        raise refused(f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        raise refused(f"{type(exc).__name__}: {exc}") from None
    if len(data) > limit:
        raise refused(f"larger than {limit} bytes")
    return data


def parse_ipam(raw: Mapping[str, Any], netconf_name: str = "", persistent: object = None) -> IPAMConfig:
    """`persistent`: the network config's top-level allowPersistentIPs (KubeVirt's knob), if any."""
    if raw.get("type", "whereabouts") != "whereabouts":
        raise InvalidConfig(f"invalid ipam type {shown(raw.get('type'))}: expected 'whereabouts'")
    warnings: list[str] = []
    gateway = _go_address(_opt_str(raw, "gateway"), "gateway", warnings)
    ranges = _ranges(raw, gateway, warnings)
    store = _store(raw)
    network_name = _opt_str(raw, "network_name")
    slice_prefix = _slice_prefix(raw, ranges[0], store.kind)
    overlapping = _bool(raw, "enable_overlapping_ranges", True)
    if slice_prefix and not overlapping:
        # A re-slice gives a node a slice overlapping addresses its old slice's pool still holds, a pool no ADD
        # reads: only the network-wide reservations keep such an address from being handed out twice.
        warnings.append(
            "enable_overlapping_ranges false read as true with node_slice_size: the slices of a network overlap "
            "across a re-slice, and the network-wide reservations are what guard an address held in an old slice"
        )
        overlapping = True
    if store.kind == "etcd" and len(network_name) > MAX_ETCD_NETWORK_NAME:
        # a key part: a name of megabytes makes every request one etcd refuses (code 11, for good)
        raise InvalidConfig(
            f"invalid network_name {network_name[:100]!r}...: too long, at most {MAX_ETCD_NETWORK_NAME} characters "
            "with the etcd datastore"
        )
    if store.kind == "kubernetes":
        _check_object_names(network_name, netconf_name, ranges, sliced=bool(slice_prefix))
        if not overlapping and isinstance(store, KubernetesSettings) and not store.ippool_mirror:
            raise InvalidConfig(
                "invalid kubernetes.ippool_mirror false with enable_overlapping_ranges false: without the IPPool "
                "mirror the per-address reservations are the only record, and overlapping ranges write them"
            )
    return IPAMConfig(
        ranges=ranges,
        network_name=network_name,
        overlapping=overlapping,
        gateway=Address(*parse_ip(gateway)) if gateway else None,
        routes=_routes(raw.get("routes")),
        dns=_dns(raw.get("dns")),
        addresses=_addresses(raw.get("addresses"), warnings),
        store=store,
        slice_prefix=slice_prefix,
        log_file=_log_file(raw),
        log_level=_log_level(raw),
        reconciler_cron_expression=_opt_str(raw, "reconciler_cron_expression"),
        configuration_path=_opt_str(raw, "configuration_path"),
        netconf_name=netconf_name,
        sticky=parse_mode({**raw, "allowPersistentIPs": raw.get("allowPersistentIPs", persistent)}, store.kind),
        sticky_retention=parse_retention(raw),
        reservations=parse_reservations(raw, ranges),
        warnings=tuple(warnings),
    )


def _ranges(raw: Mapping[str, Any], gateway: str, warnings: list[str]) -> tuple[IPRange, ...]:
    specs: list[tuple[str, Mapping[str, Any]]] = []
    if raw.get("range"):
        specs.append(("range", raw))
    ip_ranges = raw.get("ipRanges") or []
    if not isinstance(ip_ranges, list):
        raise InvalidConfig(f"invalid ipRanges {shown(ip_ranges)}: expected a list")
    for i, item in enumerate(ip_ranges):
        if not isinstance(item, Mapping) or not item.get("range"):
            raise InvalidConfig(f"invalid ipRanges[{i}] {shown(item)}: expected an object with a range")
        specs.append((f"ipRanges[{i}].range", item))
    if not specs:
        raise InvalidConfig("invalid ipam config: no range (set range or ipRanges)")
    return tuple(_one_range(key, item, gateway, warnings) for key, item in specs)


def _one_range(key: str, item: Mapping[str, Any], gateway: str, warnings: list[str]) -> IPRange:
    exclude = item.get("exclude") or []
    if not isinstance(exclude, list):
        raise InvalidConfig(f"invalid {key} exclude {shown(exclude)}: expected a list")
    return parse_range(
        item["range"],
        key=key,
        range_start=_opt_str(item, "range_start"),
        range_end=_opt_str(item, "range_end"),
        exclude=exclude,
        gateway=gateway,
        warnings=warnings,
    )


def _slice_prefix(raw: Mapping[str, Any], sliced: IPRange, datastore: str) -> int:
    """Fast IPAM slices the first range (as the Go plugin does); its NodeSlicePool lives in Kubernetes."""
    text = _opt_str(raw, "node_slice_size")
    if not text:
        return 0
    if datastore != "kubernetes":
        raise InvalidConfig(
            f"invalid node_slice_size {shown(text)}: node slices (Fast IPAM) need the kubernetes datastore, "
            f"not {datastore}"
        )
    body = text.strip().removeprefix("/")
    # ASCII digits only, and few of them: int() refuses strings of over 4,300 digits with a ValueError
    if not body or body.strip("0123456789") or len(body) > 3 or not sliced.prefix <= int(body) <= sliced.bits:
        raise InvalidConfig(
            f"invalid node_slice_size {shown(text)}: expected a prefix length from /{sliced.prefix} to /{sliced.bits} "
            f"(the slices of range {sliced.cidr})"
        )
    return int(body)


def _check_object_names(network_name: str, netconf_name: str, ranges: tuple[IPRange, ...], *, sliced: bool) -> None:
    """In Kubernetes these names become object names, and so parts of request paths: refuse what the API
    server would refuse, before any request (`<network_name>-<cidr>` pools, `<network_name>-<address>`
    reservations, the NodeSlicePool named `network_name` else `name`; the node's part is checked per call)."""
    from whereabouts.model import PoolKey
    from whereabouts.names import require_object_name

    for rng in ranges:
        key, value = ("network_name", network_name) if network_name else ("range", rng.cidr)
        require_object_name(PoolKey(network_name, rng.cidr).name, key, value)
    longest_address = max(15 if rng.version == 4 else 39 for rng in ranges)
    if network_name and len(network_name) + 1 + longest_address > 253:
        raise InvalidConfig(
            f"invalid network_name {network_name[:100]!r}...: too long, reservation names "
            f"'<network_name>-<address>' would pass the 253 characters of a Kubernetes object name"
        )
    if sliced:
        key, value = ("network_name", network_name) if network_name else ("name", netconf_name)
        require_object_name(value, key, value)


def _etcd(raw: Mapping[str, Any]) -> EtcdSettings | None:
    host = _opt_str(raw, "etcd_host")
    if not host:
        return None
    return EtcdSettings(
        endpoints=tuple(h.strip() for h in host.split(",") if h.strip()),
        username=_opt_str(raw, "etcd_username"),
        password=_opt_str(raw, "etcd_password"),
        key_file=_opt_str(raw, "etcd_key_file"),
        cert_file=_opt_str(raw, "etcd_cert_file"),
        ca_cert_file=_opt_str(raw, "etcd_ca_cert_file"),
        prefix=_opt_str(raw, "etcd_prefix"),
    )


def _local_data_dir(raw: Mapping[str, Any]) -> str:
    """Absolute: the node daemon and the executable must name the same directory whatever their working
    directories (a relative one would give each its own database, and duplicate addresses)."""
    path = _opt_str(raw, "local_data_dir") or DEFAULT_LOCAL_DATA_DIR
    _check_path(path, "local_data_dir")
    return os.path.normpath(path)


def _log_file(raw: Mapping[str, Any]) -> str:
    path = _opt_str(raw, "log_file")
    if path:
        _check_path(path, "log_file")
    return path


def _log_level(raw: Mapping[str, Any]) -> str:
    level = _opt_str(raw, "log_level")
    if level and level.lower() not in LOG_LEVELS:
        raise InvalidConfig(f"invalid log_level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
    return level.lower()


def _check_path(path: str, key: str) -> None:
    if not os.path.isabs(path) or "\0" in path:
        raise InvalidConfig(f"invalid {key} {path!r}: expected an absolute path")


def _store(raw: Mapping[str, Any]) -> StoreSettings:
    """The datastore's settings: `datastore` if set, else kubernetes with a kubeconfig, else etcd with
    `etcd_host`, else the local store."""
    kube = raw.get("kubernetes") or {}
    if not isinstance(kube, Mapping):
        raise InvalidConfig(f"invalid kubernetes {shown(kube)}: expected an object")
    kubeconfig = _opt_str(kube, "kubeconfig", "kubernetes.kubeconfig")
    if kubeconfig:
        _check_path(kubeconfig, "kubernetes.kubeconfig")
    etcd = _etcd(raw)
    data_dir = _local_data_dir(raw)
    chosen = _opt_str(raw, "datastore") or ("kubernetes" if kubeconfig else "etcd" if etcd else "local")
    if chosen == "local":
        return LocalSettings(data_dir)
    if chosen == "kubernetes":
        mirror = _bool({"kubernetes.ippool_mirror": kube.get("ippool_mirror", True)}, "kubernetes.ippool_mirror", True)
        return KubernetesSettings(kubeconfig, os.path.join(data_dir, "locks"), mirror)
    if chosen == "etcd":
        if etcd is None or not etcd.endpoints:
            raise InvalidConfig("invalid etcd_host '': the etcd datastore needs etcd_host")
        return etcd
    raise InvalidConfig(f"invalid datastore {shown(chosen)}: expected one of {', '.join(DATASTORES)}")


def _routes(routes: object) -> tuple[Route, ...]:
    if routes is None:
        return ()
    if not isinstance(routes, list):
        raise InvalidConfig(f"invalid routes {shown(routes)}: expected a list")
    parsed = []
    for route in routes:
        if not isinstance(route, Mapping) or not isinstance(route.get("dst"), str):
            raise InvalidConfig(f"invalid route {shown(route)}: expected an object with a dst CIDR")
        version = _check_cidr(route["dst"], "route dst")
        gw = route.get("gw")
        if gw is not None:
            _check_address(gw, "route gw")
        extra = {k: v for k, v in route.items() if k not in ("dst", "gw")}
        parsed.append(Route(route["dst"], version, gw or "", json.dumps(extra, sort_keys=True) if extra else ""))
    return tuple(parsed)


def _dns(dns: object) -> DNS | None:
    if dns is None:
        return None
    if not isinstance(dns, Mapping):
        raise InvalidConfig(f"invalid dns {shown(dns)}: expected an object")
    lists = {}
    for key in ("nameservers", "search", "options"):
        value = dns.get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise InvalidConfig(f"invalid dns.{key} {shown(value)}: expected a list of strings")
        lists[key] = tuple(value)
    parsed = DNS(domain=_opt_str(dns, "domain", "dns.domain"), **lists)
    return parsed if parsed.as_result() else None  # `"dns": {}` says nothing: no dns in the result


def _addresses(addresses: object, warnings: list[str]) -> tuple[StaticAddress, ...]:
    if addresses is None:
        return ()
    if not isinstance(addresses, list):
        raise InvalidConfig(f"invalid addresses {shown(addresses)}: expected a list")
    parsed = []
    for item in addresses:
        entry = {"address": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping) or not isinstance(entry.get("address"), str):
            raise InvalidConfig(f"invalid addresses entry {shown(item)}: expected an object with an address")
        version, address = _go_cidr(entry["address"], "addresses address", warnings)
        gateway = _go_address(entry.get("gateway") or "", "addresses gateway", warnings)
        parsed.append(StaticAddress(address, version, gateway))
    return tuple(parsed)


def _go_cidr(text: object, key: str, warnings: list[str]) -> tuple[int, str]:
    """A static address ('10.1.0.5/24'): its IP version and its text, as written or, with leading zeros, as
    the Go plugin reads it (the text goes into the result)."""

    def read(written: str) -> tuple[int, str]:
        if "/" not in written:
            raise ValueError(f"{written!r} has no prefix length")
        return parse_net(written, strict=False)[0], written

    try:
        if not isinstance(text, str):
            raise ValueError
        return as_go_reads(read, text, key, warnings)
    except ValueError:
        raise InvalidConfig(f"invalid {key} {shown(text)}: expected a CIDR") from None


def _go_address(text: object, key: str, warnings: list[str]) -> str:
    """An address as written or, with leading zeros, as the Go plugin reads it; "" for none."""

    def read(written: str) -> str:
        parse_ip(written)
        return written

    if text == "":
        return ""
    try:
        if not isinstance(text, str):
            raise ValueError
        return as_go_reads(read, text, key, warnings)
    except ValueError:
        raise InvalidConfig(f"invalid {key} {shown(text)}: expected an IP address") from None


def _check_cidr(text: object, key: str) -> int:
    # A static address ('10.1.0.5/24') or a route's dst: host bits allowed either way (ipaddress's
    # ip_interface and ip_network(strict=False) accept the same strings).
    try:
        if not isinstance(text, str) or "/" not in text:
            raise ValueError
        return parse_net(text, strict=False)[0]
    except ValueError:
        raise InvalidConfig(f"invalid {key} {shown(text)}: expected a CIDR") from None


def _check_address(text: object, key: str) -> None:
    try:
        if not isinstance(text, str):
            raise ValueError
        parse_ip(text)  # a bare address: a prefix here would end up in the result
    except ValueError:
        raise InvalidConfig(f"invalid {key} {shown(text)}: expected an IP address") from None


def _opt_str(raw: Mapping[str, Any], key: str, label: str = "") -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidConfig(f"invalid {label or key} {shown(value)}: expected a string")
    return value


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise InvalidConfig(f"invalid {key} {shown(value)}: expected true or false")
    return value


def requested_addresses(
    netconf: Mapping[str, Any], cni_args: Mapping[str, str], warnings: list[str] | None = None
) -> tuple[tuple[int, int], ...]:
    """Requested addresses: runtimeConfig.ips, else args.cni.ips, else CNI_ARGS IP= (the deprecated path)."""
    runtime = _object(netconf, "runtimeConfig")
    args = _object(_object(netconf, "args"), "cni", "args.cni")
    for source, ips in (("runtimeConfig.ips", runtime.get("ips")), ("args.cni.ips", args.get("ips"))):
        if ips:
            return _parse_requests(source, ips, warnings)
    if cni_args.get("IP"):
        return _parse_requests("CNI_ARGS IP", cni_args["IP"].split(","), warnings)
    return ()


def requested_gateways(cni_args: Mapping[str, str], warnings: list[str] | None = None) -> tuple[tuple[int, int], ...]:
    """CNI_ARGS GATEWAY=a,b as the Go plugin reads it: each address the gateway of the static `addresses` and
    the requested addresses whose subnet holds it (the last such wins). A bad entry is refused, as there."""
    if not cni_args.get("GATEWAY"):
        return ()
    gateways = []
    for item in cni_args["GATEWAY"].split(","):
        try:
            gateways.append(as_go_reads(parse_ip, item, "CNI_ARGS GATEWAY entry", warnings))
        except ValueError:
            raise InvalidConfig(f"invalid CNI_ARGS GATEWAY entry {shown(item)}: expected an IP address") from None
    return tuple(gateways)


def _object(parent: Mapping[str, Any], key: str, label: str = "") -> Mapping[str, Any]:
    """An optional JSON object of the network config: absent or null is empty; anything else is refused."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidConfig(f"invalid {label or key} {value!r}: expected an object")
    return value


def _parse_requests(source: str, ips: object, warnings: list[str] | None) -> tuple[tuple[int, int], ...]:
    if not isinstance(ips, list):
        raise InvalidConfig(f"invalid {source} {shown(ips)}: expected a list of addresses")
    parsed = []
    for ip in ips:
        try:
            if not isinstance(ip, str):
                raise ValueError
            parsed.append(as_go_reads(parse_request, ip, f"{source} entry", warnings))
        except ValueError:
            raise InvalidConfig(f"invalid {source} entry {shown(ip)}: expected an IP address") from None
    return tuple(parsed)
