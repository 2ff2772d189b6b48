"""`datastore: kubernetes` with no kubeconfig anywhere gets one answer, whoever serves the call.

The node daemon runs in the DaemonSet's pod, with a service account of its own; the plugin serving a call in
process runs on the host, with none. An empty kubeconfig must not mean "whatever account the serving process
has": then the same call succeeded through the daemon and failed (code 7) whenever the daemon was restarting.
Here the daemon gets a service account as a pod would (a mount namespace of its own showing a token and CA at
/var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT naming the real API server).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kube_server import KubeAPIServer
from support import netconf, run_cni, running_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace of the daemon's own needs root")


def pod_like_daemon(kube: KubeAPIServer, namespace: str, run_root: Path) -> tuple[str, ...]:
    """What to run the daemon under: its /run (so /var/run) is `run_root`, holding a service account."""
    account = run_root / "secrets" / "kubernetes.io" / "serviceaccount"
    account.mkdir(parents=True)
    (account / "token").write_text(kube.admin_token)
    (account / "namespace").write_text(namespace)
    assert kube.tls is not None
    shutil.copy(kube.tls.ca, account / "ca.crt")
    bind = 'mount --bind "$1" /run && shift && exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", bind, "bind", str(run_root),
            "env", "KUBERNETES_SERVICE_HOST=127.0.0.1", f"KUBERNETES_SERVICE_PORT={kube.port}")  # fmt: skip


def test_no_kubeconfig_is_refused_alike_in_process_and_by_the_daemon(
    kube: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    conf = netconf(tmp_path, range="10.98.0.0/29", datastore="kubernetes")
    conf["ipam"].pop("kubernetes", None)
    args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1"
    sock = str(tmp_path / "sock" / "plugin.sock")
    with running_daemon(sock, wrap=pod_like_daemon(kube, kube_namespace, tmp_path / "run-root")):
        through = run_cni("ADD", conf, cni_args=args, env={"WHEREABOUTS_SOCKET": sock})
    in_process = run_cni("ADD", conf, cni_args=args, env={"WHEREABOUTS_SOCKET": ""})
    assert "serving the call in process" not in through.stderr, through.stderr
    assert (through.returncode, through.json) == (in_process.returncode, in_process.json)
    assert in_process.returncode == 1 and in_process.json["code"] == 7
    assert in_process.json["msg"].startswith("invalid kubernetes.kubeconfig ''"), in_process.json
    assert kube.objects(kube_namespace, "ippools") == {}, "nothing written"
