"""scripts/build-image.sh needs only what the image contains (and the build host's gcc, for the compiled
relay), and names the image as deploy/base does.

Run in a cache of its own holding only the image root (scripts/image-root.sh's, linked from the machine's cache),
with the tools a container runtime or the test node needs (apt-get, dpkg-query, containerd, ctr, runc,
debootstrap) replaced by stand-ins that note their call and fail: the build must call none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from kube_server import REPO

pytestmark = [pytest.mark.realnode, pytest.mark.skipif(os.geteuid() != 0, reason="the image build needs root")]

FORBIDDEN = ("apt-get", "apt", "dpkg-query", "containerd", "ctr", "runc", "debootstrap")


def base_images() -> set[str]:
    docs = [yaml.safe_load((REPO / "deploy/base" / name).read_text()) for name in ("daemonset.yaml", "deployment.yaml")]
    return {c["image"] for doc in docs for c in doc["spec"]["template"]["spec"]["containers"]}


def test_the_image_build_uses_only_the_image_root_and_tags_the_name_the_base_uses(tmp_path: Path) -> None:
    root_tar = Path(subprocess.run(["bash", str(REPO / "scripts/image-root.sh")], check=True, capture_output=True,
                                   text=True).stdout.strip())  # fmt: skip
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    os.link(root_tar, cache / "images" / root_tar.name)
    shims, calls = tmp_path / "shims", tmp_path / "calls"
    shims.mkdir()
    for name in FORBIDDEN:
        (shims / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit 1\n')
        (shims / name).chmod(0o755)
    env = {**os.environ, "WHEREABOUTS_CACHE": str(cache), "PATH": f"{shims}:{os.environ['PATH']}"}
    started = time.monotonic()
    built = subprocess.run(["bash", str(REPO / "scripts/build-image.sh")], env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    took = time.monotonic() - started
    assert built.returncode == 0, built.stderr[-2000:]
    assert not calls.exists(), calls.read_text()
    assert "no compiled relay" not in built.stderr, built.stderr  # gcc is there (scripts/setup.sh): the bundle has it
    tar = Path(built.stdout.strip().splitlines()[-1])
    print(f"\nbuild-image.sh with the root cached: {took:.1f} s")
    assert sorted(p.name for p in (cache / "images").iterdir()) == sorted([root_tar.name, tar.name])
    with tarfile.open(tar) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    tags = manifest[0]["RepoTags"]
    assert base_images() <= set(tags), (base_images(), tags)
    assert tags[0] == f"localhost/whereabouts:{tar.stem.removeprefix('whereabouts-')}"
