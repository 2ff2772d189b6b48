#!/usr/bin/env bash
# What a real single-node Kubernetes needs on this machine (see ../shared/REALNODE.md), for tests/realnode:
# the Debian packages (containerd, runc, the reference CNI plugins, busybox-static, gcc), and, built once and
# cached in /var/cache/whereabouts-py/images/ with no image registry and no Docker engine:
#   pause-3.2.tar         docker-archive of k8s.gcr.io/pause:3.2: Kubernetes' own build/pause/linux/pause.c
#                         (from Debian's `kubernetes` source package) compiled `gcc -static`, its only file
#   busybox.tar           docker-archive of localhost/busybox:test: busybox-static and a symlink per applet
#   bookworm-python3-4.tar  the whereabouts image's root (scripts/image-root.sh, which build-image.sh uses alone):
#                         extract a copy (`tar -xpf ... -C DIR`), add to it, and build an image of it with
#                         `python3 scripts/oci_archive.py --root DIR --tag NAME:TAG --out X.tar`
# Idempotent, run as root: a later run finds everything and returns at once. Prints the images directory.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES=${WHEREABOUTS_CACHE:-/var/cache/whereabouts-py}/images
PACKAGES=(containerd runc containernetworking-plugins busybox-static gcc libc6-dev iproute2 iputils-ping mount
          util-linux tar)
log() { echo "node-tools: $*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ] && [ -f "$IMAGES/pause-3.2.tar" ] && [ -f "$IMAGES/busybox.tar" ]; then
    bash scripts/image-root.sh >/dev/null
    echo "$IMAGES"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "node-tools: installing packages and building the node's images needs root; run as root once" >&2
    exit 1
fi
mkdir -p "$IMAGES"
WORK=$(mktemp -d /var/tmp/node-tools.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_pause() {
    local started=$SECONDS
    # Debian's source packages: the same archive as the machine's binary packages, as deb-src (as kube-tools.sh).
    local src_list=/etc/apt/sources.list.d/whereabouts-deb-src.sources
    if [ ! -f "$src_list" ] && [ ! -f "${src_list%.sources}.list" ]; then
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$src_list"
        else
            grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > "${src_list%.sources}.list"
        fi
        apt-get update -qq
    fi
    mkdir -p "$WORK/pause/root"
    (cd "$WORK/pause" && apt-get source --download-only kubernetes >/dev/null 2>&1)
    tar -xzf "$WORK"/pause/kubernetes_*.orig.tar.gz -C "$WORK/pause" --wildcards --strip-components=4 \
        '*/build/pause/linux/pause.c'
    # the flags of build/pause/Makefile
    gcc -Os -Wall -Werror -static -DVERSION=v3.2-whereabouts-py -o "$WORK/pause/root/pause" "$WORK/pause/pause.c"
    strip "$WORK/pause/root/pause"
    python3 scripts/oci_archive.py --root "$WORK/pause/root" --tag k8s.gcr.io/pause:3.2 \
        --out "$IMAGES/pause-3.2.tar" --entrypoint '["/pause"]' >/dev/null
    log "built pause-3.2.tar in $((SECONDS - started)) s"
}

build_busybox() {
    local started=$SECONDS root=$WORK/busybox applet
    mkdir -p "$root/bin" "$root/etc" "$root/root"
    install -d -m 1777 "$root/tmp"
    install -m 0755 "$(dpkg -L busybox-static | grep '/busybox$' | head -1)" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list-full); do
        [ "$applet" = bin/busybox ] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -s /bin/busybox "$root/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    python3 scripts/oci_archive.py --root "$root" --tag localhost/busybox:test --out "$IMAGES/busybox.tar" \
        --cmd '["sh"]' >/dev/null
    log "built busybox.tar in $((SECONDS - started)) s"
}

[ -f "$IMAGES/pause-3.2.tar" ] || build_pause
[ -f "$IMAGES/busybox.tar" ] || build_busybox
bash scripts/image-root.sh >/dev/null
echo "$IMAGES"
