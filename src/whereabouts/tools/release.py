"""`release ADDRESS | --pod NS/NAME`: free addresses by hand, through the IPAM service's guarded write (the entry
and its reservation, only while the holder read is still the holder).

Refused, unless `--force`, while the holder's pod may be alive: a fresh GET must find it gone or finished
(Succeeded/Failed), as the reconciler requires. Without a Kubernetes API to ask, or for an entry that records no
pod, nothing proves it gone: `--force` is needed. A retained sticky address (its DEL is done, no attachment uses
it) is released without one: releasing it ends the stickiness. `--dry-run` says what would be done.
"""

from __future__ import annotations

from dataclasses import dataclass

from whereabouts.controller.leaks import Verdict
from whereabouts.errors import WhereaboutsError
from whereabouts.model import Owner, PoolKey
from whereabouts.ranges import Network, format_ip, parse_request
from whereabouts.service import IPAMService
from whereabouts.tools.errors import BadInput, ToolError
from whereabouts.tools.findings import who
from whereabouts.tools.reading import Pods, all_keys, read_pools
from whereabouts.tools.target import Target, require_networks


@dataclass(frozen=True)
class Candidate:
    key: PoolKey
    ip: int
    owner: Owner

    def describe(self) -> str:
        return f"{format_ip(self.key.version, self.ip)} in pool {self.key.name} ({who(self.owner)})"


def run(target: Target, address: str, pod: str, *, force: bool, dry_run: bool, network: str | None) -> list[str]:
    """What was (or would be) done, a line each; ToolError when refused (nothing written)."""
    require_networks(target, "release")
    candidates = _by_address(target, address, network) if address else _by_pod(target, pod, network)
    pods = Pods(target)
    verdicts = [(c, *_allowed(c.owner, pods, force)) for c in candidates]
    refused = [f"refused {c.describe()}: {why}" for c, allowed, why in verdicts if not allowed]
    if refused:
        raise ToolError("\n".join([*refused, "nothing released (--force releases it anyway)"]))
    if dry_run:
        return [f"(dry run) would release {c.describe()}: {why}" for c, _, why in verdicts]
    service = IPAMService(target.store())
    lines = []
    for candidate, _, why in verdicts:
        try:
            done = service.release_entry(candidate.key, candidate.ip, candidate.owner)
        except WhereaboutsError as exc:
            raise ToolError(f"{candidate.describe()}: {exc.msg}") from None
        lines.append(f"released {candidate.describe()}: {why}" if done else
                     f"left {candidate.describe()}: it changed since read (released or taken over)")  # fmt: skip
    return lines


def _by_address(target: Target, text: str, network: str | None) -> list[Candidate]:
    try:
        version, ip = parse_request(text)
    except ValueError:
        raise BadInput(f"invalid address {text!r}: expected an IPv4 or IPv6 address") from None
    keys = [k for k in all_keys(target, network) if Network.parse(k.cidr).contains(version, ip)]
    found = [Candidate(k, ip, pool[ip]) for k, pool in read_pools(target, keys).items() if ip in pool]
    if not found:
        raise ToolError(f"{format_ip(version, ip)} is held by nobody: nothing to release")
    networks = sorted({c.key.network for c in found})
    if len(networks) > 1:
        raise BadInput(f"{format_ip(version, ip)} is held in networks {', '.join(map(repr, networks))}: "
                       "say which with --network")  # fmt: skip
    return found


def _by_pod(target: Target, pod: str, network: str | None) -> list[Candidate]:
    namespace, _, name = pod.partition("/")
    if not namespace or not name or "/" in name:
        raise BadInput(f"invalid --pod {pod!r}: expected NAMESPACE/NAME")
    pools = read_pools(target, all_keys(target, network))
    found = [Candidate(k, ip, o) for k, pool in pools.items() for ip, o in sorted(pool.items()) if o.podref == pod]
    if not found:
        raise ToolError(f"pod {pod} holds no address: nothing to release")
    return found


def _allowed(owner: Owner, pods: Pods, force: bool) -> tuple[bool, str]:
    if owner.retained:
        return True, f"retained for {owner.sticky or 'no key'}: no attachment uses it"
    judgement = pods.judge(owner.podref, fresh=True)
    if judgement.verdict is Verdict.RELEASE:
        return True, judgement.reason
    if force:
        return True, f"forced ({judgement.reason})"
    return False, judgement.reason
