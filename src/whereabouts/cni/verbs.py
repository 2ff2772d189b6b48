"""One function per CNI verb: turn the call into IPAM service calls and a result."""

from __future__ import annotations

import time
from collections.abc import Mapping

from whereabouts import deadline
from whereabouts.cni.result import build_result
from whereabouts.config import KubernetesSettings, LocalSettings, load_ipam, requested_addresses, requested_gateways
from whereabouts.errors import (
    AddressOutsideRanges,
    AddressTaken,
    AttachmentNotFound,
    InvalidConfig,
    RangeExhausted,
    StatusUnavailable,
    TryAgainLater,
    WhereaboutsError,
    shown,
)
from whereabouts.log import Log
from whereabouts.model import ABANDONED, EXHAUSTED, GONE, OUTSIDE, TAKEN, Owner, Refusal
from whereabouts.ranges import RangeIndex, parse_request
from whereabouts.record import record
from whereabouts.service import IPAMService, empty_snapshot, pool_ranges, probe

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    from whereabouts.cni.protocol import CallEnv
    from whereabouts.config import IPAMConfig
    from whereabouts.model import PodFacts
    from whereabouts.node.runtime import Runtime
    from whereabouts.service import Assigned

    Result = dict[str, Any] | None
    T = TypeVar("T")


def _setup(call: CallEnv, netconf: Mapping[str, Any], runtime: Runtime) -> tuple[IPAMConfig, Log]:
    ipam = netconf.get("ipam")
    if not isinstance(ipam, Mapping):
        raise InvalidConfig("invalid ipam: the network config needs an ipam object")
    cfg = load_ipam(ipam, netconf.get("name"), on_kubernetes=bool(call.args.get("K8S_POD_NAMESPACE")),
                    persistent=netconf.get("allowPersistentIPs"), flat_file=call.flat_file,
                    same_file=runtime.same_file if runtime.peer is not None else None)  # fmt: skip
    if isinstance(cfg.store, LocalSettings):
        runtime.require_same_local_dir(cfg.store.data_dir)
    elif isinstance(cfg.store, KubernetesSettings) and cfg.store.kubeconfig:
        runtime.require_same_kubeconfig_files(cfg.store.kubeconfig)
    log = Log(cfg.log_file, cfg.log_level)
    for warning in cfg.warnings:
        log.warning(warning)
    return cfg, log


def _with_service(cfg: IPAMConfig, call: CallEnv, runtime: Runtime, use: Callable[[IPAMService], T]) -> T:
    """Serve with the configured store: the runtime's (the node daemon keeps it for the next call), or one
    opened for this call."""
    with runtime.store(cfg.store) as store:
        slices = store.node_slices() if cfg.slice_prefix else None
        return use(IPAMService(store, node=_node(call, cfg, runtime) if slices else call.nodename, slices=slices))


def _batch(
    cfg: IPAMConfig, call: CallEnv, runtime: Runtime, waiting: Sequence[tuple[Owner, Callable[[], bool] | None]]
) -> list[list[Assigned] | Refusal]:
    """One round of the node daemon's group commit: ADDs of one network on one node waiting together, each
    with whether its caller still waits (`_live`)."""
    requests = [(owner, ()) for owner, _ in waiting]
    live = [here for _, here in waiting]

    def wanted(i: int) -> bool:
        here = live[i]
        return here is None or here()

    return _with_service(cfg, call, runtime, lambda service: service.add_batch(cfg, requests, live=wanted))


def _live(runtime: Runtime) -> Callable[[], bool] | None:
    """In the node daemon: whether the call's caller still waits for its answer and its deadline has not passed
    (asked right before its commit: see IPAMService.add_batch); None in process (the caller is this process)."""
    peer, due = runtime.peer, deadline.current()
    if peer is None:
        return None
    return lambda: (due is None or time.monotonic() < due[0]) and peer.here()


