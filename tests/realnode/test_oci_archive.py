"""scripts/oci_archive.py: a docker-archive from a root dir, byte-for-byte reproducible, in the layout loaders read."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from kube_server import REPO


@pytest.fixture(scope="module")
def oci() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oci_archive", REPO / "scripts" / "oci_archive.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_root(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    os.link(root / "bin" / "tool", root / "bin" / "tool-again")
    (root / "bin" / "sh").symlink_to("/bin/tool")
    (root / "proc" / "self").mkdir(parents=True)  # the runtime's: kept empty in the image
    (root / "etc").mkdir()
    (root / "etc" / "zz").write_text("z")
    (root / "etc" / "aa").write_text("a")
    return root


def members(tar_path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return {info.name: info for info in tar.getmembers()}


def read_member(tar_path: Path, name: str) -> bytes:
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def test_archive_layout_and_config(oci: ModuleType, tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    out = tmp_path / "image.tar"
    image_id = oci.main(["--root", str(root), "--tag", "localhost/t:1", "--out", str(out),
                         "--entrypoint", '["/bin/tool"]', "--cmd", "a b", "--env", "K=V"])  # fmt: skip
    assert image_id == 0
    [entry] = json.loads(read_member(out, "manifest.json"))
    config = json.loads(read_member(out, entry["Config"]))
    layer = read_member(out, entry["Layers"][0])
    assert entry["RepoTags"] == ["localhost/t:1"]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]}
    assert (
        entry["Config"]
        == hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest() + ".json"
    )
    assert config["config"]["Entrypoint"] == ["/bin/tool"] and config["config"]["Cmd"] == ["a", "b"]
    assert config["config"]["Env"][1:] == ["K=V"] and config["config"]["Env"][0].startswith("PATH=")
    (tmp_path / "layer.tar").write_bytes(layer)
    files = members(tmp_path / "layer.tar")
    assert list(files) == ["bin", "bin/sh", "bin/tool", "bin/tool-again", "etc", "etc/aa", "etc/zz", "proc"]
    assert files["bin/sh"].issym() and files["bin/sh"].linkname == "/bin/tool"
    assert files["bin/tool-again"].islnk() and files["bin/tool-again"].linkname == "bin/tool"
    assert files["bin/tool"].mode == 0o755
    assert all((i.uid, i.gid, i.mtime, i.uname) == (0, 0, 0, "") for i in files.values())


def test_same_root_same_bytes(oci: ModuleType, tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    first = oci.build_archive(root, ["x:1"], tmp_path / "a.tar", cmd=["sh"])
    os.utime(root / "etc" / "aa", (1e9, 1e9))  # mtimes and inode order do not count
    second = oci.build_archive(root, ["x:1"], tmp_path / "b.tar", cmd=["sh"])
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
