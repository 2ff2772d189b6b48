"""Every Kubernetes resource the plugin and the controllers read and write: names, formats, guarded patches.

The Go plugin's custom resources (group whereabouts.cni.cncf.io/v1alpha1), in its exact format:

    IPPool <network_name->[<node>-]<cidr, ':' and '/' as '-'>
        spec.range: the CIDR; spec.allocations: {"<offset from the network address>": {id, podref, ifname}}
        and, beyond the Go plugin's format, `netconf`: the network config name the address was allocated
        under (GC goes by it). The Go plugin ignores it; where its CRD is installed the API server prunes it.
        Sticky addresses add `sticky`, `retained`, `expires`, `controller`, `fixed` and `node` (model.Owner),
        each only when set.
    OverlappingRangeIPReservation <network_name->]<address, ':' as '-', a trailing '-' gets '0'>
        spec: {containerid, podref, ifname}; labelled with a hash of the attachment, so that a DEL finds
        reservations a crashed call left behind (labels are invisible to the Go plugin). The one object per
        held or retained address (docs/sticky.md): beyond the Go plugin's format, spec also has `address`,
        `state` (held / retained / reserved) and the entry's sticky fields, and labels for queries:
        `subnet_<prefix>=<network address>` ('kubectl get ip -l subnet_24=10.1.2.0'), and the network, pod
        namespace and name, node, sticky key kind and state under whereabouts.cni.cncf.io/.
    NodeSlicePool <network_name, else the network config's name>
        spec: {range, sliceSize}; status.allocations: [{nodeName ("" = free), sliceRange}].

Only this module knows these shapes: the Kubernetes store (whereabouts.store.kubernetes), the plugin's node
slices (whereabouts.nodeslice) and the controllers all read and build them here.
"""

from __future__ import annotations

import hashlib
import re

from whereabouts.iptext import parse_network
from whereabouts.model import Owner, PodFacts, PoolKey, PoolState, SlicePool
from whereabouts.ranges import Network, format_ip, parse_request

_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
MAX_PATCH_OPS = 3000  # JSON patch operations per request (a test and a write per entry, and their guards)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping
    from typing import Any

    Read = Mapping[str, Any]  # an object as the API server gave it

GROUP = "whereabouts.cni.cncf.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
IPPOOLS = "ippools"
RESERVATIONS = "overlappingrangeipreservations"
NODE_SLICE_POOLS = "nodeslicepools"
KINDS = {IPPOOLS: "IPPool", RESERVATIONS: "OverlappingRangeIPReservation", NODE_SLICE_POOLS: "NodeSlicePool"}
ATTACHMENT_LABEL = f"{GROUP}/attachment"
STATE_LABEL = f"{GROUP}/state"  # held / retained / reserved
NETWORK_LABEL = f"{GROUP}/network"  # network_name (absent for the default domain)
POD_NAMESPACE_LABEL = f"{GROUP}/pod-namespace"
POD_NAME_LABEL = f"{GROUP}/pod-name"
NODE_LABEL = f"{GROUP}/node"
STICKY_LABEL = f"{GROUP}/sticky"  # pod / mac / claim
NETWORK_ANNOTATION = f"{GROUP}/network-name"  # a NodeSlicePool's network_name, to find its node pools later
# The CRDs require a non-empty podref. Without a pod (a runtime that sends no K8S_POD_NAMESPACE/NAME) the
# Go plugin writes its "<namespace>/<name>" join of two empty strings, "/"; so do we, and read it back as none.
NO_POD = "/"
Object = dict[str, "Any"]


def reference(plural: str, name: str, namespace: str) -> Object:
    """Enough of one of our objects to name it (an Event's involved object)."""
    return {"apiVersion": API_VERSION, "kind": KINDS[plural], "metadata": {"name": name, "namespace": namespace}}


# -- IPPool ---------------------------------------------------------------------------------------------------


def pool_name(key: PoolKey) -> str:
    """'10.0.0.0-8', 'caa5---64', '<net>-<node>-<cidr>' (the Go plugin's names)."""
    return key.name


def pool_key(obj: Read, network: str) -> PoolKey | None:
    """The PoolKey of a listed IPPool named `[<network>-][<node>-]<cidr>`, or None if not of `network`."""
    cidr = obj.get("spec", {}).get("range", "")
    name = obj.get("metadata", {}).get("name", "")
    head, tail = (f"{network}-" if network else ""), PoolKey("", cidr).name
    if not cidr or not name.startswith(head) or not name.endswith(tail) or len(name) < len(head) + len(tail):
        return None
    middle = name[len(head) : len(name) - len(tail)]
    if middle and not middle.endswith("-"):
        return None
    return PoolKey(network, cidr, middle[:-1])


