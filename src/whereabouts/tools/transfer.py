"""`export`, `import FILE` and `import host-local DIR`: move allocations between datastores (or from the CNI
host-local plugin) without renumbering: every address stays with the attachment (container ID and interface)
that holds it, so the runtime's DEL still finds it.

The export document (JSON, version 1):
    {"kind": "WhereaboutsExport", "version": 1, "datastore": "etcd",
     "pools": [{"network": "", "range": "10.0.0.0/24", "node": "",
                "entries": [{"address": "10.0.0.5", "containerID": "...", "ifname": "eth0", "podref": "ns/pod",
                             "netconf": "net1", "reserved": true, <sticky fields: model.Owner>}]}]}
Fields that are empty or zero are left out; `reserved`: the network-wide reservation backs the entry (overlapping
ranges on), so the import writes one too. An import writes through the IPAM service, each address only where it is
free or already this attachment's (running it twice changes nothing); an address held by another is refused and
named, and the exit status says so. A document naming a range otherwise than the plugin writes it (no ADD would
read that pool), or an address outside its range or one the range never hands out, is refused whole before
anything is written.

host-local keeps one file per address in its directory (/var/lib/cni/networks/<network>), named by the address
and holding "<container ID>\\r\\n<ifname>" (before CNI plugins 0.7: the container ID alone, read here with
--ifname), beside `last_reserved_ip.<range>` files and a `lock`. Its addresses go into the pools of the target
network's config (the first range whose CIDR holds each), recorded under that config's name; host-local records
no pod.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from whereabouts.errors import InvalidConfig, WhereaboutsError
from whereabouts.kube.resources import reservation_name
from whereabouts.model import OWNER_FIELDS, Owner, PoolKey
from whereabouts.names import require_object_name
from whereabouts.ranges import Network, format_ip, parse_ip
from whereabouts.service import IPAMService
from whereabouts.tools.errors import BadInput, ToolError
from whereabouts.tools.findings import who
from whereabouts.tools.reading import all_keys, read_pools
from whereabouts.tools.target import NetworkConfig, Target, read_json

KIND, VERSION = "WhereaboutsExport", 1
FIELDS = {"container_id": "containerID"}  # model.Owner field -> document key, where they differ
CHUNK = 500  # entries per commit: a Kubernetes pool patch stays small (fewer where the store takes fewer: etcd)
LATEST = 253402300799  # 9999-12-31T23:59:59Z: a later `retained`/`expires` is no time any tool can show
Entries = dict[PoolKey, dict[int, tuple[Owner, bool]]]  # pool -> address -> (holder, reserved)


def export(target: Target) -> str:
    keys = all_keys(target)
    ambiguous = getattr(target.store(), "ambiguous_pools", ())
    if ambiguous:  # an export without them would lose their entries in the next import
        raise ToolError(f"export refused: IPPool(s) {', '.join(ambiguous)} read as more than one network and node; "
                        "name the networks (NADs readable, or --nad/--config)")  # fmt: skip
    pools = read_pools(target, keys)
    reserved = target.store().reserved(target.networks())
    listed = []
    for key in sorted(pools, key=lambda k: (k.network, k.version, k.cidr, k.node)):
        entries = [_entry(key, ip, owner, reserved) for ip, owner in sorted(pools[key].items())]
        listed.append({"network": key.network, "range": key.cidr, "node": key.node, "entries": entries})
    doc = {"kind": KIND, "version": VERSION, "datastore": target.datastore, "pools": listed}
    return json.dumps(doc, indent=1) + "\n"


def _entry(key: PoolKey, ip: int, owner: Owner, reserved: Mapping[tuple[str, int, int], Owner]) -> dict[str, Any]:
    written: dict[str, Any] = {"address": format_ip(key.version, ip)}
    written.update((FIELDS.get(name, name), getattr(owner, name)) for name in OWNER_FIELDS if getattr(owner, name))
    backing = reserved.get((key.network, key.version, ip))
    if backing is not None and backing.same_attachment(owner):
        written["reserved"] = True
    return written


def import_document(target: Target, path: str) -> tuple[list[str], bool]:
    return write(target, _read_document(path))


def _read_document(path: str) -> Entries:
    doc = read_json(path, path)
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("version") != VERSION:
        raise BadInput(f"{path} is not a {KIND} document of version {VERSION} (made by `kubectl whereabouts export`)")
    entries: Entries = {}
    for i, pool in enumerate(doc.get("pools") or []):
        try:
            key = PoolKey(str(pool.get("network", "")), _canonical(pool["range"]), str(pool.get("node", "")))
            rng = Network.parse(key.cidr)
            held = entries.setdefault(key, {})  # a pool given twice: its entries together
            for item in pool.get("entries") or []:
                ip, value = _owner(key, rng, item)
                if held.get(ip, value) != value:  # never keep one of two holders and drop the other silently
                    raise ValueError(f"address {item['address']} is given twice in pool {key.name}, with two "
                                     f"holders: {who(held[ip][0])} and {who(value[0])}")  # fmt: skip
                held[ip] = value
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInput(
                f"{path}: pools[{i}] is not a pool of the export format ({type(exc).__name__}: {exc}); nothing imported"
            ) from None
    return entries


def _canonical(cidr: object) -> str:
    """The range as the plugin writes it: a pool keyed by another spelling ('10.0.0.7/24', '10.0.0.00/24') is one
    no allocation ever reads."""
    if not isinstance(cidr, str):
        raise ValueError(f"range {cidr!r} is not a CIDR")
    net = Network.parse(cidr)  # host bits refused
    if net.text != cidr:
        raise ValueError(f"range {cidr!r} is not written as the plugin writes it ({net.text})")
    return net.text


def _owner(key: PoolKey, rng: Network, item: Mapping[str, Any]) -> tuple[int, tuple[Owner, bool]]:
    version, ip = parse_ip(str(item["address"]))
    if not rng.contains(version, ip):
        raise ValueError(f"address {item['address']} is outside range {key.cidr}")
    if not key.node and rng.bits - rng.prefix >= 2 and ip in (rng.address, rng.last):
        # the allocator never hands these out (a node slice's first and last addresses are ordinary hosts)
        raise ValueError(f"address {item['address']} is the network or broadcast address of range {key.cidr}")
    values: dict[str, Any] = {name: _typed(name, item.get(FIELDS.get(name, name))) for name in OWNER_FIELDS}
    owner = Owner(**values)
    if not owner.container_id:
        raise ValueError(f"address {item['address']} has no containerID")
    return ip, (owner, item.get("reserved") is True)


def _typed(name: str, value: object) -> object:
    """A document value as model.Owner holds it (absent: the field's empty value)."""
    if name in ("retained", "expires"):
        if not isinstance(value, int) or isinstance(value, bool):
            return 0
        if not 0 <= value <= LATEST:
            raise ValueError(f"{name} {value} is no time (seconds since 1970, before the year 10000)")
        return value
    if name == "fixed":
        return value is True
    return value if isinstance(value, str) else ""


def write(target: Target, entries: Entries) -> tuple[list[str], bool]:
    """Each pool's entries, through the service; (a line per pool, whether any address was refused)."""
    if target.datastore == "kubernetes":
        _check_names(entries)
    service = IPAMService(target.store(create=True))
    size = min(CHUNK, service.store.max_changes or CHUNK)
    lines, refused_any = [], False
    for key, held in sorted(entries.items()):
        placed, refused = 0, list[tuple[int, Owner]]()
        for reserved in (True, False):
            chosen = {ip: owner for ip, (owner, r) in held.items() if r is reserved}
            for chunk in _chunks(chosen, size):
                try:
                    done, lost = service.import_entries(key, chunk, overlapping=reserved)
                except WhereaboutsError as exc:
                    raise ToolError(f"pool {key.name}: {exc.msg}") from None
                placed, refused = placed + len(done), refused + lost
        refused_any = refused_any or bool(refused)
        lines.append(f"pool {key.name}: {placed} address(es) in place" + "".join(
            f"\n  refused {format_ip(key.version, ip)}: held by {who(holder)}" for ip, holder in refused))  # fmt: skip
    return lines, refused_any


def _check_names(entries: Entries) -> None:
    """Into Kubernetes: the names the pools' objects get (IPPools, reservations) must be object names, every one
    checked before anything is written (the API server would refuse one pool's after others were written)."""
    for key in sorted(entries):
        try:
            require_object_name(key.name, "pool", key.name)
            if key.network:
                widest = (1 << (32 if key.version == 4 else 128)) - 1  # the longest address text
                require_object_name(reservation_name(key.network, key.version, widest), "network", key.network)
        except InvalidConfig as exc:
            raise BadInput(f"{exc.msg}; nothing imported") from None


def _chunks(entries: Mapping[int, Owner], size: int) -> Iterable[dict[int, Owner]]:
    items = sorted(entries.items())
    for i in range(0, len(items), size):
        yield dict(items[i : i + size])


# -- host-local -------------------------------------------------------------------------------------------------


def import_host_local(target: Target, directory: str, *, ifname: str, node: str) -> tuple[list[str], bool]:
    config = _one_config(target.configs)
    cfg = config.cfg
    if cfg.slice_prefix:
        raise BadInput(f"{config.source} slices its range per node (node_slice_size): import host-local into it "
                       "is not supported")  # fmt: skip
    entries: Entries = defaultdict(dict)
    lines = []
    for version, ip, container, interface in read_host_local(directory, ifname):
        rng = next((r for r in cfg.ranges if r.contains(version, ip)), None)
        if rng is None:
            lines.append(f"skipped {format_ip(version, ip)} ({container} {interface}): in no range of {config.source}")
            continue
        owner = Owner(container, interface, netconf=cfg.netconf_name, node=node)
        entries[PoolKey(cfg.network_name, rng.cidr)][ip] = (owner, cfg.overlapping)
    written, refused = write(target, entries)
    return lines + written, refused or bool(lines)


def _one_config(configs: list[NetworkConfig]) -> NetworkConfig:
    if len(configs) != 1:
        raise BadInput("import host-local needs the target network's whereabouts config: --config FILE or --nad NAME")
    return configs[0]


def read_host_local(directory: str, ifname: str) -> list[tuple[int, int, str, str]]:
    """(IP version, address, container ID, ifname) of each address file in host-local's network directory."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise BadInput(f"cannot read host-local directory {directory}: {exc.strerror}") from None
    found = []
    for name in names:
        try:
            version, ip = parse_ip(name)
        except ValueError:
            continue  # lock, last_reserved_ip.N
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:  # bytes: a text read would turn its "\r\n" into "\n"
                text = handle.read(4096).decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read host-local file {path}: {exc}") from None
        container, _, interface = text.partition("\r\n")
        if not container.strip():
            raise BadInput(f"host-local file {path} names no container")
        found.append((version, ip, container.strip(), interface.strip() or ifname))
    if not found and any(os.path.isdir(os.path.join(directory, n)) for n in names):
        raise BadInput(f"{directory} holds no address files: give one network's directory ({directory}/<network>)")
    return found
