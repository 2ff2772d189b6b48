"""`whereabouts-install-cni`: what the DaemonSet runs on every node.

1. Installs the self-contained plugin (the bundle the image carries, see scripts/make_bundle.py) into the
   host's CNI bin dir, atomically: the bundle is copied beside into a staging directory of this writer's
   own, its interpreter pointed at where it lands (patchelf), synced, marked complete and renamed to
   `whereabouts.d/<hash>`; then the `whereabouts` launcher is written beside and renamed over the old one.
   One install-cni at a time does this on a node (a lock in `whereabouts.d/`), and a bundle found there
   without its mark is replaced, never trusted. When the bundle carries the
   compiled relay (whereabouts.node.relay), the launcher goes to `whereabouts-python` instead and the relay,
   written last, becomes `whereabouts`: it hands calls to the node daemon without starting Python and execs
   `whereabouts-python` beside it for a call served in process. A CNI call at that moment runs the old
   plugin or the new one, never a half-written file; the previous bundle is kept for calls that started
   just before.
2. Writes into the host's `<cni conf dir>/whereabouts.d/`: the flat file `whereabouts.conf`, a kubeconfig
   built from this pod's service-account token and CA (`KUBERNETES_SERVICE_HOST`/`_PORT` for the server),
   and `nodename`. Each is written beside and renamed, and only when its content changes; a
   `whereabouts.d` that is a symbolic link is refused.
3. Then, unless `--once`: re-reads the token and CA every few seconds and rewrites the kubeconfig when
   either changed (token rotation); runs pod cleanup for its node; and serves the plugin's calls as the
   node daemon (warm imports, kept connections, group commit; the plugin serves a call itself whenever the
   daemon is not there). `/healthz` on 127.0.0.1 tells the kubelet whether those loops are alive.
4. Serves the metrics of pod cleanup and of the node daemon (docs/metrics.md) at /metrics on the health
   endpoint and, for Prometheus, on --metrics-address:--metrics-port (the DaemonSet gives the pod's IP, which
   is the node's on the host network, and the port it declares as `metrics`).

The DaemonSet mounts the host's directories at the same paths they have on the host (CNI bin and conf
dirs, /var/lib/cni/whereabouts, /run/whereabouts), so the paths written here mean the same thing on the
host and in the container.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from whereabouts.cni.main import SOCKET_ENV, STANDIN_ENV
from whereabouts.config import DEFAULT_LOCAL_DATA_DIR, FLAT_FILE_ENV, FLAT_FILE_NAME
from whereabouts.controller.context import Context, log_line
from whereabouts.controller.health import Backoff, Health, serve
from whereabouts.controller.metrics import Registry
from whereabouts.errors import WhereaboutsError
from whereabouts.kube.credentials import DEFAULT_NAMESPACE, SERVICE_ACCOUNT_DIR, load_credentials
from whereabouts.node.launcher import script
from whereabouts.node.relay import PYTHON_PLUGIN, RELAY, configured

TYPE_CHECKING = False
if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from whereabouts.node.daemon import NodeDaemon

PYTHON = "python3.11"
STEADY = 60.0  # seconds pod cleanup ran before failing: its retries start again from the shortest wait
LOADER = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
MARKER = "INSTALLED"  # written last into a bundle's copy, once its files are on disk: see _install_tree
LOCK = ".lock"  # in the bundle home: one install-cni at a time installs there
STALE = 600.0  # seconds untouched after which a staging name is a dead writer's leftover, not a live one's
SWITCHES = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def install_bundle(
    bundle: Path,
    bin_dir: Path,
    log: Callable[[str], None] = log_line,
    *,
    flat_file: Path | None = None,
    socket_path: str | None = None,
    stand_in: int = 0,
) -> Path:
    """Put the bundle and the launcher into `bin_dir`; returns the bundle's directory there. The launcher
    tells the plugin where `flat_file` is (FLAT_FILE_ENV): a conf dir of any name needs no key in the configs;
    and where the node daemon listens (`socket_path`; "": no daemon, the plugin never tries one), and for how
    many seconds without a call a stand-in daemon serves while the node's is not there (`stand_in`; 0: none,
    calls are then served in process; whereabouts.cni.main)."""
    version = (bundle / "VERSION").read_text().strip()
    home = bin_dir / "whereabouts.d"
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / LOCK):
        target = _install_tree(bundle, home, version, log)
        plugin, python_plugin, relay = bin_dir / "whereabouts", bin_dir / PYTHON_PLUGIN, target / "bin" / RELAY
        previous = _launcher_version(python_plugin) or _launcher_version(plugin)
        note = f"The whereabouts CNI plugin (bundle {version}), installed by whereabouts-install-cni. Do not edit."
        environ = {FLAT_FILE_ENV: str(flat_file)} if flat_file else {}
        if socket_path is not None:
            environ[SOCKET_ENV] = socket_path
        if socket_path and stand_in > 0:
            environ[STANDIN_ENV] = str(stand_in)
        launcher = script("whereabouts", python=f"{target / 'bin' / PYTHON} -IS", note=note, environ=environ or None)
        if relay.exists() or python_plugin.exists():  # also for a relay still running from the last install
            _write_atomically(python_plugin, launcher, mode=0o755, log=log)
        if relay.exists():
            program = configured(relay.read_bytes(), note=note, environ=environ or None)
            _write_atomically(plugin, program, mode=0o755, log=log)
        else:
            _write_atomically(plugin, launcher, mode=0o755, log=log)
        _remove_stale([*home.glob(".*.tmp"), *staging_names(plugin), *staging_names(python_plugin)], log)
        for name in sorted(n for n in os.listdir(home) if not n.startswith(".") and n not in (version, previous)):
            try:
                _discard(home, name)
            except OSError as exc:  # the new bundle is in place all the same
                log(f"install-cni: cannot remove old bundle {name}: {exc}")
            else:
                log(f"install-cni: removed old bundle {name}")
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Held by one install-cni at a time (two DaemonSets on a node, a second copy): none installs a bundle,
    points the launchers or removes old bundles while another is doing so."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _install_tree(bundle: Path, home: Path, version: str, log: Callable[[str], None]) -> Path:
    """`home/version`, the bundle's copy, made unless a complete one is there. The copy is staged under a name
    of this writer's own, synced, marked complete (MARKER, last) and renamed into place: one found without
    its mark (half-made by an install-cni that died, or published by an older one racing another) is
    replaced, never trusted: every CNI call on the node would fail for as long as it stayed."""
    target = home / version
    if (target / MARKER).is_file():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=home))
    try:
        shutil.copytree(bundle, staging, symlinks=True, dirs_exist_ok=True)  # its modes too, the top's included
        _relocate(staging, target)
        _sync_tree(staging)
        _write_atomically(staging / MARKER, version + "\n", log=lambda _: None)
        _sync(staging)
        if os.path.lexists(target):
            _discard(home, version)
            log(f"install-cni: replaced the incomplete bundle {target}")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _sync(home)
    log(f"install-cni: installed bundle {version} in {target}")
    return target


def _sync_tree(root: Path) -> None:
    """Every file and directory under `root` on disk, so that the mark written after them tells the truth even
    after a power cut."""
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                _sync(path)
        _sync(directory)


def _sync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(home: Path, name: str) -> None:
    """Remove `home/name`, renamed aside first: an install-cni dying meanwhile leaves a staging leftover (removed
    by a later run), never part of a bundle under the bundle's name."""
    aside = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=home))
    os.rename(home / name, aside / name)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale(paths: Iterable[Path], log: Callable[[str], None]) -> None:
    """Remove the staging names among `paths` untouched for STALE seconds: left by an install-cni that died.
    A younger one may be a live writer's (an install-cni older than this one takes no lock)."""
    now = time.time()
    for path in paths:
        try:
            if now - path.lstat().st_ctime < STALE:
                continue
        except FileNotFoundError:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log(f"install-cni: removed {path}, left by an install-cni that died")