def guess_pool_key(
    obj: Read, networks: Collection[str], nodes: Collection[str], slice_pools: Iterable[Read] = ()
) -> PoolKey | None:
    """The PoolKey of a listed IPPool of any network (PoolNames.key); for many, make one PoolNames."""
    return PoolNames(networks, nodes, slice_pools).key(obj)


class PoolNames:
    """Reads listed IPPools' names `[<network>-][<node>-]<cidr>` into PoolKeys. A name `<a>-<b>-<cidr>` does not say
    where the network ends and the node begins (network `worker` and node `worker-1`, or the unnamed network and
    node `worker-worker-1`): the node part is decided first, by what is known, most certain first:
        a slice a NodeSlicePool lists now, named exactly so;
        a known network with a known node whose slice it can be (inside the network's sliced range, of its slice
        size), or a known network's whole-range pool;
        a named known network whose slice it can be, its node unknown (a node gone, its slice freed);
        a known network and a known node, the slice not of its size or range now (a re-slice left it);
        a named known network; a known node, the network unknown; else the whole prefix is the network.
    Two readings at the first level any reading reaches leave the name ambiguous: key() gives None and the name is
    kept in `ambiguous` (a guess would have a write go by the wrong network's reservations, or prune a pool)."""

    def __init__(
        self, networks: Collection[str], nodes: Collection[str] = (), slice_pools: Iterable[Read] = ()
    ) -> None:
        self.networks = {n for n in networks}
        self.nodes = {n for n in nodes if n}
        self.listed: dict[str, PoolKey] = {}  # name -> key: the node pools NodeSlicePools list now
        self.sliced: dict[str, list[tuple[Network, int]]] = {}  # network -> (its sliced range, slice prefix)
        self.ambiguous: dict[str, None] = {}  # (ordered, each name once however often read)
        for pool in slice_pools:
            network = slice_network(pool)
            self.networks.add(network)
            spec = pool.get("spec") or {}
            try:
                whole = Network.parse(str(spec.get("range") or ""), strict=False)
                size = int(str(spec.get("sliceSize") or "").strip().removeprefix("/"))
            except ValueError:
                whole, size = None, 0
            for name in slice_networks(pool):
                if whole is not None:
                    self.sliced.setdefault(name, []).append((whole, size))
                for node, cidr in slice_listing(pool):
                    if node and cidr:
                        self.nodes.add(node)
                        self.listed.setdefault(PoolKey(name, cidr, node).name, PoolKey(name, cidr, node))

    def key(self, obj: Read) -> PoolKey | None:
        """The pool's key; None for a name the plugin never writes, or one that reads two ways (`ambiguous`)."""
        cidr = (obj.get("spec") or {}).get("range", "")
        name = (obj.get("metadata") or {}).get("name", "")
        tail = PoolKey("", cidr).name if isinstance(cidr, str) and cidr else ""
        if not tail or not name.endswith(tail) or (len(name) > len(tail) and name[-len(tail) - 1] != "-"):
            return None
        try:
            parse_network(cidr)  # a range the plugin writes: host bits clear
        except ValueError:
            return None
        listed = self.listed.get(name)
        if listed is not None and listed.cidr == cidr:
            return listed
        head = name[: -len(tail) - 1] if len(name) > len(tail) else ""
        if not head:
            return PoolKey("", cidr)
        readings = [(head, ""), ("", head)] + [(head[:i], head[i + 1 :]) for i, c in enumerate(head) if c == "-"]
        readings = [(network, node) for network, node in readings if node or network]
        known = [(n, d) for n, d in readings if n in self.networks]
        fits = [(n, d) for n, d in known if not d or self._fits(n, cidr)]
        for level in (
            [(n, d) for n, d in fits if not d or d in self.nodes],
            [(n, d) for n, d in fits if d and n],  # (the unnamed network's node part is any prefix: not so)
            [(n, d) for n, d in known if d in self.nodes],  # a slice of before a re-slice
            [(n, d) for n, d in known if n],
            [(n, d) for n, d in readings if d and d in self.nodes],
        ):
            if len(set(level)) == 1:
                return PoolKey(level[0][0], cidr, level[0][1])
            if level:
                self.ambiguous[name] = None
                return None
        return PoolKey(head, cidr)

    def _fits(self, network: str, cidr: str) -> bool:
        """Whether `cidr` can be one of `network`'s node slices as its NodeSlicePool slices it now."""
        net = Network.parse(cidr)
        return any(whole.contains(net.version, net.address) and whole.contains(net.version, net.last)
                   and net.prefix == size for whole, size in self.sliced.get(network, ()))  # fmt: skip


