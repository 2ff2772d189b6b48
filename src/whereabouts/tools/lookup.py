"""`who-has ADDRESS` and `show [POD]`: the attachments holding addresses, with their network, pool, node, when
the address was reserved (Kubernetes), whether the pod still exists and the sticky state."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import Network, format_ip, parse_request
from whereabouts.tools.errors import BadInput, ToolError
from whereabouts.tools.reading import Pods, all_keys, read_pools, reserved_since
from whereabouts.tools.target import Target
from whereabouts.tools.view import Column, render


@dataclass(frozen=True)
class Holding:
    key: PoolKey | None  # None: a reservation with no pool entry behind it
    version: int
    ip: int
    owner: Owner

    @property
    def address(self) -> tuple[str, int, int]:
        network = self.key.network if self.key else ""
        return network, self.version, self.ip


COLUMNS = (
    Column("ADDRESS", "address"),
    Column("NETWORK", "network"),
    Column("POD", "pod"),
    Column("IFNAME", "ifname"),
    Column("CONTAINER", "container", lambda r: (r["container"] or "-")[:12]),
    Column("STATE", "state"),
    Column("NODE", "node"),
    Column("SINCE", "since"),
    Column("POD-STATUS", "podStatus"),
    Column("POOL", "pool", wide=True),
    Column("STICKY", "sticky", wide=True),
    Column("EXPIRES", "expires", lambda r: _time(r["expires"]) if r["expires"] else "-", wide=True),
    Column("CONTROLLER", "controller", wide=True),
    Column("NETCONF", "netconf", wide=True),
)


def who_has(target: Target, text: str, output: str, network: str | None) -> str:
    try:
        version, ip = parse_request(text)
    except ValueError:
        raise BadInput(f"invalid address {text!r}: expected an IPv4 or IPv6 address") from None
    keys = [k for k in all_keys(target, network) if Network.parse(k.cidr).contains(version, ip)]
    found = [Holding(k, version, ip, owner) for k, pool in read_pools(target, keys).items()
             for at, owner in pool.items() if at == ip]  # fmt: skip
    found += _lone_reservations(target, found, version, ip, network)
    if not found:
        where = ", ".join(k.name for k in keys) or "no pool's range holds it"
        raise ToolError(f"{format_ip(version, ip)} is held by nobody ({where})")
    return render("AddressList", rows(target, found), COLUMNS, output)


def show(target: Target, pod: str, output: str, *, namespace: str, every: bool) -> str:
    """One pod's attachments (POD: '<ns>/<name>', or a name in `namespace`), else every pod's in `namespace` or
    (`every`) in all namespaces."""
    if pod and every:
        raise BadInput("show POD names one pod: -A/--all-namespaces lists every pod's addresses instead")
    podref = pod if "/" in pod else f"{namespace}/{pod}" if pod else ""
    pools = read_pools(target, all_keys(target))
    found = [Holding(key, key.version, ip, owner) for key, pool in pools.items()
             for ip, owner in sorted(pool.items()) if _wanted(owner, podref, namespace, every)]  # fmt: skip
    if not found and pod:
        raise ToolError(f"pod {podref} holds no address")
    return render("AddressList", rows(target, found), COLUMNS, output) if found or output in ("json", "yaml") else ""


def _wanted(owner: Owner, podref: str, namespace: str, every: bool) -> bool:
    if podref:
        return owner.podref == podref
    return every or owner.podref.startswith(namespace + "/")


def _lone_reservations(
    target: Target, found: list[Holding], version: int, ip: int, network: str | None
) -> list[Holding]:
    """Reservations of the address that no entry shown stands behind (a call between its writes, or a leak)."""
    reserved = target.store().reserved(target.networks())
    shown = {(h.address, h.owner.container_id, h.owner.ifname) for h in found}
    return [Holding(None, version, ip, owner) for (net, ver, at), owner in sorted(reserved.items())
            if (ver, at) == (version, ip) and (network is None or net == network)
            and ((net, ver, at), owner.container_id, owner.ifname) not in shown]  # fmt: skip


def rows(target: Target, found: list[Holding]) -> list[dict[str, Any]]:
    pods = Pods(target)
    since = reserved_since(target, (h.address for h in found))
    found = sorted(found, key=lambda h: (h.address, h.key is None, h.key or PoolKey("", "")))
    return [_row(h, pods, since.get(h.address)) for h in found]


def _row(holding: Holding, pods: Pods, since: float | None) -> dict[str, Any]:
    owner, key = holding.owner, holding.key
    state = owner.state if key is not None else "reservation only"
    return {"address": format_ip(holding.version, holding.ip), "network": key.network if key else "",
            "pool": key.name if key else "", "slice": key.node if key else "", "pod": owner.podref,
            "ifname": owner.ifname, "container": owner.container_id, "state": state, "node": owner.node,
            "since": _time(since) if since else "", "podStatus": pods.status(owner.podref), "sticky": owner.sticky,
            "retained": owner.retained, "expires": owner.expires, "controller": owner.controller,
            "fixed": owner.fixed, "netconf": owner.netconf}  # fmt: skip


def _time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
