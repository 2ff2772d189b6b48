"""`check [--repair]`: what is wrong in the store (whereabouts.tools.findings says what each finding means), and
with `--repair` the safe part of it fixed, then the store checked again: the exit status says whether anything
is still wrong.

Kubernetes: the reconciler's reading, plan and Applier (whereabouts.tools.kubecheck). The local and etcd stores,
whose commits write an entry and its reservation at once (so no ADD is ever between the two): a missing
reservation is recreated and a lone one dropped through the IPAM service's guarded writes; an entry of a pod
proven gone (with --kubeconfig beside the store, as the reconciler proves it: confirmed by a fresh GET) is
released. Addresses held twice, entries outside their range and node slices are reported only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from whereabouts.controller.leaks import Verdict
from whereabouts.errors import WhereaboutsError
from whereabouts.service import IPAMService
from whereabouts.tools import findings as found
from whereabouts.tools.errors import ToolError
from whereabouts.tools.findings import Finding
from whereabouts.tools.reading import Pods, read_pools, split_keys
from whereabouts.tools.target import Target, require_networks
from whereabouts.tools.view import Column, render

COLUMNS = (
    Column("SEVERITY", "severity"),
    Column("KIND", "kind"),
    Column("NETWORK", "network"),
    Column("WHAT", "what"),
    Column("REPAIR", "repair"),
    Column("DETAIL", "detail"),
)


@dataclass
class Outcome:
    findings: list[Finding]
    repairs: list[str] = field(default_factory=list)
    remaining: list[Finding] | None = None  # after --repair (None: not repaired)
    nothing_here: str = ""  # the namespace searched, where it holds no pool and no reservation

    @property
    def failed(self) -> bool:
        return bool(self.nothing_here) or found.errors(self.findings if self.remaining is None else self.remaining) > 0


def run(target: Target, *, repair: bool, dry_run: bool) -> Outcome:
    if repair:
        require_networks(target, "check --repair")
    try:
        if target.datastore == "kubernetes":
            return _kubernetes(target, repair=repair, dry_run=dry_run)
        return _generic(target, repair=repair, dry_run=dry_run)
    except WhereaboutsError as exc:
        raise ToolError(exc.msg) from None


def _kubernetes(target: Target, *, repair: bool, dry_run: bool) -> Outcome:
    from whereabouts.tools import kubecheck

    client = target.kube()
    assert client is not None
    reading = kubecheck.read(target, client, target.notes.append)
    outcome = Outcome(kubecheck.findings(reading))
    if not reading.reading.pools and not reading.reading.observed.reservations:
        outcome.nothing_here = client.namespace  # nothing checked is no clean bill of health
        target.notes.append(
            f"no IPPools or OverlappingRangeIPReservations in namespace {client.namespace!r} (from "
            f"{target.pool_namespace_from or 'the kubeconfig'}): nothing was checked; are the pools in another "
            "namespace? give it with --pool-namespace NS"
        )
    if repair and any(f.fix for f in outcome.findings):
        outcome.repairs = kubecheck.repair(target, client, reading, dry_run=dry_run)
        if not dry_run:
            outcome.remaining = kubecheck.findings(kubecheck.read(target, client, target.notes.append))
    return outcome


def _generic(target: Target, *, repair: bool, dry_run: bool) -> Outcome:
    pods = Pods(target)
    outcome = Outcome(_generic_findings(target, pods))
    if repair and any(f.fix for f in outcome.findings):
        service = IPAMService(target.store())
        outcome.repairs = [_apply(service, pods, f, dry_run) for f in outcome.findings if f.fix and f.at]
        if not dry_run:
            outcome.remaining = _generic_findings(target, Pods(target))
    return outcome


def _generic_findings(target: Target, pods: Pods) -> list[Finding]:
    keys, odd = split_keys(target)
    pools = read_pools(target, keys)
    reserved = target.store().reserved(target.networks())
    listed = found.duplicates(pools) + found.outside(pools) + found.reservation_mismatches(pools, reserved)
    listed += found.unreadable(odd)
    return listed + (found.gone_pods(pools, pods.judge) if pods.known else [])


def _apply(service: IPAMService, pods: Pods, finding: Finding, dry_run: bool) -> str:
    """One fix, decided again on a fresh read by the service (and, for a gone pod, a fresh GET of it)."""
    assert finding.at is not None
    key, ip, owner = finding.at
    assert key is not None
    what = f"{finding.what} ({found.who(owner)})"
    if finding.kind == "gone-pod":
        judgement = pods.judge(owner.podref, fresh=True)
        if judgement.verdict is not Verdict.RELEASE:
            return f"kept {what}: on a fresh read, {judgement.reason}"
    if dry_run:
        return f"(dry run) would {finding.fix} {what}"
    if finding.kind == "gone-pod":
        done = service.release_entry(key, ip, owner)
    elif finding.kind == "missing-reservation":
        done = service.restore_reservation(key, ip, owner)
    else:
        done = service.release_reservation(key, ip, owner)
    verb = {"gone-pod": "released", "missing-reservation": "recreated the reservation of"}.get(finding.kind)
    return f"{verb or 'released the reservation of'} {what}" if done else f"skipped {what}: changed since read"


def report(outcome: Outcome, output: str) -> str:
    if output in ("json", "yaml"):
        remaining = None if outcome.remaining is None else [f.row() for f in _sorted(outcome.remaining)]
        doc = {"kind": "CheckReport", "items": [f.row() for f in _sorted(outcome.findings)],
               "repairs": outcome.repairs, "remaining": remaining}  # fmt: skip
        if output == "json":
            return json.dumps(doc, indent=2) + "\n"
        import yaml

        return str(yaml.safe_dump(doc, sort_keys=False))
    parts = [_table(outcome.findings, output, outcome.nothing_here)]
    if outcome.repairs:
        parts.append("repair:\n" + "".join(f"  {line}\n" for line in outcome.repairs))
    if outcome.remaining is not None:
        left = found.errors(outcome.remaining)
        parts.append(f"after repair: {left} problem(s) left\n" + (_table(outcome.remaining, output) if left else ""))
    return "\n".join(parts)


def _table(listed: list[Finding], output: str, nothing_here: str = "") -> str:
    if not listed and nothing_here:
        return f"Nothing checked: no pools in namespace {nothing_here!r} (see --pool-namespace).\n"
    if not listed:
        return "No problems found.\n"
    return render("CheckReport", [f.row() for f in _sorted(listed)], COLUMNS, output)


def _sorted(listed: list[Finding]) -> list[Finding]:
    return sorted(listed, key=lambda f: (f.severity != found.ERROR, f.kind, f.network, f.what))
