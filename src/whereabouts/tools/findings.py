"""What `check` finds wrong, decided without I/O from what was read (pools' entries, network-wide reservations).

    duplicate            one address of a network held by two attachments (two pools whose ranges overlap, two
                         node slices, or an entry and a reservation naming different holders)
    outside-range        an entry whose address lies outside its pool's range (never handed out by the plugin)
    missing-reservation  an entry without its reservation, in a pool whose other entries have theirs
    orphan-reservation   a reservation that no entry stands behind
    gone-pod             an entry of a pod that is gone (Kubernetes), judged as the reconciler judges it
    slice-mismatch       node slices that disagree with their NetworkAttachmentDefinitions (Kubernetes)
    unreadable           a pool whose range or name the plugin would not have written
A `warning` (e.g. a reservation younger than an ADD takes) does not make `check` fail; an `error` does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from whereabouts.controller.leaks import Judgement, Verdict
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import Network, format_ip
from whereabouts.tools.view import printable

Pools = Mapping[PoolKey, Mapping[int, Owner]]
Reserved = Mapping[tuple[str, int, int], Owner]
ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    kind: str
    what: str  # the address or object
    network: str
    detail: str
    severity: str = ERROR
    fix: str = ""  # what --repair does about it ("" nothing: not safe)
    at: tuple[PoolKey | None, int, Owner] | None = field(default=None, compare=False)  # what the fix writes

    def row(self) -> dict[str, str]:
        return {"kind": self.kind, "severity": self.severity, "network": self.network, "what": self.what,
                "detail": self.detail, "repair": self.fix}  # fmt: skip


def who(owner: Owner) -> str:
    """The holder, for people: its names escaped (view.printable), one line whatever they hold."""
    state = ", retained" if owner.retained else ""
    return printable(f"container {owner.container_id} {owner.ifname}, pod {owner.podref or '-'}") + state


def duplicates(pools: Pools) -> list[Finding]:
    """Addresses held by more than one attachment within one network."""
    holders: dict[tuple[str, int, int], list[tuple[PoolKey, Owner]]] = defaultdict(list)
    for key, entries in pools.items():
        for ip, owner in entries.items():
            holders[(key.network, key.version, ip)].append((key, owner))
    found = []
    for (network, version, ip), held in sorted(holders.items()):
        if len({(o.container_id, o.ifname) for _, o in held}) > 1:
            listed = "; ".join(f"{who(owner)} in pool {key.name}" for key, owner in held)
            found.append(Finding("duplicate", format_ip(version, ip), network, f"held twice: {listed}"))
    return found


def outside(pools: Pools) -> list[Finding]:
    found = []
    for key, entries in sorted(pools.items()):
        net = Network.parse(key.cidr)
        for ip, owner in sorted(entries.items()):
            if not net.contains(net.version, ip):
                detail = f"entry of pool {key.name} outside its range {key.cidr} ({who(owner)})"
                found.append(Finding("outside-range", format_ip(net.version, ip), key.network, detail))
    return found


def unreadable(keys: Iterable[PoolKey]) -> list[Finding]:
    """Pools keyed by a range the plugin never writes: no allocation reads them, nothing judges their entries."""
    detail = "range {!r} is not one the plugin writes: its entries are not judged"
    return [Finding("unreadable", f"pool {key.name}", key.network, detail.format(key.cidr)) for key in keys]


def reservation_mismatches(pools: Pools, reserved: Reserved) -> list[Finding]:
    """Entries without their reservation (where the pool's others have theirs: the network uses them), and
    reservations without an entry. A reservation naming another holder than the entry is a duplicate."""
    found = []
    at: dict[tuple[str, int, int], list[tuple[PoolKey, Owner]]] = defaultdict(list)
    for key, entries in pools.items():
        for ip, owner in entries.items():
            at[(key.network, key.version, ip)].append((key, owner))
    for key, entries in sorted(pools.items()):
        for ip, owner in sorted(entries.items()) if _uses_reservations(key, entries, reserved) else ():
            if not _inside(key, key.version, ip):
                continue  # outside-range says it; a reservation would block the address in another pool
            holder = reserved.get((key.network, key.version, ip))
            address = format_ip(key.version, ip)
            if holder is None:
                detail = f"entry of pool {key.name} ({who(owner)}) has no reservation"
                found.append(Finding("missing-reservation", address, key.network, detail, "error",
                                     "recreate reservation", (key, ip, owner)))  # fmt: skip
            elif not owner.recorded_in(holder):  # (a Go plugin's records less: v0.7+ no container ID)
                detail = f"pool {key.name} says {who(owner)}, its reservation says {who(holder)}"
                found.append(Finding("duplicate", address, key.network, f"held twice: {detail}"))
    for (network, version, ip), holder in sorted(reserved.items()):
        if not at.get((network, version, ip)):
            detail = f"reservation of {who(holder)}: no pool entry stands behind it"
            cover = next((k for k in sorted(pools) if k.network == network and _inside(k, version, ip)), None)
            fix = "release" if cover is not None else ""
            found.append(Finding("orphan-reservation", format_ip(version, ip), network, detail, ERROR, fix,
                                 (cover, ip, holder)))  # fmt: skip
    return found


def _uses_reservations(key: PoolKey, entries: Mapping[int, Owner], reserved: Reserved) -> bool:
    """Some entry of the pool has its reservation: the network keeps them (overlapping ranges on)."""
    for ip, owner in entries.items():
        holder = reserved.get((key.network, key.version, ip))
        if owner.recorded_in(holder):
            return True
    return False


def _inside(key: PoolKey, version: int, ip: int) -> bool:
    return Network.parse(key.cidr).contains(version, ip)


def gone_pods(pools: Pools, judge: Callable[[str], Judgement]) -> list[Finding]:
    """Held entries whose pod the reconciler would find gone (retained ones are no pod's: the plugin's own ADD
    or the reconciler's sticky rules free them). A sticky one is left to `release` (its DEL would retain it)."""
    found = []
    for key, entries in sorted(pools.items()):
        for ip, owner in sorted(entries.items()):
            if owner.retained or not owner.podref:
                continue
            judgement = judge(owner.podref)
            if judgement.verdict is Verdict.RELEASE:
                sticky = f"; sticky for {owner.sticky}: not released by --repair" if owner.sticky else ""
                detail = f"entry of pool {key.name} ({who(owner)}): {judgement.reason}{sticky}"
                fix = "" if owner.sticky else "release"
                found.append(Finding("gone-pod", format_ip(key.version, ip), key.network, detail, ERROR, fix,
                                     (key, ip, owner)))  # fmt: skip
    return found


def errors(findings: Iterable[Finding]) -> int:
    return sum(1 for finding in findings if finding.severity == ERROR)
