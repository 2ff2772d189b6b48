"""Sticky addresses in the controllers: when a retained entry is released, and what a missed DEL leaves. No I/O.

A retained entry (its DEL is done, see docs/sticky.md) outlives its pod on purpose, so "the pod is gone" never
releases it. Only its key's owner, provably gone, does:
    pod    its recorded controller (ownerReference) is gone: GET 404, or an object of that name with another
           uid; or its retention has passed and no pod of that name exists. A controller kind not in OWNER_KINDS,
           or a GET that is refused (403), proves nothing: only the retention rule applies then.
    mac    its retention has passed.
    claim  its IPAMClaim is gone; while the IPAMClaim CRD itself is not installed nothing is released.
and, for any key, sticky turned off: NetworkAttachmentDefinitions whose config `name` is the entry's network
config name exist and none of them has `sticky` or `allowPersistentIPs` any more. No such NAD: kept.

A held entry with a sticky key whose pod is gone (its DEL never ran) is turned retained, as its DEL would have
done, not released; a fixed reservation's entry is released, as its DEL would have done (service._retainer).
Its retention is the longest `sticky_retention` of the NADs naming its network config, else 24 h (a claim's
waits for the claim).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from whereabouts.controller.nads import nad_config, whereabouts_ipam
from whereabouts.errors import InvalidConfig
from whereabouts.model import Owner
from whereabouts.sticky import DEFAULT_RETENTION, MODES, parse_retention

# "<apiVersion>/<Kind>" -> (group, version, plural): the controllers a GET can look for
OWNER_KINDS = {
    "apps/v1/StatefulSet": ("apps", "v1", "statefulsets"),
    "apps/v1/ReplicaSet": ("apps", "v1", "replicasets"),
    "apps/v1/DaemonSet": ("apps", "v1", "daemonsets"),
    "apps/v1/Deployment": ("apps", "v1", "deployments"),
    "batch/v1/Job": ("batch", "v1", "jobs"),
    "batch/v1/CronJob": ("batch", "v1", "cronjobs"),
    "kubevirt.io/v1/VirtualMachine": ("kubevirt.io", "v1", "virtualmachines"),
    "kubevirt.io/v1/VirtualMachineInstance": ("kubevirt.io", "v1", "virtualmachineinstances"),
}


@dataclass(frozen=True)
class OwnerRef:
    """A recorded controller, "<apiVersion>/<Kind>/<name>/<uid>" (apiVersion may hold a '/')."""

    kind: str  # "<apiVersion>/<Kind>"
    name: str
    uid: str

    @classmethod
    def parse(cls, text: str) -> OwnerRef | None:
        parts = text.split("/")
        if len(parts) not in (4, 5) or not all(parts):
            return None
        return cls("/".join(parts[:-2]), parts[-2], parts[-1])

    @property
    def resource(self) -> tuple[str, str, str] | None:
        """(group, version, plural) for a GET; None for a kind this controller does not know."""
        return OWNER_KINDS.get(self.kind)

    def describe(self) -> str:
        return f"{self.kind.rsplit('/', 1)[-1]} {self.name} (uid {self.uid})"


@dataclass(frozen=True)
class NetworkSticky:
    """What the NADs naming one network config say: sticky still on in any of them, its longest retention."""

    on: bool
    retention: int
    nads: tuple[str, ...]  # "<namespace>/<name>"


@dataclass(frozen=True)
class Evidence:
    """What was read about retained entries' owners. `controllers`: recorded text -> True (exists), False
    (gone), None (unknown). `claims`: "<namespace>/<name>" of existing IPAMClaims; None: the CRD is not
    installed or the list failed. `networks`: network config name -> its NADs' sticky settings; None: unread."""

    controllers: Mapping[str, bool | None] = field(default_factory=dict)
    claims: frozenset[str] | None = None
    networks: Mapping[str, NetworkSticky] | None = None

    def sticky_off(self, owner: Owner) -> NetworkSticky | None:
        """The NADs that prove sticky is off for the entry's network config, else None."""
        found = (self.networks or {}).get(owner.netconf) if owner.netconf else None
        return found if found is not None and not found.on else None

    def retention(self, owner: Owner) -> int:
        found = (self.networks or {}).get(owner.netconf) if owner.netconf else None
        return found.retention if found is not None else DEFAULT_RETENTION


def claim_ref(owner: Owner) -> str:
    """The "<namespace>/<name>" of a claim key's IPAMClaim ("" for another key)."""
    return owner.sticky.partition(":")[2] if owner.sticky_kind == "claim" else ""


