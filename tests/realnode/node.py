"""A real single-node Kubernetes for the tests (../shared/REALNODE.md): real pods made by a real kubelet.

etcd + kube-apiserver (tests/kube_server.py), kube-controller-manager, kube-scheduler, containerd (started by
hand, its root, state and socket in the node's temp dir) and a kubelet, all on free loopback ports, stopped by
PID. Images come from docker-archive tars (scripts/node-tools.sh) imported into containerd; pods use
`imagePullPolicy: Never`. The node's CNI bin and conf dirs are its own (in its temp dir, or host paths given as
`cni_dirs`: the host snapshot removes them if it made them): containerd reads new CNI configs without a
restart, and the node turns Ready once one exists.

    with RealNode(tmp, tools, cni_config=conf, images=[PAUSE_TAR, BUSYBOX_TAR]) as node:
        node.apply(manifest); node.wait_pods("default", "app=x", 3)

One node per machine at a time (the kubelet owns the host's kubepods cgroups): a lock on the cache dir says so.
Teardown follows REALNODE.md's order and runs whatever state bring-up reached (host.py undoes the host side).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from etcd_server import free_port
from kube_server import REPO, KubeAPIServer
from realnode.configs import containerd_config, kubelet_config
from realnode.host import HostSnapshot, unmount_under
from realnode.processes import healthz, kill_leftovers
from support import stop_process

CACHE = Path(os.environ.get("WHEREABOUTS_CACHE", "/var/cache/whereabouts-py"))
IMAGES = CACHE / "images"
PAUSE_TAR, BUSYBOX_TAR = IMAGES / "pause-3.2.tar", IMAGES / "busybox.tar"
REFERENCE_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
NAMESPACE = "k8s.io"  # containerd's namespace for the CRI


def node_tools() -> Path:
    """The Kubernetes binaries' dir, after making sure the node's packages and images are there (both cached)."""
    out = subprocess.run(["bash", str(REPO / "scripts/kube-tools.sh"), "--node"], check=True, capture_output=True,
                         text=True)  # fmt: skip
    subprocess.run(["bash", str(REPO / "scripts/node-tools.sh")], check=True, capture_output=True)
    return Path(out.stdout.strip().splitlines()[-1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy; TimeoutError naming `what` (and the last error) if not."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if result := probe():
                return result
        except (OSError, RuntimeError, ValueError) as error:
            last = error
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout:.0f} s" + (f" (last error: {last})" if last else ""))


@dataclass
class RealNode:
    base: Path
    tools: Path
    cni_config: dict[str, Any] | None = None  # written before containerd starts, so the node comes up Ready
    images: Sequence[Path] = (PAUSE_TAR,)
    cni_dirs: tuple[Path, Path] | None = None  # (bin, conf) on the host; default: two dirs in `base`
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    apiserver: KubeAPIServer | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    bridges: set[str] = field(default_factory=set)  # from the CNI configs written, deleted at teardown
    timings: dict[str, float] = field(default_factory=dict)
    snapshot: HostSnapshot | None = None
    _lock: int | None = None
    active: ClassVar[RealNode | None] = None  # the node this process runs (there is at most one)

    # --- what tests use -------------------------------------------------------------------------------------
    @property
    def cni_bin_dir(self) -> Path:
        return self.cni_dirs[0] if self.cni_dirs else self.base / "cni" / "bin"

    @property
    def cni_conf_dir(self) -> Path:
        return self.cni_dirs[1] if self.cni_dirs else self.base / "cni" / "net.d"

    @property
    def containerd_socket(self) -> Path:
        return self.base / "containerd" / "containerd.sock"

    @property
    def url(self) -> str:
        return self._api.url

    @property
    def port(self) -> int:
        return self._api.port

    @property
    def ca(self) -> Path:
        assert self._api.tls is not None
        return self._api.tls.ca

    @property
    def admin_token(self) -> str:
        return self._api.admin_token

    @property
    def admin_kubeconfig(self) -> Path:
        return self.base / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def _api(self) -> KubeAPIServer:
        assert self.apiserver is not None, "the node's apiserver is not up"
        return self.apiserver

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        """kubectl as the admin (system:masters); RuntimeError with kubectl's stderr when it fails."""
        cmd = [str(self.tools / "kubectl"), f"--kubeconfig={self.admin_kubeconfig}", *args]
        out = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def apply(self, manifest: dict[str, Any] | str) -> str:
        """kubectl apply of one object (a dict) or of YAML/JSON text."""
        return self.kubectl("apply", "-f", "-", input=manifest if isinstance(manifest, str) else json.dumps(manifest))

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args))

    def ctr(self, *args: str, timeout: float = 120) -> str:
        cmd = ["ctr", "-a", str(self.containerd_socket), "-n", NAMESPACE, *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def import_image(self, tar: Path) -> None:
        started = time.monotonic()
        self.ctr("image", "import", str(tar))
        self.timings[f"import {tar.name}"] = time.monotonic() - started

    def kubeconfig(self, path: Path, *, token: str, namespace: str = "kube-system") -> Path:
        return self._api.kubeconfig(path, token=token, namespace=namespace)

    def install_cni_plugin(self, source: Path, name: str | None = None) -> Path:
        """Copy an executable into the node's CNI bin dir (beside, then rename: never a half-written plugin)."""
        target = self.cni_bin_dir / (name or source.name)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copy2(source, partial)
        os.replace(partial, target)
        return target

    def write_cni_config(self, conf: dict[str, Any], filename: str | None = None) -> Path:
        """Make `conf` (a conflist, or a single-plugin config) the node's only CNI config; containerd reloads it."""
        self.bridges |= {p.get("bridge", "cni0") for p in conf.get("plugins", [conf]) if p.get("type") == "bridge"}
        suffix = ".conflist" if "plugins" in conf else ".conf"
        target = self.cni_conf_dir / (filename or f"10-{conf.get('name', 'test')}{suffix}")
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        partial = self.cni_conf_dir / f".{target.name}.partial"  # not a .conf: containerd ignores it
        partial.write_text(json.dumps(conf, indent=2))
        os.replace(partial, target)
        for other in self.cni_conf_dir.iterdir():
            if other != target and other.suffix in (".conf", ".conflist", ".json"):
                other.unlink()
        return target

    def pods(self, namespace: str = "default", selector: str = "") -> list[dict[str, Any]]:
        return self.get("pods", "-n", namespace, *(["-l", selector] if selector else []))["items"]

    def wait_node_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            node = self.get("node", self.node_name)
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

        self._wait("node Ready", ready, timeout)

    def wait_pods(self, namespace: str, selector: str, count: int, timeout: float = 180) -> list[dict[str, Any]]:
        """Wait until exactly `count` pods match and all are Running and Ready; returns them."""

        def running() -> list[dict[str, Any]] | None:
            pods = [p for p in self.pods(namespace, selector) if not p["metadata"].get("deletionTimestamp")]
            ok = len(pods) == count and all(pod_ready(p) for p in pods)
            return pods if ok else None

        return self._wait(f"{count} Running pods {selector} in {namespace}", running, timeout)

    def wait_pods_gone(self, namespace: str, selector: str = "", timeout: float = 120) -> None:
        self._wait(f"no pods {selector} in {namespace}", lambda: not self.pods(namespace, selector), timeout)

    def tasks(self) -> list[str]:
        """The containerd tasks (running sandboxes and containers) of the node."""
        return self.ctr("tasks", "ls", "-q").split()

    def wait_no_tasks(self, timeout: float = 120) -> None:
        """Wait until containerd runs nothing: every sandbox stopped, so every CNI DEL has run."""
        self._wait("containerd to have no tasks", lambda: not self.tasks(), timeout)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait(self, what: str, probe: Callable[[], Any], timeout: float) -> Any:
        try:
            return wait_for(what, probe, timeout)
        except TimeoutError as error:
            states = {name: proc.poll() for name, proc in self.procs.items()}
            raise TimeoutError(f"{error}; exit codes {states}; kubelet log:\n{self.log_tail('kubelet')}") from None

    # --- bring-up -------------------------------------------------------------------------------------------
    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RealNode:
        started = time.monotonic()
        self._take_lock()
        RealNode.active, self.snapshot = self, HostSnapshot.take()
        try:
            self._start_control_plane()
            self._start_containerd()
            for tar in self.images:
                self.import_image(tar)
            self._start_kubelet()
            if self.cni_config is not None:
                self.wait_node_ready()
            self._wait("the default service account's token", self._default_token_ready, 120)
        except BaseException as error:
            try:
                self.stop()
            except RuntimeError as teardown:
                error.add_note(str(teardown))
            raise
        self.timings["bring-up"] = time.monotonic() - started
        return self

    def _take_lock(self) -> None:
        CACHE.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(CACHE, os.O_RDONLY)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = None
            raise RuntimeError("another real node runs on this machine (it holds the lock on the cache dir)") from None

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock, RealNode.active = None, None

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        # its own session: a ^C reaches pytest only, whose teardown then stops the node in order
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        return self.procs[name]

    def _start_control_plane(self) -> None:
        self.apiserver = KubeAPIServer(self.base / "control", self.tools)  # held first: stopped even if start fails
        self.apiserver.start()
        self.kubeconfig(self.admin_kubeconfig, token=self.admin_token, namespace="default")
        assert self.apiserver.tls is not None
        common = [f"--kubeconfig={self.admin_kubeconfig}", f"--authentication-kubeconfig={self.admin_kubeconfig}",
                  f"--authorization-kubeconfig={self.admin_kubeconfig}", "--bind-address=127.0.0.1", "--port=0",
                  "--leader-elect=false", "--v=1"]  # fmt: skip
        ports = {"kube-controller-manager": free_port(), "kube-scheduler": free_port()}
        self._spawn("kube-controller-manager", [
            str(self.tools / "kube-controller-manager"), *common, f"--secure-port={ports['kube-controller-manager']}",
            f"--cert-dir={self.base / 'control' / 'kcm-certs'}",
            f"--flex-volume-plugin-dir={self.base / 'control' / 'flexvolume'}",
            f"--service-account-private-key-file={self.base / 'control' / 'sa.key'}",
            f"--root-ca-file={self.apiserver.tls.ca}", "--use-service-account-credentials",
            "--controllers=*,-nodeipam",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [str(self.tools / "kube-scheduler"), *common,
                                       f"--secure-port={ports['kube-scheduler']}",
                                       f"--cert-dir={self.base / 'control' / 'scheduler-certs'}"])  # fmt: skip
        for name, port in ports.items():
            self._wait(f"{name} healthy", lambda port=port: healthz(port), 60)

    def _start_containerd(self) -> None:
        shutil.copytree(REFERENCE_PLUGINS, self.cni_bin_dir, dirs_exist_ok=True)
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        if self.cni_config is not None:
            self.write_cni_config(self.cni_config)
        directory = self.containerd_socket.parent
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "config.toml"
        config.write_text(containerd_config(directory, cni_bin_dir=self.cni_bin_dir, cni_conf_dir=self.cni_conf_dir))
        self._spawn("containerd", ["containerd", "--config", str(config)])
        self._wait("containerd serving", lambda: " cri " in self.ctr("plugins", "ls"), 30)

    def _start_kubelet(self) -> None:
        directory = self.base / "kubelet"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "config.json"
        config.write_text(json.dumps(kubelet_config(directory, port=free_port(), healthz_port=free_port()), indent=2))
        subprocess.run(["mount", "--make-rshared", "/"], check=True)  # mount propagation for the pods' volumes
        self._spawn("kubelet", [
            str(self.tools / "kubelet"), f"--kubeconfig={self.admin_kubeconfig}", f"--config={config}",
            "--container-runtime=remote", f"--container-runtime-endpoint=unix://{self.containerd_socket}",
            f"--root-dir={directory}", f"--cert-dir={directory / 'pki'}", "--v=2",
        ])  # fmt: skip
        self._wait("the node registered", lambda: self.get("nodes")["items"], 60)

    def _default_token_ready(self) -> bool:
        """The controller-manager made the default service account and its token (pods need both)."""
        account = self.get("serviceaccount", "default", "-n", "default")
        return bool(account.get("secrets"))

    # --- teardown -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything in REALNODE.md's order, carrying on past errors; RuntimeError listing what is left."""
        if self.snapshot is None:
            self._release_lock()
            return
        problems: list[str] = []

        def step(what: str, action: Callable[[], Any]) -> None:
            try:
                action()
            except Exception as error:
                problems.append(f"{what}: {error}")

        if self._alive("kubelet") and self._alive("containerd"):
            step("deleting the workloads", self._delete_workloads)
        if self._alive("containerd"):
            step("stopping containerd's tasks", self._stop_tasks)
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager", "containerd"):
            step(f"stopping {name}", lambda name=name: stop_process(self.procs.get(name), 20))
        step("stopping the shims", self._kill_shims)
        if self.apiserver is not None:
            step("stopping the apiserver", self.apiserver.stop)
        problems += self.snapshot.restore(base=self.base, bridges=self.bridges)
        if not unmount_under(self.base):  # the snapshots and images: the logs stay for a look afterwards
            shutil.rmtree(self.containerd_socket.parent / "root", ignore_errors=True)
        self.snapshot = None
        self._release_lock()
        if problems:
            raise RuntimeError("real node teardown: " + "; ".join(problems))

    def _alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def _delete_workloads(self) -> None:
        """Pods first (controllers orphan them, grace 1 s), DaemonSet pods last: a CNI DaemonSet serves the DELs."""
        self.kubectl("delete", "deployments,replicasets,statefulsets,jobs,cronjobs", "--all", "-A", "--cascade=orphan")
        self._delete_pods(lambda pod: not owned_by_daemonset(pod))
        self.kubectl("delete", "daemonsets", "--all", "-A", "--cascade=orphan")
        self._delete_pods(lambda pod: True)

    def _delete_pods(self, which: Callable[[dict[str, Any]], bool]) -> None:
        def chosen() -> list[dict[str, Any]]:
            return [pod for pod in self.get("pods", "-A")["items"] if which(pod)]

        for pod in chosen():
            meta = pod["metadata"]
            self.kubectl("delete", "pod", "-n", meta["namespace"], meta["name"], "--grace-period=1", "--wait=false")
        self._wait("the pods deleted", lambda: not chosen(), 120)

    def _stop_tasks(self) -> None:
        """Wait for the kubelet's stops; kill what is left (its CNI DEL then never runs: host.py cleans up)."""
        try:
            self.wait_no_tasks(60 if self._alive("kubelet") else 1)
        except TimeoutError:
            left = self.tasks()
            for task in left:
                subprocess.run(["ctr", "-a", str(self.containerd_socket), "-n", NAMESPACE, "tasks", "kill", "-s",
                                "SIGKILL", task], capture_output=True)  # fmt: skip
            wait_for("killed tasks to exit", lambda: not self._running_tasks(), 20)
            for task in left:
                subprocess.run(["ctr", "-a", str(self.containerd_socket), "-n", NAMESPACE, "tasks", "delete", task],
                               capture_output=True)  # fmt: skip
            raise RuntimeError(f"tasks still running at teardown, killed: {left}") from None

    def _running_tasks(self) -> list[str]:
        lines = self.ctr("tasks", "ls").splitlines()[1:]
        return [line.split()[0] for line in lines if "RUNNING" in line]

    def _kill_shims(self) -> None:
        left = kill_leftovers(self.containerd_socket.parent / "state", self.containerd_socket)
        if left:
            raise RuntimeError(f"killed what containerd left running: {left}")


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True"


def owned_by_daemonset(pod: dict[str, Any]) -> bool:
    return any(ref.get("kind") == "DaemonSet" for ref in pod["metadata"].get("ownerReferences", []))