def new_pool(key: PoolKey, namespace: str) -> Object:
    return {
        "apiVersion": API_VERSION,
        "kind": "IPPool",
        "metadata": {"name": key.name, "namespace": namespace},
        "spec": {"range": key.cidr, "allocations": {}},
    }


def pool_entries(obj: Read) -> Mapping[str, Read]:
    """spec.allocations as listed: offset text -> entry."""
    return (obj.get("spec") or {}).get("allocations") or {}


def offset_value(text: str) -> int | None:
    """An IPPool entry's offset as the Go plugin reads it (strconv.ParseInt, base 10), None for any other key
    (`x1`, ` 5`, `5_0`, a negative number), which the Go plugin skips with a log line: so does this plugin (no
    plugin writes such a key: a hand edit or a tool's bug must not stop every call of the range). Offsets past
    64 bits are read (this plugin writes them in IPv6 ranges wider than /64; the Go plugin skips them)."""
    if len(text) > 48 or (not (text.isascii() and text.isdigit()) and _SIGNED_DECIMAL.fullmatch(text) is None):
        return None  # (an IPv6 offset has at most 39 digits; int() refuses over 4,300)
    value = int(text)
    return value if value >= 0 else None


_SIGNED_DECIMAL = re.compile(r"[+-][0-9]+")


def pool_offsets(obj: Read) -> list[tuple[str, int, Read]]:
    """spec.allocations as (offset text, offset, entry), by offset; keys that are no offset left out."""
    found = [(text, value, raw) for text, raw in pool_entries(obj).items() if (value := offset_value(text)) is not None]
    return sorted(found, key=lambda item: item[1])


def decode_pool(key: PoolKey, obj: Read | None) -> PoolState:
    if obj is None:
        return PoolState(key)
    _, base = parse_request(key.cidr)
    allocations = {base + value: entry_owner(entry) for offset, entry in pool_entries(obj).items()
                   if (value := offset_value(offset)) is not None}  # fmt: skip
    return PoolState(key, obj["metadata"]["resourceVersion"], allocations)


STICKY_FIELDS = ("sticky", "retained", "expires", "controller", "fixed", "node")


RESERVED = "reservation"  # an entry's field: true when its address's OverlappingRangeIPReservation is its record


def entry(owner: Owner, *, reserved: bool = False) -> dict[str, Any]:
    """The IPPool entry of `owner`; `reserved`: written with (after) its address's reservation, which is the
    address's record (the node daemon may remove such an entry once that reservation is gone for good, see
    store/kubecache.py `_left_over`; an entry written without one, or by the Go plugin, it never removes)."""
    written: dict[str, Any] = {"id": owner.container_id, "podref": owner.podref or NO_POD, "ifname": owner.ifname}
    if owner.netconf:
        written["netconf"] = owner.netconf
    written.update(_sticky_fields(owner))
    if reserved:
        written[RESERVED] = True
    return written


def _sticky_fields(owner: Owner) -> dict[str, Any]:
    return {name: getattr(owner, name) for name in STICKY_FIELDS if getattr(owner, name)}


def entry_owner(written: Read) -> Owner:
    podref = written.get("podref", "")
    return Owner(written.get("id", ""), written.get("ifname", ""), "" if podref == NO_POD else podref,
                 written.get("netconf", ""), *_read_sticky(written))  # fmt: skip


def _read_sticky(written: Read) -> tuple[str, int, int, str, bool, str]:
    def number(name: str) -> int:
        value = written.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    text = {name: str(written.get(name) or "") for name in ("sticky", "controller", "node")}
    return (text["sticky"], number("retained"), number("expires"), text["controller"], written.get("fixed") is True,
            text["node"])  # fmt: skip


def entry_path(offset: int | str) -> str:
    return f"/spec/allocations/{offset}"


