"""The node daemon decodes each new version of an IPPool from the version before (store.kubecache._Decoded):
only the entries that changed are decoded and filed again, and what it gets is what decoding the version
whole gives, for any sequence of versions, odd offsets included."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kube_server import KubeAPIServer
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.kube.resources import IPPOOLS

OFFSETS = st.sampled_from(["1", "2", "3", "7", "007", "12", "x", "40"])
ENTRIES = st.fixed_dictionaries(
    {"id": st.sampled_from(["c1", "c2"]), "podref": st.sampled_from(["ns/a", "ns/b", ""]), "ifname": st.just("net1")},
    optional={"sticky": st.sampled_from(["pod:ns/a/net1", "mac:aa"]), "retained": st.sampled_from([0, 5])},
)
ODD = st.none() | st.just("text") | st.builds(dict, id=st.just("c3"), podref=st.just([]))  # no schema lets these in
VERSIONS = st.lists(st.dictionaries(OFFSETS, ENTRIES | ODD, max_size=6), min_size=1, max_size=6)


def ippool(version: int, allocations: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "10.9.0.0-24", "resourceVersion": str(version)},
            "spec": {"range": "10.9.0.0/24", "allocations": allocations}}  # fmt: skip


def filing(decoded: Any) -> tuple[object, ...]:
    entries = decoded.entries
    filed = None if entries is None else (entries.entries, entries.attachments, entries.sticky, entries.pods,
                                          entries.bare, entries.retained)  # fmt: skip
    return decoded.state, filed


@settings(max_examples=200)
@given(versions=VERSIONS)
def test_any_sequence_of_versions_decodes_from_the_last_as_it_decodes_whole(versions: list[dict[str, Any]]) -> None:
    from whereabouts.model import PoolKey
    from whereabouts.store.kubecache import _Decoded

    key = PoolKey("", "10.9.0.0/24")
    last = None
    for n, allocations in enumerate(versions, 1):
        obj = ippool(n, allocations)
        try:
            whole = _Decoded.of(key, obj, None)
        except Exception as exc:  # a pool no decoding reads: from the last version it fails the same way, and
            with pytest.raises(type(exc)):  # the daemon keeps the last version it decoded
                _Decoded.of(key, obj, last)
            continue
        last = _Decoded.of(key, obj, last)
        assert filing(last) == filing(whole)


def test_a_new_version_of_a_big_pool_decodes_only_the_entries_that_changed(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one entry of a 2,000-entry IPPool changes, the daemon's copy decodes that entry, not the pool (it
    decoded every entry of each version: 40-55 ms per version at 10,000, on the first call after each mirror
    patch), and the decision sees the change."""
    from whereabouts.config import KubernetesSettings
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.store.kubecache import KubeCache

    key = PoolKey("", "10.96.0.0/16")
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    pool = resources.new_pool(key, kube_namespace)
    pool["spec"]["allocations"] = {str(i): resources.entry(Owner(f"c{i}", "net1", f"ns/p{i}")) for i in range(1, 2001)}
    client.create(client.path(IPPOOLS), pool)
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig)))
    try:
        assert cache.ready()
        base = int.from_bytes(bytes([10, 96, 0, 0]), "big")
        assert len(cache.pool_state(key).allocations) == 2000
        client.patch(client.path(IPPOOLS, key.name), resources.entry_patch(2001, Owner("new", "net1", "ns/new"), None))
        deadline = time.monotonic() + 10
        while "2001" not in resources.pool_entries(cache.pool_object(key) or {}) and time.monotonic() < deadline:
            time.sleep(0.05)
        decoded: list[object] = []
        entry_owner = resources.entry_owner

        def counting(written: Any) -> Owner:
            decoded.append(written)
            return entry_owner(written)

        monkeypatch.setattr(resources, "entry_owner", counting)
        state = cache.pool_state(key)
        assert state.allocations[base + 2001].container_id == "new"
        assert len(state.allocations) == 2001
        assert len(decoded) == 1
    finally:
        cache.close()


def test_keys_that_are_no_offset_are_skipped_as_the_go_plugin_skips_them() -> None:
    """The Go plugin reads an offset with strconv.ParseInt (base 10, 64 bits) and skips, with a log line, any
    key it cannot read; `int()` reads more (spaces, `_`, other scripts' digits) and raised on the rest."""
    from whereabouts.kube.resources import decode_pool
    from whereabouts.model import PoolKey

    entry = {"id": "c", "podref": "ns/p", "ifname": "net1"}
    keys = ["1", "+7", "007", "x1", " 5", "5_0", "\u0665", "-1", "3.0", "", "9" * 5000]  # (int() refuses 5,000)
    state = decode_pool(PoolKey("", "10.9.0.0/24"), ippool(1, dict.fromkeys(keys, entry)))
    assert sorted(ip - 0x0A090000 for ip in state.allocations) == [1, 7]
    wide = {"metadata": {"name": "2001---32", "resourceVersion": "1"},
            "spec": {"range": "2001::/32", "allocations": {str(1 << 64): entry}}}  # fmt: skip
    assert len(decode_pool(PoolKey("", "2001::/32"), wide).allocations) == 1  # (past 64 bits: this plugin's own)


@pytest.mark.parametrize("daemon", [False, True], ids=["in-process", "daemon-copy"])
def test_an_ippool_key_that_is_no_offset_does_not_stop_the_range(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, daemon: bool
) -> None:
    """One key no plugin writes (a hand edit, a tool's bug) made every ADD and DEL of the range an internal
    error (ValueError), in process and through the daemon, while the Go plugin beside us went on."""
    from whereabouts.config import KubernetesSettings, parse_ipam
    from whereabouts.kube import resources
    from whereabouts.model import Owner, PoolKey
    from whereabouts.service import IPAMService
    from whereabouts.store.kubecache import KubeCache
    from whereabouts.store.kubernetes import KubernetesStore

    cfg = parse_ipam({"type": "whereabouts", "range": "10.61.0.0/24",
                      "kubernetes": {"kubeconfig": str(plugin_kubeconfig)}}, "net")  # fmt: skip
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    pool = resources.new_pool(PoolKey("", "10.61.0.0/24"), kube_namespace)
    pool["spec"]["allocations"] = {"1": {"id": "go-ctr", "podref": "ns/p", "ifname": "eth0"},
                                   "x1": {"id": "junk", "podref": "ns/q", "ifname": "eth0"}}  # fmt: skip
    client.create(client.path(IPPOOLS), pool)
    store = KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))))
    cache = KubeCache(KubernetesSettings(kubeconfig=str(plugin_kubeconfig))) if daemon else None
    try:
        if cache is not None:
            assert cache.ready()
            store.cache = cache
        owner = Owner("mine", "eth0", "ns/mine")
        assert [a.address for a in IPAMService(store).add(cfg, owner)] == ["10.61.0.2/24"]  # .1: the Go plugin's
        IPAMService(store).delete(cfg, owner)
    finally:
        if cache is not None:
            cache.close()
        store.close()
        client.close()