class _Serial:
    """`with _Serial(runtime, call, cfg) as hold`: in the node daemon, the attachment's calls one at a time
    (node.batch.Attachments); `hold.hand_over()` gives the end of this one to a batched commit. A class, not
    contextlib's: the CNI process would pay for its import."""

    __slots__ = ("leave",)

    def __init__(self, runtime: Runtime, call: CallEnv, cfg: IPAMConfig) -> None:
        key = (call.container_id, call.ifname, cfg.netconf_name or cfg.network_name)
        self.leave = runtime.attachments.enter(key) if runtime.attachments is not None else None

    def __enter__(self) -> _Serial:
        return self

    def hand_over(self) -> Callable[[], None] | None:
        leave, self.leave = self.leave, None
        return leave

    def __exit__(self, *exc: object) -> None:
        if self.leave is not None:
            self.leave()


# The one place a decision's refusal becomes the CNI error that ends the call.
REFUSALS: dict[str, type[WhereaboutsError]] = {
    EXHAUSTED: RangeExhausted,
    TAKEN: AddressTaken,
    OUTSIDE: AddressOutsideRanges,
    GONE: AttachmentNotFound,
    ABANDONED: TryAgainLater,
}


def refused(refusal: Refusal) -> WhereaboutsError:
    return REFUSALS[refusal.kind](refusal.msg)


def _owner(call: CallEnv) -> Owner:
    return Owner(call.container_id, call.ifname, call.podref, node=call.nodename)


def _gc_node(call: CallEnv, cfg: IPAMConfig, runtime: Runtime) -> str | None:
    """The node whose allocations an ADD records and a GC may judge, on a store shared by every node (the
    runtime's list of valid attachments is its own host's: another node's allocation missing from it is not
    stale). None on the local store: the node's own, every allocation in it is this node's."""
    return None if isinstance(cfg.store, LocalSettings) else _node(call, cfg, runtime)


def _node(call: CallEnv, cfg: IPAMConfig, runtime: Runtime) -> str:
    """This node's name: NODENAME, else the nodename file (the same for the node daemon and its caller, or
    the call is declined), else the host name."""
    from whereabouts.nodeslice import node_name

    return node_name(cfg, call.nodename, same_file=runtime.same_file if runtime.peer is not None else None)


@record(frozen=True)
class Attachment:
    """The caller as an ADD or DEL of a sticky network sees it: the owner with its sticky key (and, for a pod
    key on Kubernetes, the pod's controller), the addresses of `reservations` naming its pod or MAC, and the
    IPAMClaim whose status an ADD writes ("<namespace>/<name>", "" for none)."""

    owner: Owner
    fixed: tuple[tuple[int, int], ...] = ()
    claim: str = ""


def _attachment(call: CallEnv, netconf: Mapping[str, Any], cfg: IPAMConfig, runtime: Runtime) -> Attachment:
    """ADD: a call without what its sticky key needs (a MAC, a pod) is refused, code 7."""
    owner = _owner(call).but(node=_gc_node(call, cfg, runtime) or call.nodename)
    if not cfg.sticky and not cfg.reservations:
        return Attachment(owner)
    from whereabouts.sticky import call_key, call_mac, fixed_for

    mac = call_mac(netconf, call.args)
    fixed = tuple((r.version, r.ip) for r in fixed_for(cfg.reservations, call.podref, mac))
    if cfg.sticky in ("pod", "claim") and cfg.store.kind == "kubernetes" and call.podref:
        facts = _pod_facts(cfg, call, runtime)
        if cfg.sticky == "claim":
            claim = _claim_reference(facts.networks, call, cfg) if facts else ""
            if claim:
                _require_claim(cfg, runtime, claim)
            key = call_key("claim", call.podref, call.ifname, mac, claim) if claim else ""
            return Attachment(owner.but(sticky=key), fixed, claim)
        owner = owner.but(controller=facts.controller if facts else "")
    key = call_key(cfg.sticky, call.podref, call.ifname, mac) if cfg.sticky != "claim" else ""
    return Attachment(owner.but(sticky=key), fixed)


def _releasing(call: CallEnv, netconf: Mapping[str, Any], cfg: IPAMConfig) -> Owner:
    """DEL and GC never fail for want of a key: an entry keeps the key it was recorded with; one recorded
    without (sticky turned on since its ADD) takes the call's, when the call carries it."""
    owner = _owner(call)
    if cfg.sticky not in ("pod", "mac"):
        return owner
    from whereabouts.sticky import call_key, call_mac

    try:
        return owner.but(sticky=call_key(cfg.sticky, call.podref, call.ifname, call_mac(netconf, call.args)))
    except InvalidConfig:
        return owner


