"""A bound service-account token rotated under a running `whereabouts-node`: the kubelet rewrites the projected
token file, the server refuses the old token, and the daemon's kept stores serve on. On the real API server,
tokens from its TokenRequest API, the old one revoked."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_server import KubeAPIServer, rewrite_token_in_place, write_token
from support import netconf, run_cni, running_daemon, served_through


@pytest.mark.parametrize("rewrite", ["replaced", "in-place"])
def test_the_node_daemon_keeps_serving_across_a_token_rotation(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path, rewrite: str
) -> None:
    """`in-place`: a rewrite the file's stat does not show; the kept store learns of it from the 401."""
    old, old_secret = kube.mint_token("whereabouts")
    token = tmp_path / "token"
    write_token(token, old)
    config = kube.kubeconfig(tmp_path / "plugin.kubeconfig", token_file=token, namespace=kube_namespace)
    conf = netconf(tmp_path, kubernetes={"kubeconfig": str(config)}, range="10.95.0.0/24")
    sock, log = str(tmp_path / "run" / "plugin.sock"), tmp_path / "daemon.log"
    with running_daemon(sock, log=log), served_through(sock):
        for n in range(3):
            assert run_cni("ADD", conf, container_id=f"c{n}").returncode == 0
        new, _ = kube.mint_token("whereabouts")
        (write_token if rewrite == "replaced" else rewrite_token_in_place)(token, new)
        kube.revoke(old, old_secret)
        for n in range(3, 6):
            result = run_cni("ADD", conf, container_id=f"c{n}")
            assert result.returncode == 0, result.stdout
        for n in range(6):
            result = run_cni("DEL", conf, container_id=f"c{n}")
            assert result.returncode == 0, result.stdout
    pools = kube.objects(kube_namespace, "ippools").values()
    assert [pool["spec"].get("allocations") or {} for pool in pools] == [{}]
    assert "exit 11" not in log.read_text(), log.read_text()