def entry_patch(
    offset: int | str, owner: Owner | None, previous: Owner | None, *, exact: bool = False, reserved: bool = False
) -> list[Object]:
    """JSON patch operations writing `owner` (None: removing the entry) at `offset`, guarded by what was read
    there: nothing, or `previous` (its container ID and interface, and its network config name if it has
    one; with `exact`, also whether and when it was retained: the controllers judge a held and a retained
    entry of one attachment differently). The API server applies a patch atomically: a failed guard fails it
    whole (TestFailed)."""
    path = entry_path(offset)
    guard: list[Object]
    if previous is None:
        guard = [{"op": "test", "path": path, "value": None}]  # absent (the API server treats null as absent)
    else:
        guard = [
            {"op": "test", "path": f"{path}/id", "value": previous.container_id},
            {"op": "test", "path": f"{path}/ifname", "value": previous.ifname},
        ]
        if previous.netconf:  # e.g. a GC frees only the entry of the network config it judged
            guard.append({"op": "test", "path": f"{path}/netconf", "value": previous.netconf})
        if exact:  # absent (null) while held
            guard.append({"op": "test", "path": f"{path}/retained", "value": previous.retained or None})
    if owner is None:
        return [*guard, {"op": "remove", "path": path}]
    return [*guard, {"op": "add", "path": path, "value": entry(owner, reserved=reserved)}]


# -- OverlappingRangeIPReservation -----------------------------------------------------------------------------


def patch_chunks(groups: list[list[Object]]) -> list[list[Object]]:
    """JSON patches of at most MAX_PATCH_OPS operations, each group of operations whole in one (an entry's
    guards travel with its write: a patch is atomic, a sequence of patches is not)."""
    chunks: list[list[Object]] = [[]]
    for group in groups:
        if chunks[-1] and len(chunks[-1]) + len(group) > MAX_PATCH_OPS:
            chunks.append([])
        chunks[-1] += group
    return [chunk for chunk in chunks if chunk]


def reservation_name(network: str, version: int, ip: int) -> str:
    name = format_ip(version, ip).replace(":", "-")
    name = name + "0" if name.endswith("-") else name
    return f"{network}-{name}" if network else name


def reservation_address(name: str, networks: set[str]) -> tuple[str, int, int] | None:
    """(network, IP version, address) from a reservation's name, for one of `networks`; else None."""
    for network in networks:
        text = name[len(network) + 1 :] if network else name
        if network and not name.startswith(network + "-"):
            continue
        try:
            version, ip = parse_request(text if "." in text else text.replace("-", ":"))
        except ValueError:
            continue
        if reservation_name(network, version, ip) == name:
            return network, version, ip
    return None


def guess_reservation_address(obj: Read, networks: Collection[str]) -> tuple[str, int, int] | None:
    """(network, IP version, address) of a listed reservation of any network: by `networks` (and the network
    label this plugin writes), else by the shortest network prefix its name reads with; None if it reads
    with none."""
    name = (obj.get("metadata") or {}).get("name", "")
    labelled = ((obj.get("metadata") or {}).get("labels") or {}).get(NETWORK_LABEL, "")
    found = reservation_address(name, {"", labelled, *networks})
    if found is not None:
        return found
    for i, char in enumerate(name):
        if char == "-" and i:
            found = reservation_address(name, {name[:i]})
            if found is not None:
                return found
    return None


def attachment_label(owner: Owner) -> str:
    return hashlib.sha256(f"{owner.container_id}/{owner.ifname}".encode()).hexdigest()[:40]


def reservation(name: str, owner: Owner, namespace: str, *, network: str = "", cidr: str = "",
                address: tuple[int, int] | None = None) -> Object:  # fmt: skip
    """The per-address object: `cidr` (the pool's range) and `address` ((IP version, value)) add its address
    and the `subnet_<prefix>` label; unknown, they are left out."""
    spec: dict[str, Any] = {"containerid": owner.container_id, "podref": owner.podref or NO_POD,
                            "ifname": owner.ifname, "state": owner.state, **_sticky_fields(owner)}  # fmt: skip
    if owner.netconf:
        spec["netconf"] = owner.netconf
    if address is not None:
        spec["address"] = format_ip(*address)
    return {
        "apiVersion": API_VERSION,
        "kind": "OverlappingRangeIPReservation",
        "metadata": {"name": name, "namespace": namespace, "labels": reservation_labels(owner, network, cidr)},
        "spec": spec,
    }