def _pod_facts(cfg: IPAMConfig, call: CallEnv, runtime: Runtime) -> PodFacts | None:
    namespace, _, name = call.podref.partition("/")
    with runtime.store(cfg.store) as store:
        pods = store.pods()
        return pods.pod(namespace, name) if pods is not None else None


def _claim_reference(networks: str, call: CallEnv, cfg: IPAMConfig) -> str:
    """The IPAMClaim the pod's network-selection element for this attachment names (`ipam-claim-reference`),
    as "<namespace>/<name>"; "" when none does (a pod that is not a VM gets an ordinary address). The claim is
    the pod's namespace's, whatever namespace the element names (that is the NAD's): KubeVirt creates it beside
    the VM, and a pod must not take, nor write the status of, another namespace's claim."""
    import json

    try:
        elements = json.loads(networks) if networks.strip().startswith("[") else []
    except ValueError:
        return ""
    elements = [e for e in elements if isinstance(e, dict)]
    claims = [e for e in elements if isinstance(e.get("ipam-claim-reference"), str) and e["ipam-claim-reference"]]
    names = {cfg.netconf_name, cfg.network_name} - {""}
    for_interface = [e for e in elements if e.get("interface") == call.ifname]
    for_network = [e for e in elements if str(e.get("name", "")).rpartition("/")[2] in names]
    # the pod's only claim serves an attachment no element speaks of, never one whose element names no claim
    only = claims if len(claims) == 1 and not for_interface and not for_network else []
    for found in ([e for e in for_interface if e in claims], [e for e in for_network if e in claims], only):
        if found:
            return f"{call.podref.partition('/')[0]}/{found[0]['ipam-claim-reference']}"
    return ""


def _logged(verb: str, call: CallEnv, log: Log, action: Callable[[], Result]) -> Result:
    who = f"container={call.container_id} ifname={call.ifname} pod={call.podref or '-'}"
    try:
        outcome = action()
    except WhereaboutsError as exc:
        log.error(f"{verb} {who} failed (code {exc.code}): {exc.msg}")
        raise
    log.verbose(f"{verb} {who} ok {outcome or ''}")
    return outcome


def add(call: CallEnv, netconf: dict[str, Any], version: str, runtime: Runtime) -> Result:
    cfg, log = _setup(call, netconf, runtime)
    warnings: list[str] = []
    requested = requested_addresses(netconf, call.args, warnings)
    gateways = requested_gateways(call.args, warnings)
    for warning in warnings:
        log.warning(warning)

    def action() -> Result:
        who = _attachment(call, netconf, cfg, runtime)
        wanted = (*requested, *(ip for ip in who.fixed if ip not in requested))
        with _Serial(runtime, call, cfg) as serial:  # (the daemon's: after the attachment's earlier calls)
            live = _live(runtime)
            if runtime.batcher is not None and not wanted:
                batch = lambda waiting: _batch(cfg, call, runtime, waiting)  # noqa: E731
                assigned = runtime.batcher.submit(("ADD", cfg, call.nodename), (who.owner, live), batch,
                                                  settled=serial.hand_over())  # fmt: skip
            else:
                add_one = lambda service: service.add(cfg, who.owner, wanted, who.fixed, live)  # noqa: E731
                assigned = _with_service(cfg, call, runtime, add_one)
        if isinstance(assigned, Refusal):
            raise refused(assigned)
        if who.claim:
            _record_claim(cfg, call, runtime, who.claim, [a.address for a in assigned])
        _warn_bridge_address(cfg, assigned, gateways, log)
        ips = [(a.pool_range.rng.version, a.address) for a in assigned]
        return build_result(version, cfg, ips, gateways=gateways, requested=requested)

    return _logged("ADD", call, log, action)


