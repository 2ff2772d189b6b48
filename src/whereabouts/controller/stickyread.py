"""The reads behind sticky judgements (controller.sticky): retained entries' controllers, IPAMClaims and the
NADs' sticky settings. Each read is made once per Lookups; the reconciler makes one Lookups for its listing
and its Applier another, for the fresh reads right before each write.

Whatever cannot be read proves nothing: a refused GET (403: the controller's ClusterRole may not name that
kind) or a failing one leaves the fact unknown, and an unknown fact never releases anything. Each such read,
and each list of a kind the API server does not serve (its CRD not installed), is kept in `unread`: the
controller says so (once, and in /readyz) and tries again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from whereabouts.controller.nads import NAD_GROUP, NAD_VERSION, NADS
from whereabouts.controller.sticky import Evidence, NetworkSticky, OwnerRef, claim_ref, sticky_networks
from whereabouts.errors import TryAgainLater
from whereabouts.kube.client import APIError, KubeClient
from whereabouts.kube.resources import CLAIMS_GROUP, CLAIMS_VERSION, IPAMCLAIMS
from whereabouts.model import Owner


class Lookups:
    def __init__(self, client: KubeClient, log: Callable[[str], None]) -> None:
        self.client, self.log = client, log
        self.controllers: dict[str, bool | None] = {}
        self.claims: dict[str, bool | None] = {}
        self.nads: dict[str, NetworkSticky] | None = None
        self.nads_read = False
        self.unread: list[TryAgainLater] = []  # what could not be read (see the module's docstring)

    def evidence(self, owners: Iterable[Owner]) -> Evidence:
        """From lists (one per kind) and a GET per distinct controller: what the plan judges by."""
        sticky = [owner for owner in owners if owner.sticky]
        if not sticky:
            return Evidence()
        retained = [owner for owner in sticky if owner.retained]
        for owner in retained:
            if owner.sticky_kind == "pod" and owner.controller:
                self.controller(owner.controller, owner.podref.partition("/")[0])
        claims = self._all_claims() if any(owner.sticky_kind == "claim" for owner in retained) else None
        return Evidence(dict(self.controllers), claims, self.networks())

    def confirm(self, owner: Owner) -> Evidence:
        """Fresh reads for one entry, right before its write (the Applier's Lookups is new each pass)."""
        controllers = {}
        if owner.sticky_kind == "pod" and owner.controller:
            controllers[owner.controller] = self.controller(owner.controller, owner.podref.partition("/")[0])
        claims: frozenset[str] | None = frozenset()
        if owner.sticky_kind == "claim":
            exists = self.claim(claim_ref(owner))
            claims = None if exists is None else frozenset({claim_ref(owner)} if exists else ())
        return Evidence(controllers, claims, self.networks())

    def controller(self, recorded: str, namespace: str) -> bool | None:
        """True: it exists with the recorded uid; False: 404, or another uid; None: cannot be looked up."""
        if recorded not in self.controllers:
            self.controllers[recorded] = self._controller(recorded, namespace)
        return self.controllers[recorded]

    def _controller(self, recorded: str, namespace: str) -> bool | None:
        ref = OwnerRef.parse(recorded)
        if ref is None or ref.resource is None or not namespace:
            return None
        group, version, plural = ref.resource
        found = self._get(self.client.resource(plural, ref.name, group=group, version=version, namespace=namespace))
        if found is None:
            return None
        obj = found[0]
        return obj is not None and (obj.get("metadata") or {}).get("uid") == ref.uid

    def claim(self, ref: str) -> bool | None:
        """Whether the IPAMClaim "<namespace>/<name>" exists; None when its CRD is not installed (the list
        endpoint 404s too) or the read fails."""
        if ref not in self.claims:
            namespace, _, name = ref.partition("/")
            if not namespace or not name:
                return None
            found = self._get(self._claims_path(namespace, name))
            if found is not None and found[0] is None:
                listed = self._list(self._claims_path(namespace) + "?limit=1")
                found = None if listed is None else found
            self.claims[ref] = None if found is None else found[0] is not None
        return self.claims[ref]

    def _all_claims(self) -> frozenset[str] | None:
        listed = self._list(self._claims_path(""))
        if listed is None:
            return None  # the CRD is not installed: no claim can be proven gone
        items = listed.get("items") or []
        return frozenset(f"{i['metadata'].get('namespace', '')}/{i['metadata'].get('name', '')}" for i in items)

    def networks(self) -> dict[str, NetworkSticky] | None:
        """Network config name -> what its NADs say of sticky; None when NADs cannot be listed."""
        if not self.nads_read:
            self.nads_read = True
            listed = self._list(self.client.resource(NADS, group=NAD_GROUP, version=NAD_VERSION))
            self.nads = None if listed is None else sticky_networks(listed.get("items") or [])
        return self.nads

    def _claims_path(self, namespace: str, name: str = "") -> str:
        return self.client.resource(IPAMCLAIMS, name, group=CLAIMS_GROUP, version=CLAIMS_VERSION, namespace=namespace)

    def _get(self, path: str) -> tuple[dict[str, Any] | None] | None:
        """(the object, None on 404); None when the read failed (refused, unreachable): it proves nothing."""
        try:
            return (self.client.get(path),)
        except TryAgainLater as exc:
            if not (isinstance(exc, APIError) and exc.status == 403):  # refused by RBAC: no outage, not retried
                self.unread.append(exc)
            return None

    def _list(self, path: str) -> dict[str, Any] | None:
        """A list; None when it failed or the kind is not served (404: its CRD is not installed)."""
        found = self._get(path)
        if found is not None and found[0] is None:
            message = f"kubernetes API does not serve {path.partition('?')[0]} (404): is its CRD installed?"
            self.unread.append(APIError(message, status=404, path=path))
        return None if found is None else found[0]
