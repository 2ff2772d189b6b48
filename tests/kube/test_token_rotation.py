"""Bound service-account tokens expire: the kubelet rewrites the projected token file, install-cni rewrites the
kubeconfig, and the server refuses the old token. A client living for months (the controllers, the node
daemon's kept stores) follows the files: it reads them again when they change, at least every minute, and at
once on a 401, retrying that request once. On the real API server, with tokens from its TokenRequest API and
the old one revoked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_server import KubeAPIServer, rewrite_token_in_place, write_token
from whereabouts.config import KubernetesSettings
from whereabouts.errors import TryAgainLater
from whereabouts.kube import client as client_module
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import load_credentials
from whereabouts.node.runtime import Lease, StorePool

ACCOUNT = "whereabouts"  # the plugin's service account, bound in each test's namespace
CONTROLLER_ACCOUNT = "whereabouts-controller"


@pytest.fixture
def token_file(kube: KubeAPIServer, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A projected token file as the kubelet writes it, holding a fresh bound token: (file, token, secret)."""
    token, secret = kube.mint_token(ACCOUNT)
    path = tmp_path / "token"
    write_token(path, token)
    yield path, token, secret


def pools(client: KubeClient) -> list[dict]:
    return client.list(client.path("ippools"))


def test_a_rewritten_token_file_is_read_again_before_the_old_token_is_refused(
    kube: KubeAPIServer, kube_namespace: str, token_file: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, old, old_secret = token_file
    config = kube.kubeconfig(tmp_path / "kubeconfig", token_file=path, namespace=kube_namespace)
    client = KubeClient(load_credentials(str(config)))
    assert pools(client) == []
    new, _ = kube.mint_token(ACCOUNT)
    write_token(path, new)
    kube.revoke(old, old_secret)
    assert not kube.accepts(old)
    sent = client.requests
    client.checked_at = -1.0  # (as if a second passed since the last look at the file)
    assert pools(client) == []
    assert client.requests == sent + 1, "the new token was read before sending: nothing was refused"
    client.close()


def test_a_401_reads_the_token_file_at_once_and_retries_once(
    kube: KubeAPIServer, kube_namespace: str, token_file: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, old, old_secret = token_file
    config = kube.kubeconfig(tmp_path / "kubeconfig", token_file=path, namespace=kube_namespace)
    client = KubeClient(load_credentials(str(config)))
    assert pools(client) == []
    new, _ = kube.mint_token(ACCOUNT)
    rewrite_token_in_place(path, new)  # nothing tells the rewrite but the server's 401
    kube.revoke(old, old_secret)
    sent = client.requests
    assert pools(client) == []
    assert client.requests == sent + 2, "refused once, read the file again, sent again"
    path.write_text("not-a-valid-token")  # read again at the next 401: refused once more, no loop
    kube.revoke(new, _secret_of(kube, new))
    with pytest.raises(TryAgainLater, match="401"):
        pools(client)
    client.close()


def _secret_of(kube: KubeAPIServer, token: str) -> str:
    """The Secret a token minted by kube.mint_token is bound to, from its claims."""
    import base64

    claims = token.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return payload["kubernetes.io"]["secret"]["name"]


def test_the_token_file_is_read_again_every_minute_even_unchanged_in_appearance(
    kube: KubeAPIServer,
    kube_namespace: str,
    token_file: tuple[Path, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, old, old_secret = token_file
    config = kube.kubeconfig(tmp_path / "kubeconfig", token_file=path, namespace=kube_namespace)
    client = KubeClient(load_credentials(str(config)))
    assert pools(client) == []
    new, _ = kube.mint_token(ACCOUNT)
    rewrite_token_in_place(path, new)
    kube.revoke(old, old_secret)
    monkeypatch.setattr(client_module, "REREAD", 0.0)  # a minute has passed
    client.checked_at = -1.0
    sent = client.requests
    assert pools(client) == []
    assert client.requests == sent + 1, "read again before sending: nothing was refused"
    client.close()


def test_a_watch_opened_after_a_rotation_carries_the_new_token(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    """(As the controller's account: it may watch Nodes.)"""
    old, old_secret = kube.mint_token(CONTROLLER_ACCOUNT)
    path = tmp_path / "controller-token"
    write_token(path, old)
    config = kube.kubeconfig(tmp_path / "kubeconfig", token_file=path, namespace=kube_namespace)
    client = KubeClient(load_credentials(str(config)))
    _, version = client.list_with_version(client.resource("nodes"))
    new, _ = kube.mint_token(CONTROLLER_ACCOUNT)
    rewrite_token_in_place(path, new)  # only the watch's own 401 tells
    kube.revoke(old, old_secret)
    sent = client.requests
    events = [e for e in client.watch(client.resource("nodes"), version, timeout=1) if e.type != "BOOKMARK"]
    assert events == [] and client.requests == sent + 2  # refused, then watched its second to the end


def test_a_rewritten_kubeconfig_is_read_again(kube: KubeAPIServer, kube_namespace: str, tmp_path: Path) -> None:
    """install-cni writes the token into the kubeconfig and rewrites it when the token changes."""
    old, old_secret = kube.mint_token(ACCOUNT)
    config = kube.kubeconfig(tmp_path / "kubeconfig", token=old, namespace=kube_namespace, as_json=True)
    client = KubeClient(load_credentials(str(config)))
    assert pools(client) == []
    new, _ = kube.mint_token(ACCOUNT)
    staging = kube.kubeconfig(tmp_path / "kubeconfig.new", token=new, namespace=kube_namespace, as_json=True)
    staging.replace(config)
    kube.revoke(old, old_secret)
    assert pools(client) == []
    client.close()


def test_a_kubeconfig_caught_mid_rewrite_keeps_the_credentials_and_says_so(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    old, old_secret = kube.mint_token(ACCOUNT)
    config = kube.kubeconfig(tmp_path / "kubeconfig", token=old, namespace=kube_namespace, as_json=True)
    client = KubeClient(load_credentials(str(config)))
    config.write_text('{"clusters": [')  # half written
    client.checked_at = -1.0
    assert pools(client) == [], "the last good credentials are kept"
    kube.revoke(old, old_secret)
    with pytest.raises(TryAgainLater, match=r"401.*could not be read again.*not YAML or JSON"):
        pools(client)
    client.close()


def test_a_store_the_node_daemon_kept_follows_a_rotation_mid_call(
    kube: KubeAPIServer, kube_namespace: str, token_file: tuple[Path, str, str], tmp_path: Path
) -> None:
    """The file is rewritten and the old token refused while a call holds a kept store: the call's requests
    still succeed, and the next call gets a store opened afresh."""
    path, old, old_secret = token_file
    config = kube.kubeconfig(tmp_path / "kubeconfig", token_file=path, namespace=kube_namespace)
    pool, settings = StorePool(), KubernetesSettings(str(config), str(tmp_path / "locks"))
    with Lease(pool, settings) as store:
        assert store.check_ready() is None  # type: ignore[func-returns-value]
    with Lease(pool, settings) as store:
        kept = store
        new, _ = kube.mint_token(ACCOUNT)
        rewrite_token_in_place(path, new)
        kube.revoke(old, old_secret)
        store.check_ready()  # refused once, the file read again, sent again
    assert pool.open_count() == 1
    with Lease(pool, settings) as store:
        store.check_ready()
    assert store is kept, "the client follows its files: the kept store serves on"
    pool.close()


def test_a_kubeconfig_rewritten_to_name_another_namespace_is_followed_by_the_daemons_copy(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path, tmp_path: Path
) -> None:
    """install-cni (or an operator) rewrites the kubeconfig with another namespace while calls keep coming: the
    store opened afresh works in the new one, and so must the watch-fed copy its decisions and DELs read (it
    was kept by the settings alone: a DEL read the old namespace's reservations, answered success and freed
    nothing in the new one)."""
    from whereabouts.config import parse_ipam
    from whereabouts.model import Owner
    from whereabouts.service import IPAMService
    from whereabouts.store.kubernetes import KubernetesStore

    cfg = parse_ipam({"type": "whereabouts", "range": "10.63.0.0/24", "kubernetes": {
        "kubeconfig": str(plugin_kubeconfig), "lock_dir": str(tmp_path / "locks")}}, "net")  # fmt: skip
    pool = StorePool()
    try:
        with Lease(pool, cfg.store) as store:
            IPAMService(store).add(cfg, Owner("first", "eth0", "ns/first"))
        other = kube.namespace_for_plugin(f"{kube_namespace}-moved")
        kube.kubeconfig(plugin_kubeconfig, token=kube.plugin_token, namespace=other, as_json=True)
        with Lease(pool, cfg.store) as store:
            assert store.cache.namespace == other  # type: ignore[attr-defined]
        in_process = KubernetesStore(KubeClient(load_credentials(str(plugin_kubeconfig))))
        pod = Owner("in-process", "eth0", "ns/p")
        IPAMService(in_process).add(cfg, pod)  # the daemon down for a moment
        in_process.close()
        with Lease(pool, cfg.store) as store:
            IPAMService(store).delete(cfg, pod)  # the runtime's DEL, served by the daemon again
        held = {o["spec"]["containerid"] for o in kube.objects(other, "overlappingrangeipreservations").values()}
        assert "in-process" not in held
    finally:
        pool.close()