def restated_reservation(obj: Read, owner: Owner) -> Object:
    """The reservation `obj` rewritten to say what `owner` says (its sticky record, retained say), with its
    address, its range and its other labels kept, and its resourceVersion as the replace's precondition."""
    meta = obj.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    subnet = reservation_subnet(labels)
    cidr = "" if subnet is None else f"{format_ip(subnet[0], subnet[1])}/{subnet[2]}"
    address = None
    text = (obj.get("spec") or {}).get("address")
    if isinstance(text, str):
        try:
            address = parse_request(text)
        except ValueError:
            address = None  # (its name still says it)
    new = reservation(meta.get("name", ""), owner, meta.get("namespace", ""), network=labels.get(NETWORK_LABEL, ""),
                      cidr=cidr, address=address)  # fmt: skip
    new["metadata"]["labels"] = {**labels, **new["metadata"]["labels"]}
    new["metadata"]["resourceVersion"] = meta.get("resourceVersion", "")
    return new


def pod_selector(podref: str) -> str:
    """The label selector of the reservations of pod "<namespace>/<name>" ("" when a name is no label value:
    its reservations carry no such label, and selector syntax in it would add requirements of its own)."""
    namespace, _, pod = podref.partition("/")
    if not (is_label_value(namespace) and is_label_value(pod)) or not namespace or not pod:
        return ""
    return f"{POD_NAMESPACE_LABEL}={namespace},{POD_NAME_LABEL}={pod}"


def reservation_labels(owner: Owner, network: str, cidr: str) -> dict[str, str]:
    """Labels for `kubectl get ip -l ...`; a value a label cannot hold (over 63 characters) is left out."""
    labels = {ATTACHMENT_LABEL: attachment_label(owner), STATE_LABEL: owner.state}
    if cidr:
        address, _, prefix = cidr.partition("/")
        labels[f"subnet_{prefix}"] = reservation_name("", *parse_request(address))  # '10.1.2.0', 'fd00--0'
    namespace, _, pod = owner.podref.partition("/")
    optional = {NETWORK_LABEL: network, POD_NAMESPACE_LABEL: namespace, POD_NAME_LABEL: pod, NODE_LABEL: owner.node,
                STICKY_LABEL: owner.sticky_kind}  # fmt: skip
    labels.update((key, value) for key, value in optional.items() if value and len(value) <= 63)
    return labels


def pool_subnet(key: PoolKey) -> tuple[int, int, int]:
    """(IP version, network, prefix) of a pool's range: what reservation_subnet reads from its reservations."""
    version, base = parse_request(key.cidr)
    return version, base, int(key.cidr.partition("/")[2])


def is_label_value(text: str) -> bool:
    """Whether `text` can be a label's value (and so a label selector's operand, nothing more)."""
    return len(text) <= 63 and (not text or _LABEL_VALUE.fullmatch(text) is not None)


def reservation_subnet(labels: dict[str, str]) -> tuple[int, int, int] | None:
    """The range a reservation was taken in, (IP version, network, prefix), from its `subnet_<prefix>` label
    (reservation_labels); None when it has none (a Go plugin's object)."""
    for key, value in labels.items():
        if key.startswith("subnet_") and key[7:].isdigit():
            try:
                version, network = parse_request(value.replace("-", ":") if "-" in value else value)
            except ValueError:
                continue
            prefix = int(key[7:])
            if prefix > (32 if version == 4 else 128):
                continue  # no range (subnet_40 on an IPv4 address): a label the plugin never writes
            return version, network, prefix
    return None


def labelled_reservations(
    listed: Iterable[Read], networks: Collection[str]
) -> dict[tuple[str, int, int], tuple[tuple[int, int, int], Owner]]:
    """(network, version, ip) -> (the range it was taken in, as reservation_subnet reads it; its holder), for the
    listed reservations that say their range (a Go plugin's say none)."""
    found = {}
    for obj in listed:
        subnet = reservation_subnet((obj.get("metadata") or {}).get("labels") or {})
        address = guess_reservation_address(obj, networks)
        if subnet is not None and address is not None:
            found[address] = (subnet, reservation_owner(obj))
    return found


def reservation_patch(obj: Read, previous: Owner) -> list[Object]:
    """JSON patch operations turning a reservation held by `previous` into `obj` (its spec and labels): the
    `test`s fail the patch whole (TestFailed) if it is someone else's now."""
    return [
        {"op": "test", "path": "/spec/containerid", "value": previous.container_id},
        {"op": "test", "path": "/spec/ifname", "value": previous.ifname},
        {"op": "test", "path": "/spec/podref", "value": previous.podref or NO_POD},
        {"op": "replace", "path": "/spec", "value": obj["spec"]},
        {"op": "add", "path": "/metadata/labels", "value": obj["metadata"]["labels"]},
    ]