def judge_retained(owner: Owner, *, pod_exists: bool, evidence: Evidence, now: float) -> tuple[bool, str]:
    """(release?, why) for a retained entry."""
    off = evidence.sticky_off(owner)
    if off is not None:
        return True, f"sticky is off for network {owner.netconf} in NAD(s) {', '.join(off.nads)}"
    kind, key = owner.sticky_kind, owner.sticky
    passed = bool(owner.expires) and now >= owner.expires
    if kind == "pod":
        return _judge_pod_key(owner, pod_exists=pod_exists, passed=passed, evidence=evidence)
    if kind == "mac":
        return (True, f"retained for {key}, its retention passed") if passed else (False, _waiting(owner))
    if kind == "claim":
        if evidence.claims is None:
            return False, f"retained for {key}: IPAMClaims cannot be read (CRD not installed?)"
        if claim_ref(owner) not in evidence.claims:
            return True, f"retained for {key}: IPAMClaim {claim_ref(owner)} is gone"
        return False, f"retained for {key}: its IPAMClaim exists"
    return False, f"retained for {key or 'no key'}: not a key this controller can judge"


def _judge_pod_key(owner: Owner, *, pod_exists: bool, passed: bool, evidence: Evidence) -> tuple[bool, str]:
    ref = OwnerRef.parse(owner.controller)
    if ref is not None and evidence.controllers.get(owner.controller) is False:
        return True, f"retained for {owner.sticky}: its controller {ref.describe()} is gone"
    if passed and not pod_exists:
        return True, f"retained for {owner.sticky}: its retention passed and the pod does not exist"
    if passed:
        return False, f"retained for {owner.sticky}: its retention passed but the pod exists"
    known = (
        ""
        if ref is None
        else f"; its controller {ref.describe()} "
        + ("exists" if evidence.controllers.get(owner.controller) else "cannot be looked up")
    )
    return False, _waiting(owner) + known


def _waiting(owner: Owner) -> str:
    return f"retained for {owner.sticky} until {owner.expires}" if owner.expires else f"retained for {owner.sticky}"


def retains(owner: Owner) -> bool:
    """A held entry whose pod is gone is turned retained rather than released (as its DEL would do)."""
    return bool(owner.sticky) and not owner.retained and not owner.fixed


def retained(owner: Owner, *, now: int, retention: int, controller: str = "") -> Owner:
    """The entry as its DEL would have left it at `now` (controller filled in when it recorded none)."""
    expires = 0 if owner.sticky_kind == "claim" else now + retention
    return owner.but(retained=now, expires=expires, controller=owner.controller or controller)


# -- reading the NADs --------------------------------------------------------------------------------------------


def sticky_networks(nads: Iterable[Mapping[str, object]]) -> dict[str, NetworkSticky]:
    """Network config name -> what its NADs say of sticky; NADs that are unreadable or not whereabouts' are left
    out (they prove nothing)."""
    found: dict[str, NetworkSticky] = {}
    for nad in nads:
        parsed = _nad_sticky(nad)
        if parsed is None:
            continue
        name, on, retention = parsed
        known = found.get(name)
        if known is not None:
            on, retention = on or known.on, max(retention, known.retention)
        found[name] = NetworkSticky(on, retention, (*(known.nads if known else ()), _ref(nad)))
    return found


def _nad_sticky(nad: Mapping[str, object]) -> tuple[str, bool, int] | None:
    try:
        config = nad_config(nad)
    except InvalidConfig:
        return None
    if not isinstance(config, Mapping):
        return None
    found = whereabouts_ipam(config)
    if found is None or not found[0]:
        return None
    name, ipam = found
    sticky = ipam.get("sticky")
    if sticky not in (None, "") and sticky not in MODES:  # (`false`, `0`, a misspelling: refused by the plugin)
        return None  # a config every ADD refuses proves nothing about the network's stickiness
    plugins = config.get("plugins")
    levels = [config, ipam, *(plugins if isinstance(plugins, list) else [])]  # allowPersistentIPs may be on any
    on = bool(ipam.get("sticky")) or any(isinstance(v, Mapping) and v.get("allowPersistentIPs") is True for v in levels)
    try:
        retention = parse_retention(ipam)
    except InvalidConfig:
        retention = DEFAULT_RETENTION
    return name, on, retention


def _ref(nad: Mapping[str, object]) -> str:
    meta = nad.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
