#!/usr/bin/env bash
# The root filesystem of the whereabouts image, cached: a plain tar (not an image) of a
# `debootstrap --variant=minbase bookworm` root with Debian's python3 (3.11), python3-yaml, python3-croniter (the
# controller's schedule), python3-prometheus-client (its metrics) and patchelf (install-cni relocates the bundled interpreter with it). Prints its path:
#   /var/cache/whereabouts-py/images/bookworm-python3-4.tar
# scripts/build-image.sh adds the project to a copy of it; scripts/node-tools.sh (the test node) uses it too.
# Needs a Debian machine and root: it installs `debootstrap` if missing and downloads the packages from the archive
# this machine's apt uses. About a minute, once; a later run finds the tar and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES=${WHEREABOUTS_CACHE:-/var/cache/whereabouts-py}/images
PYTHON_ROOT=bookworm-python3-4.tar  # the number names the recipe: change it when the recipe changes
log() { echo "image-root: $*" >&2; }

if [ -f "$IMAGES/$PYTHON_ROOT" ]; then
    echo "$IMAGES/$PYTHON_ROOT"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "building the image root needs root (debootstrap); run as root once"
    exit 1
fi
if ! dpkg-query -W -f='${Status}' debootstrap 2>/dev/null | grep -q "install ok installed"; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
mkdir -p "$IMAGES"
WORK=$(mktemp -d /var/tmp/image-root.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# The archive this machine's apt uses for bookworm (deb822 .sources first, then a one-line sources.list).
mirror() {
    local uri
    uri=$(awk '
        function flush() { if (deb && suite && uri != "") { print uri; found = 1; exit } deb = suite = 0; uri = "" }
        FNR == 1 { flush() }
        /^[[:space:]]*$/ { flush(); next }
        /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
        END { if (!found) flush() }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

started=$SECONDS
root=$WORK/root
url=$(mirror)
log "debootstrap --variant=minbase bookworm with python3 from $url (about a minute)"
debootstrap --variant=minbase --include=python3,python3-yaml,python3-croniter,python3-prometheus-client,patchelf bookworm "$root" "$url" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
# what an image needs none of: apt's caches and lists, docs, man pages, logs
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
tar --numeric-owner --sort=name --mtime=@0 --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -C "$root" -cf "$WORK/root.tar" .
mv "$WORK/root.tar" "$IMAGES/$PYTHON_ROOT"
log "built $PYTHON_ROOT in $((SECONDS - started)) s"
echo "$IMAGES/$PYTHON_ROOT"
