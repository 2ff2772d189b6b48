"""Sticky judging, pure (controller.sticky and the planner's use of it): which retained entries go and why,
recorded controllers parsed, the NADs' sticky settings read, a missed DEL planned as a retain."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from whereabouts.controller.leaks import observed_from, plan, plan_for_pod
from whereabouts.controller.sticky import (
    DEFAULT_RETENTION,
    Evidence,
    NetworkSticky,
    OwnerRef,
    judge_retained,
    sticky_networks,
)
from whereabouts.model import Owner

NOW = 1_800_000_000
STS = "apps/v1/StatefulSet/web/u1"
POD = "pod:ns/web-0/net1"
OFF = NetworkSticky(False, 1, ("n/a",))


def kept(owner: Owner, *, pod: bool = False, **evidence: Any) -> bool:
    return not judge_retained(owner, pod_exists=pod, evidence=Evidence(**evidence), now=NOW)[0]


def held(key: str, **fields: Any) -> Owner:
    return Owner("c1", "net1", "ns/web-0", "net-a", sticky=key, **fields)


def retained_owner(key: str, **fields: Any) -> Owner:
    return held(key, retained=NOW - 100, **fields)


CASES = {
    "pod: controller exists, retention not passed": (retained_owner(POD, expires=NOW + 1, controller=STS),
                                                     {"controllers": {STS: True}}, True),
    "pod: controller gone": (retained_owner(POD, expires=NOW + 1, controller=STS),
                             {"controllers": {STS: False}}, False),
    "pod: controller unknown (403, unknown kind)": (retained_owner(POD, expires=NOW + 1, controller=STS),
                                                    {"controllers": {STS: None}}, True),
    "pod: passed, pod gone": (retained_owner(POD, expires=NOW - 1), {}, False),
    "mac: not passed": (retained_owner("mac:02:00:00:00:00:01", expires=NOW + 1), {}, True),
    "mac: passed": (retained_owner("mac:02:00:00:00:00:01", expires=NOW), {}, False),
    "claim: exists": (retained_owner("claim:ns/vm"), {"claims": frozenset({"ns/vm"})}, True),
    "claim: gone": (retained_owner("claim:ns/vm"), {"claims": frozenset()}, False),
    "claim: CRD not installed": (retained_owner("claim:ns/vm"), {"claims": None}, True),
    "sticky off in its NADs": (retained_owner("claim:ns/vm"),
                               {"claims": frozenset({"ns/vm"}), "networks": {"net-a": OFF}}, False),
    "mac: passed, sticky still on in a NAD": (retained_owner("mac:02:00:00:00:00:01", expires=NOW - 1),
                                 {"networks": {"net-a": NetworkSticky(True, 1, ("n/a",))}}, False),
}  # fmt: skip


@pytest.mark.parametrize(("owner", "evidence", "expect_kept"), CASES.values(), ids=CASES.keys())
def test_retained_entry_judged_by_its_keys_owner(owner: Owner, evidence: dict[str, Any], expect_kept: bool) -> None:
    assert kept(owner, **evidence) is expect_kept


def test_passed_retention_keeps_a_pod_key_while_the_pod_exists() -> None:
    assert kept(retained_owner(POD, expires=NOW - 1), pod=True)


@pytest.mark.parametrize(
    ("text", "resource"),
    [
        (STS, ("apps", "v1", "statefulsets")),
        ("kubevirt.io/v1/VirtualMachineInstance/vm/u", ("kubevirt.io", "v1", "virtualmachineinstances")),
        ("v1/ReplicationController/rc/u", None),
    ],
    ids=["statefulset", "kubevirt vmi", "unknown kind"],
)
def test_recorded_controller_parsed(text: str, resource: tuple[str, str, str] | None) -> None:
    ref = OwnerRef.parse(text)
    assert ref is not None and ref.resource == resource and ref.uid == text.rsplit("/", 1)[1]


def test_malformed_controller_is_none() -> None:
    assert OwnerRef.parse("StatefulSet/web") is None and OwnerRef.parse("apps/v1/StatefulSet//u") is None


def nad(name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name}, "spec": {"config": json.dumps(config)}}


def test_nads_sticky_settings() -> None:
    ipam = {"type": "whereabouts", "range": "10.0.0.0/24"}
    found = sticky_networks([
        nad("plain", {"name": "a", "type": "macvlan", "ipam": ipam}),
        nad("sticky", {"name": "a", "type": "macvlan", "ipam": {**ipam, "sticky": "pod", "sticky_retention": "1h"}}),
        nad("kubevirt", {"name": "b", "plugins": [{"type": "ovn", "allowPersistentIPs": True, "ipam": ipam}]}),
        nad("off", {"name": "c", "type": "macvlan", "ipam": {**ipam, "sticky_retention": "bogus"}}),
        nad("broken", {"name": "d"}) | {"spec": {"config": "{"}},
        nad("deep", {"name": "d"}) | {"spec": {"config": "[" * 2000 + "]" * 2000}},  # past the decoder's depth
        nad("other ipam", {"name": "e", "ipam": {"type": "host-local"}}),
    ])  # fmt: skip
    assert found == {
        "a": NetworkSticky(True, DEFAULT_RETENTION, ("ns/plain", "ns/sticky")),
        "b": NetworkSticky(True, DEFAULT_RETENTION, ("ns/kubevirt",)),
        "c": NetworkSticky(False, DEFAULT_RETENTION, ("ns/off",)),
    }


@pytest.mark.parametrize("value", [False, 0, {}, [], "mack", "Pod"], ids=repr)
def test_a_nad_whose_sticky_the_plugin_refuses_proves_nothing(value: object) -> None:
    """Every ADD under it fails (code 7), so it says neither "on" nor "off": were it read as off, the reconciler
    would release the network's retained addresses once every NAD of the name carried such a value."""
    ipam = {"type": "whereabouts", "range": "10.0.0.0/24"}
    found = sticky_networks([
        nad("typo", {"name": "a", "type": "macvlan", "ipam": {**ipam, "sticky": value}}),
        nad("empty", {"name": "b", "type": "macvlan", "ipam": {**ipam, "sticky": ""}}),
    ])  # fmt: skip
    assert found == {"b": NetworkSticky(False, DEFAULT_RETENTION, ("ns/empty",))}


def entries(**owners: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "10.0.0.0-24"}, "spec": {"range": "10.0.0.0/24", "allocations": owners}}


def test_missed_del_of_a_sticky_entry_is_planned_as_a_retain_and_a_fixed_one_as_a_release() -> None:
    sticky = {"id": "c1", "podref": "ns/web-0", "ifname": "net1", "sticky": POD, "netconf": "net-a"}
    fixed = {"id": "c2", "podref": "ns/web-0", "ifname": "net2", "sticky": "pod:ns/web-0/net2", "fixed": True}
    observed = observed_from([entries(**{"1": sticky, "2": fixed})], [])
    planned = plan_for_pod(observed, "ns/web-0", STS)
    assert [(r.entry.address, r.controller, r.retention) for r in planned.retains] == [("10.0.0.1", STS, 86400)]
    assert [r.entry.address for r in planned.releases] == ["10.0.0.2"]
    off = Evidence(networks={"net-a": NetworkSticky(False, 60, ("ns/n",))})
    planned = plan(replace(observed_from([entries(**{"1": sticky})], []), sticky=off), now=NOW)
    assert planned.retains == [] and "sticky is off for network net-a" in planned.releases[0].reason