def _warn_bridge_address(
    cfg: IPAMConfig, assigned: Sequence[Assigned], gateways: Sequence[tuple[int, int]], log: Log
) -> None:
    """A result naming no gateway makes the reference bridge plugin (isGateway) take the subnet's first address
    for the bridge itself: a pod given that address has no connectivity (the Go plugin hands it out the same).
    Said when it happens, so once per network and not on every call: one comparison per address otherwise."""
    for item in assigned:
        rng = item.pool_range.rng
        if rng.bits - rng.prefix < 2 or item.address != rng.with_address(rng.network + 1):
            continue
        if cfg.gateway_for(rng.version) or any(version == rng.version for version, _ in gateways):
            continue
        text = (f"network {cfg.network_name or cfg.netconf_name or '-'}: handed out {item.address}, the first address "
                f"of range {rng.cidr}, with no gateway configured: a bridge plugin with isGateway takes that address "
                "for the bridge itself. Set `gateway` (it is then never handed out)")  # fmt: skip
        log.warning(text)
        import sys  # loaded already: only the name is bound

        sys.stderr.write(f"whereabouts: warning: {text}\n")  # the runtime's log, or the node daemon's


def _require_claim(cfg: IPAMConfig, runtime: Runtime, claim: str) -> None:
    """Before allocating: an address given for a claim that does not exist would be retained for it after the
    runtime's DEL of the failed ADD, until the reconciler noticed."""
    namespace, _, name = claim.partition("/")
    with runtime.store(cfg.store) as store:
        pods = store.pods()
        if pods is not None and not pods.has_claim(namespace, name):
            raise InvalidConfig(NO_CLAIM.format(claim))


NO_CLAIM = "sticky claim: the pod names IPAMClaim {}, which does not exist"


def _record_claim(cfg: IPAMConfig, call: CallEnv, runtime: Runtime, claim: str, ips: list[str]) -> None:
    """The IPAMClaim's status.ips say which addresses the claim holds, its ownerPod which pod holds them now
    (KubeVirt and operators read them)."""
    namespace, _, name = claim.partition("/")
    with runtime.store(cfg.store) as store:
        pods = store.pods()
        if pods is not None and not pods.record_claim(namespace, name, ips, call.podref.partition("/")[2]):
            raise InvalidConfig(NO_CLAIM.format(claim))


def delete(call: CallEnv, netconf: dict[str, Any], version: str, runtime: Runtime) -> Result:
    cfg, log = _setup(call, netconf, runtime)

    def action() -> Result:
        owner = _releasing(call, netconf, cfg)
        with _Serial(runtime, call, cfg) as serial:  # (the daemon's: after an ADD of it still to be committed)
            if runtime.batcher is not None:
                batch = lambda owners: _with_service(cfg, call, runtime, lambda svc: svc.delete_batch(cfg, owners))  # noqa: E731
                runtime.batcher.submit(("DEL", cfg, call.nodename), owner, batch, settled=serial.hand_over())
                return None
            return _with_service(cfg, call, runtime, lambda service: service.delete(cfg, owner))

    return _logged("DEL", call, log, action)


def check(call: CallEnv, netconf: dict[str, Any], version: str, runtime: Runtime) -> Result:
    cfg, log = _setup(call, netconf, runtime)
    expected = _prev_result_addresses(netconf, cfg)

    def action() -> Result:
        missing = _missing_local_store(cfg)
        if missing:  # nothing was ever allocated there: nothing to check, and nothing to create
            raise AttachmentNotFound(f"container {call.container_id} interface {call.ifname} holds no address: "
                                     f"there is no local datastore in {missing} (yet)")  # fmt: skip
        with _Serial(runtime, call, cfg):
            gone = _with_service(cfg, call, runtime, lambda service: service.check(cfg, _owner(call), expected))
        if gone is not None:
            raise refused(gone)
        return None

    return _logged("CHECK", call, log, action)