def reservation_owner(obj: Read) -> Owner:
    spec = obj.get("spec", {})
    podref = spec.get("podref", "")
    return Owner(spec.get("containerid", ""), spec.get("ifname", ""), "" if podref == NO_POD else podref,
                 str(spec.get("netconf") or ""), *_read_sticky(spec))  # fmt: skip


# -- Pods and IPAMClaims (read for sticky addresses) ------------------------------------------------------------

CLAIMS_GROUP = "k8s.cni.cncf.io"
CLAIMS_VERSION = "v1alpha1"
IPAMCLAIMS = "ipamclaims"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"  # the pod's network-selection elements


def pod_facts(obj: Read) -> PodFacts:
    """The pod's controlling owner ("<apiVersion>/<Kind>/<name>/<uid>") and network-selection annotation."""
    meta = obj.get("metadata") or {}
    controller = ""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            controller = "/".join(str(ref.get(k) or "") for k in ("apiVersion", "kind", "name", "uid"))
    networks = (meta.get("annotations") or {}).get(NETWORKS_ANNOTATION) or ""
    return PodFacts(controller, networks if isinstance(networks, str) else "")


# -- NodeSlicePool ---------------------------------------------------------------------------------------------


def node_slice_pool(name: str, namespace: str, spec: Object, annotations: dict[str, str]) -> Object:
    meta = {"name": name, "namespace": namespace, "annotations": annotations}
    return {"apiVersion": API_VERSION, "kind": "NodeSlicePool", "metadata": meta, "spec": spec}


def slice_listing(obj: Read | None) -> tuple[tuple[str, str], ...]:
    """status.allocations as (nodeName, sliceRange) pairs, in their order ("" node: a free slice)."""
    entries = ((obj or {}).get("status") or {}).get("allocations") or []
    return tuple((str(e.get("nodeName") or ""), str(e.get("sliceRange") or "")) for e in entries)


def slice_network(obj: Read) -> str:
    """The network a NodeSlicePool slices: its annotation (this controller's), else its name (the Go one's: the
    network_name, or the config name of a network without one)."""
    return str(_annotations(obj).get(NETWORK_ANNOTATION, (obj.get("metadata") or {}).get("name", "")))


def slice_networks(obj: Read) -> tuple[str, ...]:
    """The networks whose node pools a NodeSlicePool may list: the Go controller's (no annotation) is named by the
    network_name, or by the config name of a network without one ("")."""
    network = slice_network(obj)
    return (network,) if NETWORK_ANNOTATION in _annotations(obj) else (network, "")


def _annotations(obj: Read) -> Read:
    return (obj.get("metadata") or {}).get("annotations") or {}


def slice_nodes(listed: Iterable[Read]) -> dict[tuple[str, str], str]:
    """(network, slice CIDR) -> the node holding it, from listed NodeSlicePools (free slices left out). Per
    network: two networks may slice the same range, each slice held by another node."""
    nodes: dict[tuple[str, str], str] = {}
    for obj in listed:
        for network in slice_networks(obj):
            for node, cidr in slice_listing(obj):
                if node and cidr:
                    nodes.setdefault((network, cidr), node)
    return nodes


def subnet_pool_key(network: str, subnet: tuple[int, int, int], nodes: Mapping[tuple[str, str], str]) -> PoolKey:
    """The pool a reservation of `network` labelled with `subnet` (reservation_subnet) was taken in: the slice
    of the node `nodes` (slice_nodes) says holds it in that network, else a whole range's pool."""
    version, base, prefix = subnet
    cidr = f"{format_ip(version, base)}/{prefix}"
    return PoolKey(network, cidr, nodes.get((network, cidr), ""))


def slice_pool_value(obj: Read, where: str) -> SlicePool:
    spec = obj.get("spec") or {}
    return SlicePool(str(spec.get("range") or ""), str(spec.get("sliceSize") or ""), slice_listing(obj), where)


def slice_allocation(node: str, cidr: str) -> dict[str, str]:
    """A listing entry; a free slice without `nodeName` (see deploy/base/crds/nodeslicepools.yaml)."""
    return {"nodeName": node, "sliceRange": cidr} if node else {"sliceRange": cidr}