def staging_names(path: Path) -> list[Path]:
    """The staging files of `path` beside it (see _write_atomically): each writer's own name."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def refuse_link(directory: Path) -> None:
    """Exit if `directory` is a symbolic link: install-cni would write its files (a token among them) wherever
    it points, and the uninstall would delete there."""
    if directory.is_symlink():
        raise SystemExit(f"install-cni: {directory} is a symbolic link (to {os.readlink(directory)}): refusing "
                         "to write or remove anything through it; make it a directory, or remove it")  # fmt: skip


def _relocate(staging: Path, final: Path) -> None:
    """Point the interpreter at the bundle's own loader and libraries, at the path it will have."""
    cmd = ["patchelf", "--set-interpreter", str(final / LOADER), "--force-rpath", "--set-rpath",
           "$ORIGIN/../lib/x86_64-linux-gnu", str(staging / "bin" / PYTHON)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)


def _launcher_version(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            first = handle.readline(4096).decode()
    except (OSError, UnicodeDecodeError):
        return ""
    words = first[2:].split() if first.startswith("#!") else []
    parts = Path(words[0]).parts if words else ()
    return parts[-3] if len(parts) >= 3 and "whereabouts.d" in parts else ""


def _write_atomically(
    path: Path, text: str | bytes, *, mode: int = 0o644, log: Callable[[str], None] = log_line
) -> bool:
    """Write `text` to `path` by renaming a finished file over it; False when it already says that."""
    data = text.encode() if isinstance(text, str) else text
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    # a name of this writer's own (a second install-cni on the node has the same PID, 1, in its container),
    # created with O_EXCL (never one left by someone else, nor a link to one) and mode 0600 from its first
    # moment, `mode` set while it is still empty: a rotated token is never readable by others
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    staging = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    log(f"install-cni: wrote {path}")
    return True


def kubeconfig_text(*, server: str, ca: bytes, token: str, namespace: str) -> str:
    """The kubeconfig as JSON (a kubeconfig may be JSON): the plugin reads it without importing PyYAML, and
    whatever the token holds stays one JSON string."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca).decode()},
            }
        ],
        "users": [{"name": "whereabouts", "user": {"token": token}}],
        "contexts": [
            {"name": "whereabouts", "context": {"cluster": "local", "user": "whereabouts", "namespace": namespace}}
        ],
        "current-context": "whereabouts",
    }
    return json.dumps(doc, indent=2) + "\n"


class NodeFiles:
    """The files install-cni keeps in the host's `<conf dir>/whereabouts.d/`."""

    def __init__(self, conf_dir: Path, *, account_dir: Path, namespace: str, node: str, cron: str) -> None:
        self.dir = conf_dir / "whereabouts.d"
        self.account_dir, self.node, self.cron = account_dir, node, cron
        self.namespace = namespace or _read(account_dir / "namespace").strip() or DEFAULT_NAMESPACE

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "whereabouts.kubeconfig"

    @property
    def flat_file(self) -> Path:
        return self.dir / FLAT_FILE_NAME

    def make_dir(self) -> None:
        """The directory, made if missing; a symbolic link there is refused (refuse_link)."""
        refuse_link(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def write_all(self) -> None:
        self.make_dir()
        flat = {
            "datastore": "kubernetes",
            "configuration_path": str(self.dir),
            "kubernetes": {"kubeconfig": str(self.kubeconfig)},
            "reconciler_cron_expression": self.cron,
        }
        _write_atomically(self.flat_file, json.dumps(flat, indent=2) + "\n")
        _write_atomically(self.dir / "nodename", self.node + "\n")
        self.refresh_kubeconfig()
        _remove_stale([*staging_names(self.flat_file), *staging_names(self.dir / "nodename"),
                       *staging_names(self.kubeconfig)], log_line)  # fmt: skip

    def refresh_kubeconfig(self) -> bool:
        """Rewrite the kubeconfig if the token, the CA or the server changed; True if it did."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise SystemExit("install-cni: KUBERNETES_SERVICE_HOST is not set (not running in a pod?)")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        token = _read(self.account_dir / "token").strip()
        ca = (self.account_dir / "ca.crt").read_bytes()
        text = kubeconfig_text(server=server, ca=ca, token=token, namespace=self.namespace)
        return _write_atomically(self.kubeconfig, text, mode=0o600)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _switch(name: str) -> bool:
    """The true/false setting in environment variable `name` (unset or empty: false); exits on anything else
    rather than take a misspelt `true` for false."""
    value = os.environ.get(name, "")
    try:
        return SWITCHES[value.strip().lower() or "0"]
    except KeyError:
        raise SystemExit(f"install-cni: {name}={value!r} is neither true nor false "
                         "(1/0, true/false, yes/no, on/off, in any case)") from None  # fmt: skip


def _seconds(name: str, default: int) -> int:
    """The whole number of seconds in environment variable `name` (unset or empty: `default`); exits on
    anything else, naming it."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not (value.isascii() and value.isdigit()):
        raise SystemExit(f"install-cni: {name}={value!r} is not a whole number of seconds")
    return int(value)


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="whereabouts-install-cni", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path(env("WHEREABOUTS_BUNDLE", "/opt/whereabouts/bundle")))
    p.add_argument("--cni-bin-dir", type=Path, default=Path(env("CNI_BIN_DIR", "/opt/cni/bin")))
    p.add_argument("--cni-conf-dir", type=Path, default=Path(env("CNI_CONF_DIR", "/etc/cni/net.d")))
    p.add_argument("--service-account-dir", type=Path, default=Path(SERVICE_ACCOUNT_DIR))
    p.add_argument("--namespace", default=env("WHEREABOUTS_NAMESPACE", ""), help="default: this pod's")
    p.add_argument("--node", default=env("NODENAME", "") or socket.gethostname())
    p.add_argument("--cron-expression", default=env("WHEREABOUTS_RECONCILER_CRON", "30 4 * * *"))
    p.add_argument("--socket", default=env("WHEREABOUTS_SOCKET", "/run/whereabouts/plugin.sock"))
    p.add_argument("--no-node-daemon", action="store_true", help="the plugin then serves every call itself")
    p.add_argument("--stand-in", type=int, default=_seconds("WHEREABOUTS_STANDIN", 60), metavar="SECONDS",
                   help="while the node daemon is not there, the plugin starts a stand-in daemon that serves until "
                   "it has had no call for this long or the node daemon is back (0: none, calls are served in "
                   "process); also WHEREABOUTS_STANDIN")  # fmt: skip
    p.add_argument("--no-pod-cleanup", action="store_true")
    p.add_argument("--health-address", default="127.0.0.1")
    p.add_argument("--health-port", type=int, default=int(env("WHEREABOUTS_HEALTH_PORT", "9146")))
    p.add_argument("--metrics-address", default=env("WHEREABOUTS_METRICS_ADDRESS", ""),
                   help="serve /metrics for Prometheus on this address too (the DaemonSet: the pod's IP); "
                   "default: only on the health endpoint")  # fmt: skip
    p.add_argument("--metrics-port", type=int, default=int(env("WHEREABOUTS_METRICS_PORT") or 9147),
                   help="with --metrics-address (0: a free port, logged)")  # fmt: skip
    p.add_argument("--refresh", type=float, default=5.0, help="seconds between token and CA checks")
    p.add_argument("--once", action="store_true", help="install and write the files, then exit")
    p.add_argument("--data-dir", type=Path, default=Path(DEFAULT_LOCAL_DATA_DIR), help="the plugin's local data dir")
    p.add_argument("--uninstall", action="store_true", default=_switch("WHEREABOUTS_UNINSTALL"),
                   help="remove what install-cni and the plugin put on the node (docs/install.md), then stay idle "
                   "(with --once: exit); also WHEREABOUTS_UNINSTALL=true")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.uninstall:
        from whereabouts.node.uninstall import uninstall

        uninstall(bin_dir=args.cni_bin_dir, conf_dir=args.cni_conf_dir, socket=Path(args.socket),
                  data_dir=args.data_dir, log=log_line)  # fmt: skip
        log_line(f"install-cni: node {args.node}: uninstalled; nothing runs here any more")
        return 0 if args.once else _idle(args)
    files = NodeFiles(args.cni_conf_dir, account_dir=args.service_account_dir, namespace=args.namespace,
                      node=args.node, cron=args.cron_expression)  # fmt: skip
    files.make_dir()  # a link there refused before anything is installed
    # the plugin looks for the daemon where it listens, or (--no-node-daemon) never looks
    socket_path = "" if args.no_node_daemon else args.socket
    install_bundle(args.bundle, args.cni_bin_dir, flat_file=files.flat_file, socket_path=socket_path,
                   stand_in=args.stand_in)  # fmt: skip
    files.write_all()
    if args.once:
        return 0
    return NodeAgent(args, files).run()


def _idle(args: argparse.Namespace) -> int:
    """After an uninstall: stay, healthy and ready, until stopped (a DaemonSet's pod that exits is restarted)."""
    stop, health = threading.Event(), Health()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = serve(args.health_address, args.health_port, Registry(), health)
    health.ready.set()
    stop.wait()
    server.shutdown()
    return 0


class NodeAgent:
    """The long-running part: kubeconfig refresh, pod cleanup for this node, the node daemon, health."""

    def __init__(self, args: argparse.Namespace, files: NodeFiles) -> None:
        self.args, self.files = args, files
        self.stop = threading.Event()
        self.health, self.registry = Health(), Registry()
        self.ctx: Context | None = None

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        server = serve(self.args.health_address, self.args.health_port, self.registry, self.health)
        log_line(f"install-cni: node {self.args.node}: health on {self.args.health_address}:{server.server_address[1]}")
        servers = [server, *self._metrics_endpoint()]
        threads = [threading.Thread(target=self._refresh_loop, name="refresh", daemon=True)]
        if not self.args.no_pod_cleanup:
            threads.append(threading.Thread(target=self._pod_cleanup, name="pod-cleanup", daemon=True))
        daemon = None if self.args.no_node_daemon else self._start_daemon()
        for thread in threads:
            thread.start()
        self.health.ready.set()
        self.stop.wait()
        if daemon is not None:
            daemon.shutdown()
            daemon.server_close()  # removes the socket: the plugin serves calls itself from now on
        for endpoint in servers:
            endpoint.shutdown()
        return 0

    def _metrics_endpoint(self) -> list[ThreadingHTTPServer]:
        """/metrics for Prometheus on --metrics-address, if given. A port taken there is said and left: the
        node's plugin must not wait on a metrics port (the health endpoint serves /metrics all the same)."""
        address, port = self.args.metrics_address, self.args.metrics_port
        if not address:
            return []
        try:
            endpoint = serve(address, port, self.registry, self.health)
        except OSError as exc:
            log_line(f"install-cni: node {self.args.node}: cannot serve metrics on {address}:{port}: {exc}")
            return []
        log_line(f"install-cni: node {self.args.node}: metrics on {address}:{endpoint.server_address[1]}")
        return [endpoint]

    def _refresh_loop(self) -> None:
        while not self.stop.is_set():
            self.health.beat("refresh", allowance=max(60.0, 10 * self.args.refresh))
            try:
                if self.files.refresh_kubeconfig():
                    log_line("install-cni: service-account token or CA changed: kubeconfig rewritten")
                    if self.ctx is not None:
                        self.ctx.credentials = load_credentials("")
            except OSError as exc:
                log_line(f"install-cni: cannot refresh the kubeconfig: {exc}")
            self.stop.wait(self.args.refresh)

    def _pod_cleanup(self) -> None:
        from whereabouts.controller.podcleanup import PodCleanup

        backoff, started = Backoff(), time.monotonic()
        while not self.stop.is_set():
            self.health.beat("pod-cleanup", allowance=300.0)
            try:
                if self.ctx is None:
                    credentials = load_credentials("")
                    namespace = self.files.namespace
                    self.ctx = Context(credentials, namespace, registry=self.registry, health=self.health,
                                       identity=f"install-cni-{self.args.node}")  # fmt: skip
                started = time.monotonic()
                PodCleanup(self.ctx, node=self.args.node).run(self.stop)
            except WhereaboutsError as exc:  # said once (log, /readyz) until a sweep works again
                self.health.failing("pod-cleanup", exc, log_line)
                if time.monotonic() - started > STEADY:
                    backoff.reset()  # it had been working: a new trouble
                backoff.wait(self.stop)

    def _start_daemon(self) -> NodeDaemon:
        from whereabouts.node.daemon import start_serving

        daemon = start_serving(self.args.socket, registry=self.registry)  # its metrics beside pod cleanup's
        threading.Thread(target=daemon.serve_forever, kwargs={"poll_interval": 0.5}, name="node-daemon",
                         daemon=True).start()  # fmt: skip
        log_line(f"install-cni: node daemon serving the plugin's calls on {self.args.socket}")
        threading.Thread(target=self._warm, args=(daemon,), name="warm-store", daemon=True).start()
        return daemon

    def _warm(self, daemon: NodeDaemon) -> None:
        """Open the flat file's datastore now rather than at the first call: on Kubernetes its watch-fed copy
        then writes the pool entries a daemon killed before had not written yet (store.kubecache), even if no
        call for their pools comes."""
        from whereabouts.config import named_store

        try:
            settings = named_store(json.loads(self.files.flat_file.read_text()))
            if settings is not None and daemon.runtime.stores is not None:
                daemon.runtime.stores.warm(settings)
        except Exception as exc:  # the first call opens it then, and says what is wrong
            log_line(f"install-cni: the datastore not opened ahead of calls: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