def gc(call: CallEnv, netconf: dict[str, Any], version: str, runtime: Runtime) -> Result:
    """Release this network config's allocations whose attachments the runtime no longer lists. Changes
    nothing, and logs why, when the request has no list or the config no name: nothing can be judged stale."""
    cfg, log = _setup(call, netconf, runtime)
    valid = _valid_attachments(netconf)

    def action() -> Result:
        if valid is None:
            log.error(f"GC of network {cfg.netconf_name!r} changed nothing: the request lists no valid attachments "
                      "(neither cni.dev/valid-attachments nor cni.dev/attachments)")  # fmt: skip
            return None
        if not cfg.netconf_name:
            log.error("GC changed nothing: the network config has no name, and GC releases only allocations "
                      "recorded under the name of the network config it is for")  # fmt: skip
            return None
        node = _gc_node(call, cfg, runtime)
        released = _with_service(cfg, call, runtime, lambda service: service.gc(cfg, valid, node=node))
        log.verbose(f"GC of network {cfg.netconf_name!r} released {released} stale allocations")
        return None

    return _logged("GC", call, log, action)


def status(call: CallEnv, netconf: dict[str, Any], version: str, runtime: Runtime) -> Result:
    cfg, log = _setup(call, netconf, runtime)

    def action() -> Result:
        try:
            if _missing_local_store(cfg):  # the first ADD starts it empty: answered for an empty one, none created
                ranges = pool_ranges(cfg)
                unable = probe(cfg, ranges, empty_snapshot(ranges))
            else:
                unable = _with_service(cfg, call, runtime, lambda service: service.status(cfg))
        except (TryAgainLater, InvalidConfig) as exc:  # a store that cannot even be opened cannot serve ADD
            raise StatusUnavailable(f"cannot serve ADD: {exc.msg}") from exc
        if unable is not None:
            raise StatusUnavailable(f"cannot serve ADD: {unable.msg}")
        return None

    return _logged("STATUS", call, log, action)


def _missing_local_store(cfg: IPAMConfig) -> str:
    """The local store's directory when no store is there (opening it would create one), else ""."""
    if not isinstance(cfg.store, LocalSettings):
        return ""
    from whereabouts.store.local import store_absent

    return cfg.store.data_dir if store_absent(cfg.store.data_dir) else ""


def _prev_result_addresses(netconf: Mapping[str, Any], cfg: IPAMConfig) -> list[str]:
    """Addresses of prevResult that lie in a configured range (static `addresses` are not ours to check)."""
    prev = netconf.get("prevResult")
    if not isinstance(prev, Mapping):
        return []
    entries = prev.get("ips") or [prev.get(k) for k in ("ip4", "ip6") if isinstance(prev.get(k), Mapping)]
    if not isinstance(entries, list):
        raise InvalidConfig(f"invalid prevResult ips {shown(entries)}: expected a list")
    index = RangeIndex(cfg.ranges)
    found: list[str] = []
    for entry in entries:
        text = entry.get("address") or entry.get("ip") if isinstance(entry, Mapping) else None
        if not isinstance(text, str):
            continue  # no address: nothing of ours to check
        try:
            version, value = parse_request(text)
        except ValueError:
            raise InvalidConfig(f"invalid prevResult address {shown(text)}") from None
        if index.first(version, value) is not None:
            found.append(text)
    return found


def _valid_attachments(netconf: Mapping[str, Any]) -> set[tuple[str, str]] | None:
    """The attachments GC must keep; None when the request does not say (neither key, or null). An empty
    list is a real answer: none of this network config's attachments is valid."""
    key = "cni.dev/valid-attachments" if netconf.get("cni.dev/valid-attachments") is not None else "cni.dev/attachments"
    listed = netconf.get(key)
    if listed is None:
        return None
    if not isinstance(listed, list):
        raise InvalidConfig(f"invalid {key} {shown(listed)}: expected a list")
    valid = set()
    for item in listed:  # (an entry without its ifname matches no attachment: its address would be released)
        if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) and item[k]
                                                    for k in ("containerID", "ifname")):  # fmt: skip
            raise InvalidConfig(f"invalid {key} entry {shown(item)}: expected containerID and ifname")
        valid.add((item["containerID"], item["ifname"]))
    return valid


VERBS: dict[str, Callable[[CallEnv, dict[str, Any], str, Runtime], Result]] = {
    "ADD": add,
    "DEL": delete,
    "CHECK": check,
    "GC": gc,
    "STATUS": status,
}
