"""Build a docker-archive image tar (what `docker save` writes) from a root directory: no registry, no engine.

The archive holds `manifest.json` (with `RepoTags`), the image config JSON (`rootfs.diff_ids` = the sha256 of
the layer, `Entrypoint`/`Cmd`/`Env`/`WorkingDir`) and one `<sha256>/layer.tar` of the whole root. containerd
loads it with `ctr -n k8s.io image import X.tar`; Docker with `docker load -i X.tar`.

Deterministic: the same root gives the same bytes (entries sorted, mtimes fixed, uid/gid 0, no user names), so
the image id only changes when a file does. The contents of /proc, /sys and /dev are left out (the runtime
mounts its own), and so are sockets, which a tar cannot hold.

    python3 scripts/oci_archive.py --root DIR --tag NAME:TAG --out X.tar [--entrypoint '["/pause"]'] \
        [--cmd 'sleep 3600'] [--env K=V ...] [--workdir /]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shlex
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

EPOCH = 0  # every mtime in the layer and the archive
CREATED = "1970-01-01T00:00:00Z"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EMPTIED = ("proc", "sys", "dev")  # top-level dirs kept, their contents left out
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def walk(root: Path, directory: Path | None = None) -> Iterator[Path]:
    """Every path under `root` (not `root` itself), parents before children, siblings sorted by name."""
    directory = directory or root
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False) and not (directory == root and entry.name in EMPTIED):
            yield from walk(root, path)


def normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer(root: Path, out: Path) -> str:
    """Write `root` as a layer tar to `out`; returns its sha256 (hex), the image's diff_id."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in walk(root):
            if stat.S_ISSOCK(path.lstat().st_mode):
                continue
            info = normalized(tar.gettarinfo(str(path), arcname=str(path.relative_to(root))))
            if info.isreg():
                with open(path, "rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    return sha256_file(out)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_config(
    diff_id: str, *, entrypoint: Sequence[str], cmd: Sequence[str], env: Sequence[str], workdir: str
) -> bytes:
    """The image config JSON (OCI / Docker image spec v1), with sorted keys so its digest is stable."""
    if not any(item.startswith("PATH=") for item in env):
        env = [DEFAULT_PATH, *env]
    config: dict[str, object] = {"Env": list(env), "WorkingDir": workdir}
    if entrypoint:
        config["Entrypoint"] = list(entrypoint)
    if cmd:
        config["Cmd"] = list(cmd)
    document = {
        "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()),
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": CREATED, "created_by": "scripts/oci_archive.py"}],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = normalized(tarfile.TarInfo(name))
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def build_archive(
    root: Path,
    tags: Sequence[str],
    out: Path,
    *,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Sequence[str] = (),
    workdir: str = "/",
) -> str:
    """Write the docker-archive of `root` tagged `tags` to `out` (atomically); returns the image id (sha256 hex)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as work:
        layer = Path(work) / "layer.tar"
        diff_id = write_layer(root, layer)
        config = image_config(diff_id, entrypoint=entrypoint, cmd=cmd, env=env, workdir=workdir)
        image_id = hashlib.sha256(config).hexdigest()
        manifest = [{"Config": f"{image_id}.json", "RepoTags": list(tags), "Layers": [f"{diff_id}/layer.tar"]}]
        partial = Path(work) / "image.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            dir_info = normalized(tarfile.TarInfo(diff_id))
            dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(dir_info)
            add_bytes(tar, f"{diff_id}/VERSION", b"1.0")
            with open(layer, "rb") as data:
                info = normalized(tar.gettarinfo(str(layer), arcname=f"{diff_id}/layer.tar"))
                info.mode = 0o644
                tar.addfile(info, data)
            add_bytes(tar, f"{image_id}.json", config)
            add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        os.replace(partial, out)
    return image_id


def argv_list(value: str) -> list[str]:
    """A JSON array (`'["/pause"]'`) or a shell-style string (`'sleep 3600'`)."""
    return json.loads(value) if value.lstrip().startswith("[") else shlex.split(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the image's root filesystem directory")
    parser.add_argument("--tag", action="append", required=True, help="NAME:TAG (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="the docker-archive tar to write")
    parser.add_argument("--entrypoint", type=argv_list, default=[], help="JSON array or shell-style words")
    parser.add_argument("--cmd", type=argv_list, default=[], help="JSON array or shell-style words")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="repeatable")
    parser.add_argument("--workdir", default="/")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a directory")
    image_id = build_archive(
        args.root, args.tag, args.out, entrypoint=args.entrypoint, cmd=args.cmd, env=args.env, workdir=args.workdir
    )
    print(f"sha256:{image_id} {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
