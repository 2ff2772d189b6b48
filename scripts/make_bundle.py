"""Build the self-contained plugin bundle that install-cni copies onto each node's host.

The container runtime executes `/opt/cni/bin/whereabouts` on the host, where Python may be missing or another
version. The bundle is a relocatable CPython: the image root's own interpreter (Debian's python3.11) with
its standard library, the project and its dependencies (PyYAML; prometheus_client, which the stand-in daemon
the plugin starts on the host keeps its metrics with), and every shared library they load, the dynamic
loader and libc included, so nothing is taken from the host. install-cni then points the interpreter's
ELF loader and library path at where the bundle lands on the host (patchelf) and writes the `whereabouts`
launcher: a plain script whose first line runs the bundled interpreter with `-IS` (no site, no user paths).
Start-up is that of a plain CPython install; a frozen build (PyInstaller) measured 75% slower per call here.
With `--relay`, the bundle also carries the compiled relay (scripts/build-relay.sh) as bin/whereabouts-relay:
install-cni then makes it the `whereabouts` executable and the launcher `whereabouts-python`. The bundle's
hash (its VERSION) covers every file, the relay included.

Usage (as root: it runs the root's interpreter in a chroot to precompile):
    python3 scripts/make_bundle.py ROOT OUT [--relay PATH]   # ROOT: an image root with python3.11; OUT: inside ROOT
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

PYTHON = "python3.11"
LIBDIR = "lib/x86_64-linux-gnu"
# Standard library parts a CNI call and the controllers never use.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils",
               "unittest", "venv", "config-3.11-x86_64-linux-gnu", "dist-packages", "site-packages"}  # fmt: skip
RELAY = "whereabouts-relay"  # whereabouts.node.relay.RELAY
# Debian's packages in the root that the bundle carries: PyYAML (configs), and prometheus_client for the node
# daemon the plugin starts on the host as a stand-in while the DaemonSet's is not there (whereabouts.cni.main)
# (and `decorator`, a module prometheus_client 0.16 imports)
DIST_PACKAGES = ("yaml", "_yaml", "prometheus_client", "decorator")
REPO = Path(__file__).resolve().parent.parent


def build(root: Path, out: Path, relay: Path | None = None) -> str:
    """Assemble the bundle at `out` (a path inside `root`), with the compiled `relay` if given; returns its
    content hash."""
    if out.exists():
        shutil.rmtree(out)
    (out / "bin").mkdir(parents=True)
    shutil.copy2(root / "usr/bin" / PYTHON, out / "bin" / PYTHON)
    if relay is not None:
        shutil.copy2(relay, out / "bin" / RELAY)
    stdlib = out / "lib" / PYTHON
    shutil.copytree(root / "usr/lib" / PYTHON, stdlib, ignore=_skip_stdlib, symlinks=False)
    shutil.copytree(REPO / "src/whereabouts", stdlib / "whereabouts", ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "usr/lib/python3/dist-packages"
    for name in DIST_PACKAGES:
        if (dist / name).is_dir():
            shutil.copytree(dist / name, stdlib / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (dist / f"{name}.py").is_file():
            shutil.copy2(dist / f"{name}.py", stdlib / f"{name}.py")
    _copy_libraries(root, out)
    _precompile(root, out)
    digest = _digest(out)
    (out / "VERSION").write_text(digest + "\n")
    return digest


def _skip_stdlib(directory: str, names: list[str]) -> set[str]:
    top = directory.rstrip("/").endswith(f"lib/{PYTHON}")
    return {n for n in names if (top and n in STDLIB_SKIP) or n == "__pycache__"}


def _copy_libraries(root: Path, out: Path) -> None:
    """The dynamic loader and the closure of shared libraries the interpreter and its extension modules
    need, resolved inside the root."""
    (out / LIBDIR).mkdir(parents=True)
    wanted = {"ld-linux-x86-64.so.2"}
    objects = [out / "bin" / PYTHON, *sorted((out / "lib" / PYTHON).rglob("*.so"))]
    for obj in objects:
        wanted |= _needed(root, obj)
    pending = sorted(wanted)
    while pending:
        name = pending.pop()
        found = _find(root, name)
        target = out / LIBDIR / name
        if target.exists():
            continue
        shutil.copy2(found, target)  # follows symlinks: the real file under the soname
        for dep in sorted(_needed(root, target) - wanted):
            wanted.add(dep)
            pending.append(dep)


def _needed(root: Path, obj: Path) -> set[str]:
    text = subprocess.run(["readelf", "-d", str(obj)], capture_output=True, text=True, check=False).stdout
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", text))


def _find(root: Path, name: str) -> Path:
    for directory in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib"):
        candidate = root / directory / name
        if candidate.exists():
            return candidate.resolve() if not candidate.is_symlink() else root / _inside(root, candidate)
    raise FileNotFoundError(f"{name} is not in {root}")


def _inside(root: Path, link: Path) -> Path:
    """Resolve a symlink within `root` (absolute targets are relative to the root, not the host)."""
    target = Path(os.readlink(link))
    resolved = (link.parent / target) if not target.is_absolute() else root / target.relative_to("/")
    return resolved.relative_to(root) if not resolved.is_symlink() else _inside(root, resolved)


def _precompile(root: Path, out: Path) -> None:
    inside = "/" + str(out.relative_to(root))
    cmd = ["chroot", str(root), f"/usr/bin/{PYTHON}", "-IS", "-m", "compileall", "-q",
           f"{inside}/lib/{PYTHON}"]  # fmt: skip
    subprocess.run(cmd, check=True)


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != "VERSION":
            h.update(str(path.relative_to(out)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--relay", type=Path, help="the compiled relay to carry (scripts/build-relay.sh)")
    args = parser.parse_args()
    print(build(args.root.resolve(), args.out.resolve(), args.relay))


if __name__ == "__main__":
    main()
