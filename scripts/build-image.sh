#!/usr/bin/env bash
# Build the whereabouts image as a docker-archive tar, with no registry and no Docker engine (run as root):
#   bash scripts/build-image.sh      # prints the tar: /var/cache/whereabouts-py/images/whereabouts-<hash>.tar
# The image is named twice: localhost/whereabouts:latest, the name deploy/base uses, and
# localhost/whereabouts:<hash of the inputs>, a name that changes with the content (for an overlay's `images:`).
# It is the Debian bookworm root of scripts/image-root.sh (python3 3.11, python3-yaml, python3-croniter, python3-prometheus-client,
# patchelf), plus the project in /usr/lib/python3/dist-packages, its commands in /usr/local/bin, and the
# self-contained plugin bundle in /opt/whereabouts/bundle (scripts/make_bundle.py) that install-cni copies onto
# each node. The same image as the Dockerfile builds, for users with a Docker engine. Load it with
# `ctr -n k8s.io image import X.tar` or `docker load -i X.tar`. Cached by the hash of its inputs.
# Needs a Debian machine, root, python3 and binutils (readelf; installed if missing); gcc and libc6-dev for the
# compiled relay (scripts/build-relay.sh; without them the bundle has none); no container runtime.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${WHEREABOUTS_CACHE:-/var/cache/whereabouts-py}/images
ROOT_TAR=$(bash scripts/image-root.sh)
# The compiled relay, with this machine's compiler (a second or so); without one, the bundle's plugin executable
# stays the Python relay. Its bytes are part of the inputs.
RELAY=$(mktemp /var/tmp/whereabouts-relay.XXXXXX)
WORK=""
trap 'rm -rf "$RELAY" "$WORK"' EXIT
if ! bash scripts/build-relay.sh "$RELAY" >/dev/null; then
    echo "build-image: the bundle carries no compiled relay: \`whereabouts\` on the nodes is the Python relay" >&2
    rm -f "$RELAY"
    RELAY=""
fi
inputs=$( (cd src && find whereabouts -type f \( -name '*.py' -o -name whereabouts -o -name '*.c' \) -print0 | sort -z | xargs -0 sha256sum;
           sha256sum ../scripts/make_bundle.py ../scripts/build-image.sh ../scripts/oci_archive.py;
           if [ -n "$RELAY" ]; then sha256sum <"$RELAY"; else echo "no relay"; fi;
           basename "$ROOT_TAR") | sha256sum | cut -c1-12)
TAG=localhost/whereabouts:$inputs
OUT=$CACHE/whereabouts-$inputs.tar
if [ -f "$OUT" ]; then
    echo "build-image: $OUT (cached): localhost/whereabouts:latest and $TAG" >&2
    echo "$OUT"
    exit 0
fi
if ! command -v readelf >/dev/null; then  # make_bundle.py finds the libraries the interpreter loads with it
    echo "build-image: installing binutils (readelf)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null
fi
mkdir -p "$CACHE"
WORK=$(mktemp -d /var/tmp/whereabouts-image.XXXXXX)
root=$WORK/root
mkdir -p "$root"
tar -xpf "$ROOT_TAR" -C "$root"
cp -r src/whereabouts "$root/usr/lib/python3/dist-packages/whereabouts"
find "$root/usr/lib/python3/dist-packages/whereabouts" -name __pycache__ -prune -exec rm -rf {} +
chroot "$root" /usr/bin/python3 -m whereabouts.node.launcher /usr/local/bin --python /usr/bin/python3 >/dev/null
chroot "$root" /usr/bin/python3 -m compileall -q /usr/lib/python3/dist-packages/whereabouts
python3 scripts/make_bundle.py "$root" "$root/opt/whereabouts/bundle" ${RELAY:+--relay "$RELAY"} >/dev/null
python3 scripts/oci_archive.py --root "$root" --tag "$TAG" --tag localhost/whereabouts:latest \
    --out "$WORK/image.tar" --cmd '["whereabouts-install-cni"]' >/dev/null
mv "$WORK/image.tar" "$OUT"
echo "build-image: built $OUT: localhost/whereabouts:latest and $TAG" >&2
echo "$OUT"
